#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args]
# One srun task per GPU, for MoCo and detection configs alike, on one node or several. Env: GPUS
# (total, default 1), GPUS_PER_NODE (default min(GPUS, 8); a larger GPUS must be a multiple of it
# and runs on GPUS/GPUS_PER_NODE nodes), CPUS_PER_TASK (default 5), SRUN_ARGS (e.g.
# "--account=ACC --time=24:00:00"), GRES (per node, default gpu:<tasks per node>), PYTHON.
# 2 nodes x 4 GPUs: GPUS=8 GPUS_PER_NODE=4 tools/slurm_train.sh PARTITION moco CONFIG
# Each job gets its own MASTER_PORT from its job id, so two jobs sharing a node do not collide.
set -euo pipefail
source "$(dirname "$0")/launcher_common.sh"
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
srun_tool "$PARTITION" "$JOB_NAME" train.py "$CONFIG" "${WORK_DIR_ARGS[@]}" --launcher slurm "$@"
