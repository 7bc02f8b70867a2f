#!/usr/bin/env bash
# Stop the test cluster: every process in its network namespace (daemons, slurmstepd, jobs),
# then the forwarder, the namespace holder and munged, each by its pid file. Logs stay in
# $HPCDIFF_SLURM_DIR/log until the next start.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

# running PID: alive and not a zombie (here orphans are reaped only every few seconds).
running() {
    local stat
    stat="$(cat 2>/dev/null "/proc/$1/stat")" || return 1
    stat="${stat##*) }"
    [ "${stat:0:1}" != Z ]
}

# stop_wait SIGNAL PID...: send SIGNAL, wait up to 10 s for them to exit, then SIGKILL.
stop_wait() {
    local sig=$1
    shift
    [ $# -gt 0 ] || return 0
    kill "-$sig" "$@" 2>/dev/null || true
    for _ in $(seq 50); do
        local alive=0 p
        for p in "$@"; do running "$p" && alive=1; done
        [ $alive -eq 0 ] && return 0
        sleep 0.2
    done
    kill -KILL "$@" 2>/dev/null || true
}

# The Slurm daemons first, so that they neither restart jobs nor see them die; then whatever else
# runs in the namespace (slurmstepd, which ignores SIGTERM, and the jobs: nothing there to save).
pids=()
for entry in "${DAEMONS[@]:0:3}"; do
    pid="$(pid_of "${entry%%:*}" "${entry##*:}")" && pids+=("$pid")
done
stop_wait TERM "${pids[@]}"
mapfile -t rest < <(netns_pids)
stop_wait KILL "${rest[@]}"
for entry in "${DAEMONS[@]:3}"; do
    pid="$(pid_of "${entry%%:*}" "${entry##*:}")" && stop_wait TERM "$pid"
done
rm -f "$RUN"/*.pid
log "stopped (state and logs in $D)"
