#!/usr/bin/env bash
# The seed's flow as chained jobs: MoCo v2 pretraining -> s1 -> s2 -> s3 -> test, each step
# starting only when the previous one succeeded (--dependency=afterok).
#   UNLABELED=/scratch/$USER/train/unlabeled LABELED=/labeled \
#   SBATCH_ARGS="-A ACCOUNT -p PARTITION" tools/slurm/submit_pipeline.sh
# Env: MOCO=PATH skips pretraining and fine-tunes from that checkpoint; PRETRAIN_GPUS (4),
# DET_GPUS (2), SBATCH_ARGS (account, partition, ...), DET_ARGS / MOCO_ARGS / TEST_ARGS (extra
# train.py / test.py args, e.g. "--cfg-options ..."), CONFIG_DIR (default: this repo's configs/).
# Run it from the folder where work_dirs/ should be (usually the repository root).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
export REPO
CONFIG_DIR=${CONFIG_DIR:-$REPO/configs}
LABELED=${LABELED:?set LABELED to the labeled dataset root}
PRETRAIN_GPUS=${PRETRAIN_GPUS:-4}
DET_GPUS=${DET_GPUS:-2}
SBATCH_ARGS=${SBATCH_ARGS:-}
MOCO_CFG=$CONFIG_DIR/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py
DET=$CONFIG_DIR/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2
mkdir -p work_dirs/slurm
# GRES= (empty) for a cluster without GPU gres (e.g. the tests' CPU cluster)
gres() { [[ -z "${GRES-x}" ]] && echo "--gres=none" || echo "--gres=${GRES:-gpu:$1}"; }
# shellcheck disable=SC2086  # SBATCH_ARGS, *_ARGS are option lists
submit() { sbatch --parsable $SBATCH_ARGS "$@"; }

dep=()
if [[ -z "${MOCO:-}" ]]; then
    UNLABELED=${UNLABELED:?set UNLABELED to the unlabeled PNG folder, or MOCO to a checkpoint}
    moco_job=$(submit --job-name=mocov2 --ntasks-per-node="$PRETRAIN_GPUS" "$(gres "$PRETRAIN_GPUS")" \
        "$REPO/tools/slurm/train.sbatch" "$MOCO_CFG" --data-root "$UNLABELED" ${MOCO_ARGS:-})
    echo "pretrain: job $moco_job"
    dep=(--dependency="afterok:$moco_job")
    MOCO=work_dirs/$(basename "$MOCO_CFG" .py)/keep_epoch_100.pth
fi
prev=("${dep[@]}")
for stage in s1-23e s2-27e s3-37e; do
    extra=()
    [[ $stage == s1-23e ]] && extra=(--pretrained "$MOCO")
    job=$(submit --job-name="det-${stage%%-*}" --ntasks-per-node="$DET_GPUS" "$(gres "$DET_GPUS")" \
        "${prev[@]}" "$REPO/tools/slurm/train.sbatch" "${DET}-${stage}_labeled.py" --data-root "$LABELED" \
        "${extra[@]}" ${DET_ARGS:-})
    echo "fine-tune $stage: job $job"
    prev=(--dependency="afterok:$job")
done
job=$(submit --job-name=det-test "$(gres 1)" "${prev[@]}" "$REPO/tools/slurm/test.sbatch" \
    "${DET}-s3-37e_labeled.py" "work_dirs/$(basename "${DET}-s3-37e_labeled")/epoch_37.pth" \
    --data-root "$LABELED" --split validation --batch-size 2 ${TEST_ARGS:-})
echo "test: job $job (summary in work_dirs/slurm/det-test-$job.out)"
