#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args]
# One srun task per GPU, for MoCo and detection configs alike. Env: GPUS (total, default 1),
# GPUS_PER_NODE (default min(GPUS, 8)), CPUS_PER_TASK (default 5), SRUN_ARGS (e.g.
# "--account=ACC --time=24:00:00"), GRES (default gpu:GPUS_PER_NODE), PYTHON.
# Each job gets its own MASTER_PORT from its job id, so two jobs sharing a node do not collide.
set -euo pipefail
source "$(dirname "$0")/launcher_args.sh"
check_args 3 "tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args]" "$@"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [[ $# -gt 0 && $1 != -* ]]; then
    WORK_DIR_ARGS=(--work-dir "$1")
    shift
fi
GPUS=${GPUS:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
PYTHON=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"
GRES=${GRES-gpu:$GPUS_PER_NODE}  # GRES= (empty) on a cluster without GPU gres

# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" ${GRES:+--gres="$GRES"} \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 $SRUN_ARGS \
    bash -c 'export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000)); exec "$0" "$@"' \
    "$PYTHON" -u "$HERE/train.py" "$CONFIG" "${WORK_DIR_ARGS[@]}" --launcher slurm "$@"
