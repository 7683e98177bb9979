#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]: one process per GPU on this machine (torchrun).
# Env: NNODES, NODE_RANK, MASTER_ADDR, PORT (default 29500 + a value from the work folder, so two
# runs on one machine do not collide), PYTHON.
set -euo pipefail
# -h: the header above; too few arguments: one usage line on stderr, exit 2 (not "unbound variable")
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" | sed '1s/^/usage: /'
    exit 0
fi
if [[ $# -lt 3 ]]; then
    echo "usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]" >&2
    exit 2
fi
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
