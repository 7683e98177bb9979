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
srun_tool "$PARTITION" "$JOB_NAME" test.py "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
