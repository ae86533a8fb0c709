# Sourced by .ci/run and .ci/cross: `bounded LIMIT_S WHAT CMD...` runs CMD under `timeout`, so a
# hang fails its step in minutes and says which, instead of eating CI's 90-minute budget (one
# did: docs/CROSS.md). Limits are set well above the measured times (several times, builds
# included), never as speed checks.
bounded() {
    local limit=$1 what=$2
    shift 2
    local rc=0
    timeout -k 30 "$limit" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "error: $what ran past ${limit}s (a hang?)" >&2
    fi
    return "$rc"
}
