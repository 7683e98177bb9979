#!/usr/bin/env bash
# The seed's flow as chained jobs: MoCo v2 pretraining (stops at epoch 100 of its 200-epoch
# cosine schedule, as the seed did) -> s1 -> s2 -> s3 -> test, each step starting only when the
# previous one succeeded (--dependency=afterok; time-limit requeues are waited through).
#   UNLABELED=/data/unlabeled_224.sqsh LABELED=/labeled \
#   SBATCH_ARGS="-A ACCOUNT -p PARTITION" tools/slurm/submit_pipeline.sh
# Env: MOCO=PATH skips pretraining and fine-tunes from that checkpoint; PRETRAIN_GPUS (4),
# DET_GPUS (2), SBATCH_ARGS (account, partition, ...), DET_ARGS / MOCO_ARGS / TEST_ARGS (extra
# train.py / test.py args, e.g. "--cfg-options ..."), CONFIG_DIR (default: this repo's configs/).
# MOCO_EPOCHS="STOP TOTAL" (default "100 200") and DET_EPOCHS="S1 S2 S3" (default "23 27 37": the
# epochs where s1, s2, s3 end) shorten the schedules, e.g. for a rehearsal on a new cluster.
# PRETRAIN=densecl pretrains with DenseCL instead of MoCo v2 (same data, schedule and batch).
# RECIPE=ssl fine-tunes with the recipe for self-supervised backbones (SyncBN, 4conv1fc head,
# multi-scale, 8 images per GPU with --amp: configs/faster_rcnn/*syncbn-4conv1fc_2xb8-ms-36e*) as
# one job instead of the seed's s1 -> s2 -> s3; DET_EPOCHS does not apply to it.
# Logs: work_dirs/slurm/<job name>-<job id>.out. Run it from the folder where work_dirs/ should be.
# Before submitting anything it checks, in seconds, the inputs (LABELED's layout and a sample of
# its files, a PNG in UNLABELED, the MOCO file) and that the jobs' Python (PYTHON, else the repo's
# .venv, else python: as train.sbatch picks it) imports torch, mmengine, mmdet and mmpretrain;
# the first problem stops it with one "error: ..." line and exit status 2.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
export REPO
CONFIG_DIR=${CONFIG_DIR:-$REPO/configs}
die() { echo "error: $*" >&2; exit 2; }

