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
# PRETRAIN=mae pretrains the peer's MAE ViT-B instead (MOCO_EPOCHS default "80 200": it stops at
# epoch 80 of its 200-epoch schedule, 20 of them warm-up); MOCO is then an MAE checkpoint, and the
# fine-tuning a ViT recipe: RECIPE=peer-vit, the peer's four stages (configs/vitdet/*_1xb2-s1-frozen*
# -> s2 -> s3 -> s4, each from the previous stage's best checkpoint on validation), or
# RECIPE=vitdet, the ViTDet-style config as one job (with --amp, as ViTDet trains). Their
# DET_GPUS default is 1, the peer's.
# SEMI=1 adds a semi-supervised stage after the seed or SSL fine-tuning (Soft Teacher,
# configs/soft_teacher): from that fine-tuning's best checkpoint on validation, on LABELED and
# UNLABELED together (UNLABELED is needed then, also with MOCO), with SEMI_ARGS as its extra
# train.py args; the test job then evaluates the stage's best checkpoint (its teacher) with its
# config, whose detector settings TEST_ARGS reach under model.detector.
# Logs: work_dirs/slurm/<job name>-<job id>.out. Run it from the folder where work_dirs/ should be.
# Before submitting anything it checks, in seconds, the inputs (LABELED's layout and a sample of
# its files, an image in UNLABELED, the MOCO file) and that the jobs' Python (PYTHON, else the repo's
# .venv, else python: as train.sbatch picks it) imports torch, mmengine, mmdet and mmpretrain;
# the first problem stops it with one "error: ..." line and exit status 2. So does a work folder
# trained from other inputs (a rehearsal's in the same folder, say): its job would stop there.
# Submitted again from the same folder (the command a failed job prints), it continues the chain:
# stages that finished are not queued again, the failed one continues its latest checkpoint, and
# the jobs left pending behind the failure are cancelled and replaced; while jobs of the earlier
# submission still run or wait, it refuses.
set -euo pipefail
# this submission again, from here, with the settings it was given: a stage that fails prints it
# (train.sbatch), as the one command that continues the chain from there
resubmit="cd $(printf %q "$PWD") &&"
for v in LABELED UNLABELED MOCO PRETRAIN RECIPE PRETRAIN_GPUS DET_GPUS SBATCH_ARGS MOCO_ARGS \
        DET_ARGS TEST_ARGS MOCO_EPOCHS DET_EPOCHS PYTHON CONFIG_DIR GRES MAX_RESTARTS SEMI \
        SEMI_ARGS; do
    if [[ -v $v ]]; then resubmit+=" $v=$(printf %q "${!v}")"; fi
done
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
export REPO
CONFIG_DIR=${CONFIG_DIR:-$REPO/configs}
die() { echo "error: $*" >&2; exit 2; }

