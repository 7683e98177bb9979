# shellcheck shell=bash
# Sourced by train.sbatch and test.sbatch once their step has ended with an error: what Slurm
# says about the job (`scontrol show job`), and the wait that lets a preemption requeue it.

# field NAME TEXT: the value of NAME=VALUE among TEXT's words (`scontrol show ...` output)
field() {
    awk -v k="$1=" '{ for (i = 1; i <= NF; i++) if (index($i, k) == 1) {
        print substr($i, length(k) + 1); exit } }' <<<"$2"
}

# Preempting with a grace time (GraceTime=...), Slurm signals the job's steps but not its batch
# script, and ends the job (requeues it, with PreemptMode=REQUEUE) only when the grace time is
# over; a script that exits first with its step's status ends the job FAILED, not requeued.
# preempted JOB_TEXT: whether the job is being preempted; sets `preempt_end` (the grace time's
# end), `preempt_mode` (its partition's PreemptMode) and `preempt_requeues` (1: Slurm requeues
# it, as that mode says and the job allows).
preempted() {
    local at partition
    at=$(field PreemptTime "$1")
    [[ -n $at && $at != None ]] || return 1
    preempt_end=$(field EndTime "$1")
    partition=$(scontrol show partition "${SLURM_JOB_PARTITION:-}" 2>/dev/null || true)
    preempt_mode=$(field PreemptMode "$partition")
    preempt_requeues=0
    if [[ $preempt_mode == *REQUEUE* && $(field Requeue "$1") == 1 ]]; then
        preempt_requeues=1
    fi
}

# wait_for_slurm: until Slurm ends the job; its SIGTERM to this script ends the wait, through
# the caller's `trap 'ended=1' TERM` or, without one, the signal's default action.
wait_for_slurm() {
    until ((${ended:-0})); do
        sleep 5 &
        wait $! || true
    done
}
