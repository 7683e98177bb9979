# shellcheck shell=bash
# Sourced by the launchers: their argument check, Slurm task layout and torchrun / srun commands.
# check_args MIN USAGE "$@": -h/--help prints the calling script's header comment; fewer than MIN
# arguments print one usage line on stderr and exit 2 (instead of bash's "unbound variable").
check_args() {
    local min=$1 usage=$2
    shift 2
    if [[ ${1:-} == -h || ${1:-} == --help ]]; then
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" | sed '1s/^/usage: /'
        exit 0
    fi
    if [[ $# -lt $min ]]; then
        echo "usage: $usage" >&2
        exit 2
    fi
}

# slurm_layout PARTITION: GPUS, GPUS_PER_NODE, CPUS_PER_TASK from the environment checked, and
# TASKS_PER_NODE, NODES, GRES derived (one task per GPU, whole nodes); a request that cannot run
# ends in one `error:` line, exit 2, before srun.
slurm_layout() {
    local PARTITION=$1 lo have cpus fit
    die() { echo "error: $*" >&2; exit 2; }
    whole() { [[ ${!1} =~ ^[1-9][0-9]*$ ]] || die "$1=${!1}: give a whole number above 0 ($2)"; }
    GPUS=${GPUS:-1}
    whole GPUS "GPUs in all, one task each"
    GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
    whole GPUS_PER_NODE "GPUs used on each node"
    CPUS_PER_TASK=${CPUS_PER_TASK:-5}
    whole CPUS_PER_TASK "CPUs for each task"
    # N nodes x G GPUs: whole nodes only, or ranks would not map one-to-one onto GPUs
    lo=$((GPUS / GPUS_PER_NODE * GPUS_PER_NODE))
    (( GPUS <= GPUS_PER_NODE || GPUS == lo )) || die "GPUS=$GPUS is not a multiple of" \
        "GPUS_PER_NODE=$GPUS_PER_NODE: use whole nodes (e.g. GPUS=$lo or $((lo + GPUS_PER_NODE)))"
    TASKS_PER_NODE=$((GPUS < GPUS_PER_NODE ? GPUS : GPUS_PER_NODE))
    NODES=$((GPUS / TASKS_PER_NODE))
    GRES=${GRES-gpu:$TASKS_PER_NODE}  # per node; GRES= (empty) on a cluster without GPU gres

    # Outside an allocation, a request no node set of the partition can ever hold would wait in
    # the queue forever (Slurm's default EnforcePartLimits=NO): refuse it now. (Inside one, e.g.
    # salloc, srun itself refuses a step larger than the allocation at once.)
    if [[ -z ${SLURM_JOB_ID:-} ]] && fit=$(sinfo -h -N -p "$PARTITION" -o '%N %c' 2>/dev/null); then
        read -r have cpus < <(sort -u <<<"$fit" |
            awk '{n++; if ($2 + 0 > c) c = $2 + 0} END {print n + 0, c + 0}')
        (( have == 0 || NODES <= have )) || die "partition $PARTITION has $have nodes:" \
            "GPUS=$GPUS at GPUS_PER_NODE=$GPUS_PER_NODE needs $NODES"
        (( cpus == 0 || TASKS_PER_NODE * CPUS_PER_TASK <= cpus )) || die "partition" \
            "$PARTITION has at most $cpus CPUs per node: $TASKS_PER_NODE tasks per node x" \
            "CPUS_PER_TASK=$CPUS_PER_TASK need $((TASKS_PER_NODE * CPUS_PER_TASK))"
    fi
}

# torchrun_exec GPUS TOOL CONFIG [TOOL ARGS]: replaces the shell with torchrun running
# tools/TOOL CONFIG [TOOL ARGS], GPUS processes on this machine; the repository on PYTHONPATH.
# Env: NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON.
torchrun_exec() {
    local gpus=$1 tool=$2 config=$3 here
    shift 2
    NNODES=${NNODES:-1}
    NODE_RANK=${NODE_RANK:-0}
    MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
    # from the work folder and config: two runs on one machine get different ports
    PORT=${PORT:-$((29500 + $(echo "$PWD $config" | cksum | cut -d' ' -f1) % 1000))}
    PYTHON=${PYTHON:-python}
    here="$(cd "$(dirname "$0")" && pwd)"

    PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" \
    exec "$PYTHON" -m torch.distributed.run \
        --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
        --nproc_per_node="$gpus" --master_port="$PORT" \
        "$here/$tool" "$@"
}

# srun_tool PARTITION JOB_NAME TOOL [TOOL ARGS]: one srun task per GPU (slurm_layout) running
# tools/TOOL [TOOL ARGS]; the repository on PYTHONPATH. Env: as slurm_layout, SRUN_ARGS, PYTHON.
srun_tool() {
    local partition=$1 job_name=$2 tool=$3 here
    shift 3
    slurm_layout "$partition"
    SRUN_ARGS=${SRUN_ARGS:-}
    PYTHON=${PYTHON:-python}
    here="$(cd "$(dirname "$0")" && pwd)"

    # Every task derives the same MASTER_PORT from the job id, and tools/toolkit/launch.py the same
    # MASTER_ADDR (the step's first node, where rank 0 runs): no exchange between nodes needed.
    # shellcheck disable=SC2086,SC2016  # SRUN_ARGS: a list of options; $((...)): in each task
    PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" \
    srun -p "$partition" --job-name="$job_name" ${GRES:+--gres="$GRES"} \
        --ntasks="$GPUS" --ntasks-per-node="$TASKS_PER_NODE" --nodes="$NODES" \
        --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
        bash -c 'export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000)); exec "$0" "$@"' \
        "$PYTHON" -u "$here/$tool" "$@"
}
