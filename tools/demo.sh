#!/usr/bin/env bash
# make demo: the whole pipeline at CPU scale, on generated data unless DATA is given.
#   synthetic data -> MoCo v2 pretraining -> Faster R-CNN fine-tuning from it -> COCO eval,
#   plus the same fine-tuning from a random backbone, for comparison (SKIP_SCRATCH=1 skips it),
#   then pictures: the detector's predictions on 4 validation images and the training curves.
# DATA=DIR runs the chain on a real folder holding unlabeled/ (a folder, or a squashfs image:
# unlabeled.sqsh) and labeled/ (the course layout, or COCO: labeled/annotations/
# instances_{training,validation}.json with the images in labeled/{training,validation}/).
# A rerun continues an interrupted training and skips finished ones (train.py --resume refuses a
# folder trained from other inputs); remove $OUT to train everything again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data/synthetic}
OUT=${OUT:-work_dirs/demo}
MOCO_CFG=configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py
DET_CFG=configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py
SCRATCH_CFG=configs/faster_rcnn/faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py
t0=$SECONDS
step() { echo; echo "=== [$(( (SECONDS - t0) / 60 ))m$(( (SECONDS - t0) % 60 ))s] $*"; }
last_ckpt() { cat "$1/last_checkpoint"; }

if [[ ! -d "$DATA/labeled" ]]; then
    [[ "$DATA" == data/synthetic ]] || { echo "DATA=$DATA has no labeled/ folder" >&2; exit 1; }
    step "generating the synthetic dataset in $DATA"
    "$PYTHON" tools/make_synthetic_data.py --out "$DATA" --num-unlabeled 256 --num-train 160 \
        --num-val 64
fi
"$PYTHON" tools/check_dataset.py "$DATA/labeled" | tail -n 3
# the unlabeled set as a folder, or as a squashfs image read as it is (unlabeled.sqsh, or a file
# named unlabeled)
UNLABELED=$DATA/unlabeled
[[ -e $UNLABELED || ! -f $DATA/unlabeled.sqsh ]] || UNLABELED=$DATA/unlabeled.sqsh

step "1/3 MoCo v2 pretraining ($MOCO_CFG)"
"$PYTHON" tools/train.py "$MOCO_CFG" --data-root "$UNLABELED" --work-dir "$OUT/mocov2" --resume
MOCO_CKPT=$(last_ckpt "$OUT/mocov2")

step "2/3 Faster R-CNN fine-tuning from $MOCO_CKPT"
"$PYTHON" tools/train.py "$DET_CFG" --data-root "$DATA/labeled" --pretrained "$MOCO_CKPT" \
    --work-dir "$OUT/frcnn_mocov2" --resume
if [[ "${SKIP_SCRATCH:-0}" != 1 ]]; then
    step "2b/3 the same fine-tuning from a random backbone (baseline)"
    "$PYTHON" tools/train.py "$SCRATCH_CFG" --data-root "$DATA/labeled" \
        --work-dir "$OUT/frcnn_scratch" --resume
fi

step "3/3 COCO evaluation on $DATA/labeled validation"
# the numbers a README may quote come from this file, with the machine and date they came from
RESULTS=$OUT/results.txt
{ echo "make demo, $(date -u +%F), $(nproc) CPU cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), DATA=$DATA"; } > "$RESULTS"
if [[ "${SKIP_SCRATCH:-0}" != 1 ]]; then
    echo "--- random-init backbone:" | tee -a "$RESULTS"
    "$PYTHON" tools/test.py "$SCRATCH_CFG" "$(last_ckpt "$OUT/frcnn_scratch")" \
        --data-root "$DATA/labeled" --split validation --work-dir "$OUT/test_scratch" \
        2>&1 | grep -E "^ Average|^ AP as|^checkpoint" | tee -a "$RESULTS"
    echo "--- MoCo v2 backbone:" | tee -a "$RESULTS"
fi
"$PYTHON" tools/test.py "$DET_CFG" "$(last_ckpt "$OUT/frcnn_mocov2")" --data-root "$DATA/labeled" \
    --split validation --work-dir "$OUT/test_mocov2" --out "$OUT/test_mocov2/predictions.pkl" \
    2>&1 | grep -E "^ Average|^ AP as|^checkpoint|^dataset: |^logs|^predictions" | tee -a "$RESULTS"

step "pictures: the MoCo-init detector on 4 validation images, the fine-tuning curves"
PICS=$OUT/pictures
VAL_IMAGES=$DATA/labeled/validation/images
[[ -d $VAL_IMAGES ]] || VAL_IMAGES=$DATA/labeled/validation  # the COCO layout
"$PYTHON" tools/infer.py "$DET_CFG" "$(last_ckpt "$OUT/frcnn_mocov2")" \
    "$VAL_IMAGES" --num 4 --out-dir "$PICS/predictions" \
    --grid "$PICS/predictions.png"
RUNS=("$OUT/frcnn_mocov2") LABELS=("MoCo v2 init")
if [[ "${SKIP_SCRATCH:-0}" != 1 ]]; then
    RUNS+=("$OUT/frcnn_scratch") LABELS+=("random init")
fi
# the demo configs do not validate during training: no AP curve
"$PYTHON" tools/plot_curves.py "${RUNS[@]}" --labels "${LABELS[@]}" --keys loss lr \
    --out "$PICS/curves.png"
step "done in $(( (SECONDS - t0) / 60 )) min: checkpoints and logs under $OUT/, the AP summaries in $RESULTS"
echo "predictions drawn: $PICS/predictions.png (each image with its JSON in $PICS/predictions/)"
echo "training curves:   $PICS/curves.png"