# --- checks: a job that fails hours later in the queue costs far more than these seconds
LABELED=${LABELED:-}
[[ -n $LABELED ]] || die "set LABELED to the labeled dataset root (the folder with training/ and validation/, or a COCO-format one with annotations/)"
# a path through a squashfs image (unlabeled_224.sqsh, labeled.sqsh/...) is read as it is; what
# the data are (course layout or COCO, in a folder or an image) is checked by check_dataset.py
# --quick below, on the splits the fine-tuning jobs read: the configs' training and validation,
# or the names DET_ARGS gives them (--cfg-options train_dataloader.dataset.split=NAME ...)
in_image() {
    local p=$1
    while [[ $p == */* && ! -e $p ]]; do p=${p%/*}; done
    [[ -f $p ]]
}
if ! in_image "$LABELED"; then
    [[ -d $LABELED ]] || die "LABELED=$LABELED is not a folder: set LABELED to the labeled dataset root (with training/ and validation/)"
fi
det_splits=()
for loader in train:training val:validation; do
    split=${loader#*:} loader=${loader%:*}
    [[ " ${DET_ARGS:-} " =~ [[:space:]]${loader}_dataloader\.dataset\.split=([^[:space:]]+) ]] &&
        split=${BASH_REMATCH[1]}
    det_splits+=(--split "$split")
done
if [[ -n ${MOCO:-} && -n ${SEMI:-} && -z ${UNLABELED:-} ]]; then
    die "SEMI=1 trains on the unlabeled images too: set UNLABELED to their folder or .sqsh image"
fi
if [[ -z "${MOCO:-}" || -n ${SEMI:-} ]]; then
    [[ -n "${UNLABELED:-}" ]] || die "set UNLABELED to the unlabeled image folder, or MOCO to a checkpoint"
    if ! in_image "$UNLABELED"; then
        [[ -d $UNLABELED ]] || die "UNLABELED=$UNLABELED is not a folder: set UNLABELED to the unlabeled image folder or .sqsh image, or MOCO to a checkpoint"
        # the first image found ends the search: the real folder holds 512,000 on a network
        # filesystem (the extensions the pretraining configs read, any case)
        [[ -n $(find "$UNLABELED" -maxdepth 2 \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \
                -o -iname '*.webp' -o -iname '*.bmp' -o -iname '*.tif' -o -iname '*.tiff' \) \
                -print -quit 2>/dev/null) ]] ||
            die "UNLABELED=$UNLABELED has no image file (.png .jpg .jpeg .webp .bmp .tif .tiff, searched two levels): set UNLABELED to the unlabeled image folder"
    fi
fi
if [[ -n ${MOCO:-} ]]; then
    [[ -f $MOCO && -r $MOCO ]] || die "MOCO=$MOCO is not a readable file: set MOCO to the MoCo checkpoint (.pth), or unset it to pretrain on UNLABELED"
fi
# what to run: refused here, before the Python start below takes its seconds
PRETRAIN_GPUS=${PRETRAIN_GPUS:-4}
SBATCH_ARGS=${SBATCH_ARGS:-}
read -r E1 E2 E3 <<<"${DET_EPOCHS:-23 27 37}"
case ${PRETRAIN:-mocov2} in
    mocov2) MOCO_CFG=$CONFIG_DIR/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py ;;
    densecl) MOCO_CFG=$CONFIG_DIR/densecl/densecl_resnet50_4xb32-coslr-200e_unlabeled224.py ;;
    mae) MOCO_CFG=$CONFIG_DIR/mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py ;;
    *) die "PRETRAIN=$PRETRAIN: expected mocov2, densecl or mae" ;;
esac
MAE_WARMUP=20  # the MAE config's warmup_epochs: its cosine runs from there to TOTAL
if [[ ${PRETRAIN:-mocov2} == mae ]]; then
    read -r MOCO_STOP MOCO_TOTAL <<<"${MOCO_EPOCHS:-80 200}"
else
    read -r MOCO_STOP MOCO_TOTAL <<<"${MOCO_EPOCHS:-100 200}"
fi
case ${RECIPE:-seed} in
    seed | ssl) vit=0 DET_GPUS=${DET_GPUS:-2} ;;
    peer-vit | vitdet) vit=1 DET_GPUS=${DET_GPUS:-1} ;;
    *) die "RECIPE=$RECIPE: expected seed (the seed's staged fine-tuning), ssl, peer-vit or vitdet" ;;
esac
if [[ -n ${SEMI:-} ]] && ((vit)); then
    die "SEMI=1 follows the ResNet-50 fine-tuning (RECIPE=seed or ssl), not RECIPE=$RECIPE"
fi
if [[ -z ${MOCO:-} ]]; then  # a MOCO file of the wrong kind is refused by train.py itself
    if ((vit)) && [[ ${PRETRAIN:-mocov2} != mae ]]; then
        die "RECIPE=$RECIPE fine-tunes a ViT: set PRETRAIN=mae (PRETRAIN=${PRETRAIN:-mocov2} pretrains a ResNet-50)"
    elif ((!vit)) && [[ ${PRETRAIN:-mocov2} == mae ]]; then
        die "PRETRAIN=mae pretrains a ViT: set RECIPE=peer-vit or RECIPE=vitdet (RECIPE=${RECIPE:-seed} fine-tunes a ResNet-50)"
    fi
fi
# the interpreter train.sbatch / test.sbatch would pick, exported so the jobs use exactly it
source "$REPO/tools/slurm/job_python.sh"
PY=$PYTHON
if [[ $PY != */* ]]; then
    PY=$(command -v "$PY") || die "PYTHON=$PYTHON: no such command: run make setup (creates $REPO/.venv) or set PYTHON to the environment's python"
elif [[ $PY != /* ]]; then
    PY=$PWD/$PY  # the jobs start in this folder too; absolute for the log lines
fi
export PYTHON=$PY

DET=$CONFIG_DIR/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2
SSL_CFG=$CONFIG_DIR/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled.py
VIT=$CONFIG_DIR/vitdet/faster-rcnn_vit-b-mae-pre_sfp_1xb2
vit_cfg() { [[ $1 == 1 ]] && echo "${VIT}-s1-frozen-20e_labeled512.py" || echo "${VIT}-s$1-20e_labeled512.py"; }
VITDET_CFG=$CONFIG_DIR/vitdet/faster-rcnn_vit-b-win-mae-pre_sfp_1xb2-lsj-80e_labeled1024.py
det_dir() { echo "work_dirs/$(basename "${DET}-$1_labeled")"; }
SEMI_CFG=$CONFIG_DIR/soft_teacher/soft-teacher_faster-rcnn_r50-mocov2-pre_fpn
[[ ${RECIPE:-seed} == ssl ]] && SEMI_CFG+=-syncbn-4conv1fc
SEMI_CFG+=_2xb5-12e_labeled-unlabeled.py

# UNLABELED, when it is an image, is read by the pretraining or the semi-supervised stage
unlabeled_image=
if [[ -z "${MOCO:-}" || -n ${SEMI:-} ]] && in_image "$UNLABELED"; then unlabeled_image=1; fi
# the training jobs of the chain, in order
stages=()
if [[ -z "${MOCO:-}" ]]; then
    stages+=(pretrain)
    MOCO=work_dirs/$(basename "$MOCO_CFG" .py)/keep_epoch_$MOCO_STOP.pth
fi
case ${RECIPE:-seed} in
    ssl) stages+=(ssl-36e) ;;
    peer-vit) stages+=(vit-s1 vit-s2 vit-s3 vit-s4) ;;
    vitdet) stages+=(vitdet-80e) ;;
    *) stages+=(s1-23e s2-27e s3-37e) ;;
esac
# the semi-supervised stage starts from the best checkpoint over the fine-tuning folders
if [[ -n ${SEMI:-} ]]; then stages+=(semi); fi
seed_stages=([1]=s1-23e [2]=s2-27e [3]=s3-37e)
stage_end=([1]=$E1 [2]=$E2 [3]=$E3)
# stage_job STAGE sets, for that stage's job: label, name, gpus, dir (its work folder), args_var
# (the *_ARGS variable of its extra arguments) and sargs (train.sbatch's arguments)
# shellcheck disable=SC2206  # *_ARGS are option lists
stage_job() {
    case $1 in
        pretrain)
            label=pretrain name=${PRETRAIN:-mocov2} gpus=$PRETRAIN_GPUS args_var=MOCO_ARGS
            dir=work_dirs/$(basename "$MOCO_CFG" .py)
            sargs=("$MOCO_CFG" --data-root "$UNLABELED" --cfg-options "train_cfg.max_epochs=$MOCO_STOP")
            if [[ ${PRETRAIN:-mocov2} == mae ]]; then
                sargs+=("param_scheduler.1.T_max=$((MOCO_TOTAL - MAE_WARMUP))" "param_scheduler.1.end=$MOCO_TOTAL")
            else
                sargs+=("param_scheduler.0.T_max=$MOCO_TOTAL" "param_scheduler.0.end=$MOCO_TOTAL")
            fi
            sargs+=(${MOCO_ARGS:-}) ;;
        ssl-36e)
            label="fine-tune ssl-36e" name=det-ssl gpus=$DET_GPUS args_var=DET_ARGS
            dir=work_dirs/$(basename "$SSL_CFG" .py)
            sargs=("$SSL_CFG" --data-root "$LABELED" --pretrained "$MOCO" --amp ${DET_ARGS:-}) ;;
        vit-s1)  # s2-s4 start from the previous stage's best (their configs' load_from)
            label="fine-tune vit-s1" name=det-vit-s1 gpus=$DET_GPUS args_var=DET_ARGS
            dir=work_dirs/$(basename "$(vit_cfg 1)" .py)
            sargs=("$(vit_cfg 1)" --data-root "$LABELED" --pretrained "$MOCO" ${DET_ARGS:-}) ;;
        vit-s[234])
            label="fine-tune $1" name=det-$1 gpus=$DET_GPUS args_var=DET_ARGS
            dir=work_dirs/$(basename "$(vit_cfg "${1:5}")" .py)
            sargs=("$(vit_cfg "${1:5}")" --data-root "$LABELED" ${DET_ARGS:-}) ;;
        semi)
            local folders=() t
            for t in "${stages[@]}"; do
                [[ $t == pretrain || $t == semi ]] || folders+=("$(stage_job "$t"; echo "$dir")")
            done
            label="semi-supervised" name=det-semi gpus=$DET_GPUS args_var=SEMI_ARGS
            dir=work_dirs/$(basename "$SEMI_CFG" .py)
            sargs=("$SEMI_CFG" --data-root "$LABELED" --unlabeled "$UNLABELED" --cfg-options
                   "load_from=best-of://$(IFS=,; echo "${folders[*]}")" ${SEMI_ARGS:-}) ;;
        vitdet-80e)
            label="fine-tune vitdet-80e" name=det-vitdet gpus=$DET_GPUS args_var=DET_ARGS
            dir=work_dirs/$(basename "$VITDET_CFG" .py)
            sargs=("$VITDET_CFG" --data-root "$LABELED" --pretrained "$MOCO" --amp ${DET_ARGS:-}) ;;
        *)
            local k=${1:1:1} opts
            label="fine-tune $1" name=det-s$k gpus=$DET_GPUS args_var=DET_ARGS dir=$(det_dir "$1")
            opts=("train_cfg.max_epochs=${stage_end[$k]}" "param_scheduler.1.milestones=[$E1,$E2]"
                  "param_scheduler.1.end=$E3")
            if [[ $k == 1 ]]; then
                sargs=("${DET}-$1_labeled.py" --data-root "$LABELED" --pretrained "$MOCO")
            else  # the previous stage's last epoch (the configs name epoch_23 / epoch_27)
                opts+=("load_from=$(det_dir "${seed_stages[k - 1]}")/epoch_${stage_end[k - 1]}.pth")
                sargs=("${DET}-$1_labeled.py" --data-root "$LABELED")
            fi
            sargs+=(--cfg-options "${opts[@]}" ${DET_ARGS:-}) ;;
    esac
}

# A stage whose work folder exists (an earlier submission, a rehearsal): its job would continue
# it only if it was trained from the same inputs, and stop there hours later otherwise; a stage
# that finished needs no job. tools/train.py --check-inputs-only tells which, writing nothing.
checked=() check=()
for s in "${stages[@]}"; do
    stage_job "$s"
    if [[ -d $dir ]]; then
        checked+=("$s")
        check+=("$args_var" "$gpus" "${sargs[@]}" ';')
    fi
done
# The checks in one Python start (imports take seconds, more on a network filesystem;
# tools/slurm/preflight.py): that it imports torch, mmengine, mmdet and mmpretrain, then
# check_dataset.py --quick on LABELED (the layout and the first files of each split; the full
# check reads all 50,000 yml: minutes) and on an UNLABELED image, then check_stages.py on the
# stages above, until one fails.
tools=() what=()
add_tool() { what+=("$1"); shift; tools+=("$#" "$@"); }
add_tool labeled "$REPO/tools/check_dataset.py" "$LABELED" --quick "${det_splits[@]}"
if [[ -n $unlabeled_image ]]; then
    add_tool unlabeled "$REPO/tools/check_dataset.py" "$UNLABELED" --quick
fi
if ((${#checked[@]})); then
    add_tool stages "$REPO/tools/slurm/check_stages.py" "${check[@]}"
fi
pre=$(mktemp -d)
trap 'rm -rf "$pre"' EXIT
if ! out=$("$PY" "$REPO/tools/slurm/preflight.py" "$pre" "${tools[@]}" 2>&1) &&
        ! grep -qx 'imports ok' <<<"$out"; then
    why=$(tail -n 1 <<<"$out")
    die "PYTHON=$PY cannot import torch, mmengine, mmdet and mmpretrain (${why:-it exits with an error}):" \
        "run make setup (creates $REPO/.venv) or set PYTHON to the environment's python"
fi
# a check_dataset.py report's first ERROR or error line, without its prefix
first_error() { grep -m 1 -e '^ERROR: ' -e '^error: ' | sed 's/^[A-Za-z]*: //' || true; }
declare -A state=()
for k in "${!what[@]}"; do
    status=$(cat "$pre/$((k + 1)).status" 2>/dev/null || echo 1)
    out=$(cat "$pre/$((k + 1)).out" 2>/dev/null || true)
    case ${what[k]} in
        labeled)
            ((status == 0)) && continue
            why=$(first_error <<<"$out")
            [[ -n $why ]] || die "$PY $REPO/tools/check_dataset.py $LABELED --quick failed: $(tail -n 1 <<<"$out")"
            if [[ $why == *'/annotations/instances_'* ]]; then  # a COCO split the jobs would read
                why+='; for other split names add DET_ARGS="--cfg-options train_dataloader.dataset.split=NAME'
                why+=' val_dataloader.dataset.split=NAME" TEST_ARGS="--split NAME"'
            fi
            die "LABELED=$LABELED: $why (full report: $PY $REPO/tools/check_dataset.py $LABELED)" ;;
        unlabeled)
            ((status == 0)) && continue
            why=$(first_error <<<"$out")
            die "UNLABELED=$UNLABELED: ${why:-$(tail -n 1 <<<"$out")}" ;;
        stages)
            if ((status)); then
                why=$(grep -m 1 '^error: ' <<<"$out" | sed 's/^error: //' || true)
                die "${why:-$PY $REPO/tools/slurm/check_stages.py failed: $(tail -n 1 <<<"$out")}"
            fi
            i=0
            while read -r verdict; do
                state[${checked[i++]}]=$verdict
            done < <(grep -oE '^(finished|resume|new):' <<<"$out" | tr -d :) ;;
    esac
done

# Jobs that an earlier submission from this folder left in the queue. Those pending after a
# failed job (DependencyNeverSatisfied, or waiting for such a job) can never start: this
# submission replaces them. Any other runs or will: a second chain would train the same folders.
declare -A jname=() why_pending=() after=() stale=()
ours=() alive=()
here=$(pwd -P)
if queue=$(squeue -h -u "$(id -un)" -o '%i|%j|%T|%r|%E|%Z' 2>/dev/null); then
    while IFS='|' read -r id jn st why dep wd; do
        [[ -n $id && ($wd == "$PWD" || $wd == "$here") ]] || continue
        case $jn in mocov2 | densecl | mae | det-s[123] | det-ssl | det-vit-s[1234] | det-vitdet | det-semi | det-test) ;;
            *) continue ;;
        esac
        case $st in COMPLETED | CANCELLED | FAILED | TIMEOUT | NODE_FAIL | BOOT_FAIL | DEADLINE | OUT_OF_MEMORY)
            continue ;;  # ended, shown for a while after
        esac
        ours+=("$id")
        jname[$id]=$jn why_pending[$id]=$([[ $st == PENDING ]] && echo "$why" || echo "$st")
        after[$id]=$dep
    done <<<"$queue"
fi
changed=1
while ((changed)); do
    changed=0
    for id in "${ours[@]}"; do
        [[ -z ${stale[$id]:-} ]] || continue
        dead=${why_pending[$id]}
        if [[ $dead == Dependency ]]; then
            for d in $(grep -oE ':[0-9]+' <<<"${after[$id]}" | tr -d :); do
                [[ -n ${stale[$d]:-} ]] && dead=DependencyNeverSatisfied
            done
        fi
        if [[ $dead == DependencyNeverSatisfied ]]; then
            stale[$id]=1 changed=1
        fi
    done
done
held=()
for id in "${ours[@]}"; do
    [[ -z ${stale[$id]:-} ]] || continue
    alive+=("$id (${jname[$id]}, ${why_pending[$id]})")
    # Slurm holds a job whose launch failed (a prolog error, a node failing at launch) or that it
    # requeued through completion more than MaxBatchRequeue times (JobHoldMaxRequeue; "launch
    # failure limit exceeded requeued held"); the chain then waits without an end
    [[ ${why_pending[$id],,} != *held* && ${why_pending[$id],,} != *hold* ]] || held+=("$id")
done
if ((${#held[@]})); then
    id=${held[0]}
    die "job $id (${jname[$id]}) is held (${why_pending[$id]}), and the chain waits behind it" \
        "for ever: release it, and it continues from its latest checkpoint: scontrol release" \
        "$(IFS=,; echo "${held[*]}"); or cancel the chain's jobs (scancel ${ours[*]}) and" \
        "submit again"
fi
if ((${#alive[@]})); then
    printf -v list '%s, ' "${alive[@]}"
    die "jobs submitted earlier from this folder are still queued or running: ${list%, };" \
        "a second chain would train the same work folders at once. Wait for them to end, or" \
        "cancel them (scancel ${ours[*]}) and submit again"
fi

mkdir -p work_dirs/slurm
# what to run when a stage fails (train.sbatch prints it): this submission again, from here
export PIPELINE_RESUBMIT="$resubmit $(printf %q "$REPO/tools/slurm/submit_pipeline.sh")"
if ((${#stale[@]})); then
    mapfile -t replaced < <(printf '%s\n' "${!stale[@]}" | sort -n)
    scancel "${replaced[@]}"
    for id in "${replaced[@]}"; do
        echo "cancelled job $id (${jname[$id]}): it waited for a failed job"
    done
fi
# GRES= (empty) for a cluster without GPU gres (e.g. the tests' CPU cluster)
gres() { [[ -z "${GRES-x}" ]] && echo "--gres=none" || echo "--gres=${GRES:-gpu:$1}"; }
# shellcheck disable=SC2086  # SBATCH_ARGS, *_ARGS are option lists
submit() { sbatch --parsable --output='work_dirs/slurm/%x-%j.out' $SBATCH_ARGS "$@"; }

# the stages that finished need no job; the first that did not and every later one are queued
prev=() best=()
skipping=1
for s in "${stages[@]}"; do
    stage_job "$s"
    # the test picks the checkpoint that scored best on validation over the fine-tuning stages
    # (as the seed reported), with the last stage's config; after a semi-supervised stage, its own
    if [[ $s == semi ]]; then
        best=("$dir") test_cfg=${sargs[0]}
    elif [[ $s != pretrain ]]; then
        best+=("$dir") test_cfg=${sargs[0]}
    fi
    # pretraining is done when the keep file the fine-tuning starts from is there too
    if ((skipping)) && [[ ${state[$s]:-} == finished && ($s != pretrain || -f $MOCO) ]]; then
        echo "$label: finished ($dir), not submitted again"
        continue
    fi
    skipping=0
    job=$(submit --job-name="$name" --ntasks-per-node="$gpus" "$(gres "$gpus")" "${prev[@]}" \
        "$REPO/tools/slurm/train.sbatch" "${sargs[@]}")
    echo "$label: job $job"
    prev=(--dependency="afterok:$job")
done
# shellcheck disable=SC2086
job=$(submit --job-name=det-test "$(gres 1)" "${prev[@]}" "$REPO/tools/slurm/test.sbatch" \
    "$test_cfg" --best-of "${best[@]}" --data-root "$LABELED" --split validation --batch-size 2 ${TEST_ARGS:-})
echo "test: job $job (summary in work_dirs/slurm/det-test-$job.out)"
