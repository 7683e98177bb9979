#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py args]: one process per GPU on this machine (torchrun).
# Env: NNODES, NODE_RANK, MASTER_ADDR, PORT (default 29500 + a value from the work folder, so two
# runs on one machine do not collide), PYTHON.
set -euo pipefail
source "$(dirname "$0")/launcher_common.sh"
check_args 2 "tools/dist_train.sh CONFIG GPUS [train.py args]" "$@"
CONFIG=$1
GPUS=$2
torchrun_exec "$GPUS" train.py "$CONFIG" --launcher pytorch "${@:3}"
