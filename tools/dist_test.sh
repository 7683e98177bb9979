#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]: one process per GPU on this machine (torchrun).
# Env: NNODES, NODE_RANK, MASTER_ADDR, PORT (default 29500 + a value from the work folder, so two
# runs on one machine do not collide), PYTHON.
set -euo pipefail
source "$(dirname "$0")/launcher_common.sh"
check_args 3 "tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]" "$@"
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
torchrun_exec "$GPUS" test.py "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
