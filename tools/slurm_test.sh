#!/usr/bin/env bash
# tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args, e.g. --data-root
# /labeled --split validation --batch-size 2]. Env as in slurm_train.sh (GPUS, GPUS_PER_NODE:
# several nodes too).
set -euo pipefail
source "$(dirname "$0")/launcher_common.sh"
check_args 4 "tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]" "$@"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
slurm_layout "$PARTITION"
SRUN_ARGS=${SRUN_ARGS:-}
PYTHON=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"

# Every task derives the same MASTER_PORT from the job id, and custom_modules/launch.py the same
# MASTER_ADDR (the step's first node, where rank 0 runs): no exchange between nodes needed.
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" ${GRES:+--gres="$GRES"} \
    --ntasks="$GPUS" --ntasks-per-node="$TASKS_PER_NODE" --nodes="$NODES" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
    bash -c 'export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000)); exec "$0" "$@"' \
    "$PYTHON" -u "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