# --- checks: a job that fails hours later in the queue costs far more than these seconds
LABELED=${LABELED:-}
[[ -n $LABELED ]] || die "set LABELED to the labeled dataset root (the folder with training/ and validation/)"
# a path through a squashfs image (unlabeled_224.sqsh, labeled.sqsh/...) is read as it is: the
# image and the layout inside it are checked by check_dataset.py --quick below
in_image() {
    local p=$1
    while [[ $p == */* && ! -e $p ]]; do p=${p%/*}; done
    [[ -f $p ]]
}
if ! in_image "$LABELED"; then
    [[ -d $LABELED ]] || die "LABELED=$LABELED is not a folder: set LABELED to the labeled dataset root (with training/ and validation/)"
    for split in training validation; do
        for sub in images labels; do
            [[ -d $LABELED/$split/$sub ]] || die "LABELED=$LABELED has no $split/$sub/ folder: expected" \
                "LABELED/{training,validation}/images/<id>.JPEG and .../labels/<id>.yml"
        done
    done
fi
if [[ -z "${MOCO:-}" ]]; then
    [[ -n "${UNLABELED:-}" ]] || die "set UNLABELED to the unlabeled PNG folder, or MOCO to a checkpoint"
    if ! in_image "$UNLABELED"; then
        [[ -d $UNLABELED ]] || die "UNLABELED=$UNLABELED is not a folder: set UNLABELED to the unlabeled PNG folder or .sqsh image, or MOCO to a checkpoint"
        # the first PNG found ends the search: the real folder holds 512,000 on a network filesystem
        [[ -n $(find "$UNLABELED" -maxdepth 2 -iname '*.png' -print -quit 2>/dev/null) ]] ||
            die "UNLABELED=$UNLABELED has no .png/.PNG file (searched two levels): set UNLABELED to the unlabeled PNG folder"
    fi
else
    [[ -f $MOCO && -r $MOCO ]] || die "MOCO=$MOCO is not a readable file: set MOCO to the MoCo checkpoint (.pth), or unset it to pretrain on UNLABELED"
fi
# the interpreter train.sbatch / test.sbatch would pick, exported so the jobs use exactly it
source "$REPO/tools/slurm/job_python.sh"
PY=$PYTHON
if [[ $PY != */* ]]; then
    PY=$(command -v "$PY") || die "PYTHON=$PYTHON: no such command: run make setup (creates $REPO/.venv) or set PYTHON to the environment's python"
elif [[ $PY != /* ]]; then
    PY=$PWD/$PY  # the jobs start in this folder too; absolute for the log lines
fi
# One Python start (imports take seconds, more on a network filesystem) checks the environment,
# then runs check_dataset.py --quick: the layout and the first files of each split (the full
# check reads all 50,000 yml: minutes). "imports ok" tells the two failures apart.
# shellcheck disable=SC2016  # Python code, not shell
probe='import sys
bad = []
for m in ("torch", "mmengine", "mmdet", "mmpretrain"):
    try:
        __import__(m)
    except Exception as e:
        bad.append("%s: %s: %s" % (m, type(e).__name__, (str(e).splitlines() or [""])[0]))
if bad:
    print("; ".join(bad))
    sys.exit(1)
print("imports ok")
import runpy
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")'
if ! out=$("$PY" -c "$probe" "$REPO/tools/check_dataset.py" "$LABELED" --quick \
        --split training --split validation 2>&1); then
    if ! grep -qx 'imports ok' <<<"$out"; then
        why=$(tail -n 1 <<<"$out")
        die "PYTHON=$PY cannot import torch, mmengine, mmdet and mmpretrain (${why:-it exits with an error}):" \
            "run make setup (creates $REPO/.venv) or set PYTHON to the environment's python"
    fi
    why=$(grep -m 1 -e '^ERROR: ' -e '^error: ' <<<"$out" | sed 's/^[A-Za-z]*: //' || true)
    [[ -n $why ]] || die "$PY $REPO/tools/check_dataset.py $LABELED --quick failed: $(tail -n 1 <<<"$out")"
    die "LABELED=$LABELED: $why (full report: $PY $REPO/tools/check_dataset.py $LABELED)"
fi
if [[ -z "${MOCO:-}" ]] && in_image "$UNLABELED" &&
        ! out=$("$PY" "$REPO/tools/check_dataset.py" "$UNLABELED" --quick 2>&1); then
    why=$(grep -m 1 -e '^ERROR: ' -e '^error: ' <<<"$out" | sed 's/^[A-Za-z]*: //' || true)
    die "UNLABELED=$UNLABELED: ${why:-$(tail -n 1 <<<"$out")}"
fi
export PYTHON=$PY

PRETRAIN_GPUS=${PRETRAIN_GPUS:-4}
DET_GPUS=${DET_GPUS:-2}
SBATCH_ARGS=${SBATCH_ARGS:-}
read -r MOCO_STOP MOCO_TOTAL <<<"${MOCO_EPOCHS:-100 200}"
read -r E1 E2 E3 <<<"${DET_EPOCHS:-23 27 37}"
case ${PRETRAIN:-mocov2} in
    mocov2) MOCO_CFG=$CONFIG_DIR/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py ;;
    densecl) MOCO_CFG=$CONFIG_DIR/densecl/densecl_resnet50_4xb32-coslr-200e_unlabeled224.py ;;
    *) die "PRETRAIN=$PRETRAIN: expected mocov2 or densecl" ;;
esac
case ${RECIPE:-seed} in
    seed | ssl) ;;
    *) die "RECIPE=$RECIPE: expected seed (the seed's staged fine-tuning) or ssl" ;;
esac
DET=$CONFIG_DIR/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2
det_dir() { echo "work_dirs/$(basename "${DET}-$1_labeled")"; }
mkdir -p work_dirs/slurm
# GRES= (empty) for a cluster without GPU gres (e.g. the tests' CPU cluster)
gres() { [[ -z "${GRES-x}" ]] && echo "--gres=none" || echo "--gres=${GRES:-gpu:$1}"; }
# shellcheck disable=SC2086  # SBATCH_ARGS, *_ARGS are option lists
submit() { sbatch --parsable --output='work_dirs/slurm/%x-%j.out' $SBATCH_ARGS "$@"; }

dep=()
if [[ -z "${MOCO:-}" ]]; then
    # shellcheck disable=SC2086
    moco_job=$(submit --job-name="${PRETRAIN:-mocov2}" --ntasks-per-node="$PRETRAIN_GPUS" "$(gres "$PRETRAIN_GPUS")" \
        "$REPO/tools/slurm/train.sbatch" "$MOCO_CFG" --data-root "$UNLABELED" \
        --cfg-options "train_cfg.max_epochs=$MOCO_STOP" "param_scheduler.0.T_max=$MOCO_TOTAL" \
        "param_scheduler.0.end=$MOCO_TOTAL" ${MOCO_ARGS:-})
    echo "pretrain: job $moco_job"
    dep=(--dependency="afterok:$moco_job")
    MOCO=work_dirs/$(basename "$MOCO_CFG" .py)/keep_epoch_$MOCO_STOP.pth
fi
if [[ ${RECIPE:-seed} == ssl ]]; then
    SSL_CFG=$CONFIG_DIR/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled.py
    # shellcheck disable=SC2086
    job=$(submit --job-name=det-ssl --ntasks-per-node="$DET_GPUS" "$(gres "$DET_GPUS")" "${dep[@]}" \
        "$REPO/tools/slurm/train.sbatch" "$SSL_CFG" --data-root "$LABELED" --pretrained "$MOCO" \
        --amp ${DET_ARGS:-})
    echo "fine-tune ssl-36e: job $job"
    # shellcheck disable=SC2086
    job=$(submit --job-name=det-test "$(gres 1)" --dependency="afterok:$job" \
        "$REPO/tools/slurm/test.sbatch" "$SSL_CFG" --best-of "work_dirs/$(basename "$SSL_CFG" .py)" \
        --data-root "$LABELED" --split validation --batch-size 2 ${TEST_ARGS:-})
    echo "test: job $job (summary in work_dirs/slurm/det-test-$job.out)"
    exit 0
fi
prev=("${dep[@]}")
stage_end=([1]=$E1 [2]=$E2 [3]=$E3)
stages=([1]=s1-23e [2]=s2-27e [3]=s3-37e)
for k in 1 2 3; do
    stage=${stages[$k]}
    opts=("train_cfg.max_epochs=${stage_end[$k]}" "param_scheduler.1.milestones=[$E1,$E2]"
          "param_scheduler.1.end=$E3")
    extra=()
    if [[ $k == 1 ]]; then
        extra=(--pretrained "$MOCO")
    else  # the previous stage's last epoch (the configs name epoch_23 / epoch_27)
        opts+=("load_from=$(det_dir "${stages[$((k - 1))]}")/epoch_${stage_end[$((k - 1))]}.pth")
    fi
    # shellcheck disable=SC2086
    job=$(submit --job-name="det-${stage%%-*}" --ntasks-per-node="$DET_GPUS" "$(gres "$DET_GPUS")" \
        "${prev[@]}" "$REPO/tools/slurm/train.sbatch" "${DET}-${stage}_labeled.py" --data-root "$LABELED" \
        "${extra[@]}" --cfg-options "${opts[@]}" ${DET_ARGS:-})
    echo "fine-tune $stage: job $job"
    prev=(--dependency="afterok:$job")
done
# the checkpoint that scored best on validation over the three stages, as the seed reported
# shellcheck disable=SC2086
job=$(submit --job-name=det-test "$(gres 1)" "${prev[@]}" "$REPO/tools/slurm/test.sbatch" \
    "${DET}-s3-37e_labeled.py" --best-of "$(det_dir s1-23e)" "$(det_dir s2-27e)" "$(det_dir s3-37e)" \
    --data-root "$LABELED" --split validation --batch-size 2 ${TEST_ARGS:-})
echo "test: job $job (summary in work_dirs/slurm/det-test-$job.out)"
