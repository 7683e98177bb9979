# shellcheck shell=bash
# Sourced by the launchers. check_args MIN USAGE "$@": -h/--help prints the calling script's
# header comment; fewer than MIN arguments print one usage line on stderr and exit 2 (instead
# of bash's "unbound variable").
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
