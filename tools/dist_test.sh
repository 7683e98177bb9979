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
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-$((29500 + $(echo "$PWD $CONFIG" | cksum | cut -d' ' -f1) % 1000))}
PYTHON=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
