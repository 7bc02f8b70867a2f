# Shared by start.sh, stop.sh and status.sh (sourced, not run).
# shellcheck shell=bash
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
D="$HPCDIFF_SLURM_DIR"
RUN="$D/run"

# The processes we manage, in stop order: pid file name and the program the pid must belong to
# (checked, so that a stale pid file never makes us signal an unrelated process).
DAEMONS=("slurmd-n1.pid:slurmd" "slurmd-n2.pid:slurmd" "slurmctld.pid:slurmctld"
         "nsfwd.pid:nsfwd.py" "netns.pid:sleep infinity" "munged.pid:munged")

# pid_of FILE PROGRAM: print the pid in $RUN/FILE if that process is alive and runs PROGRAM.
pid_of() {
    local pid cmd
    pid="$(cat "$RUN/$1" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ "$cmd" == *"$2"* ]] || return 1
    echo "$pid"
}

# netns_pids: pids of all processes in the cluster's network namespace (daemons, slurmstepd,
# job processes), found by comparing namespace links with the namespace holder's.
netns_pids() {
    local holder ns link p
    holder="$(pid_of netns.pid "sleep infinity")" || return 0
    ns="$(readlink "/proc/$holder/ns/net")" || return 0
    for p in /proc/[0-9]*; do
        link="$(readlink "$p/ns/net" 2>/dev/null)" || continue
        [ "$link" = "$ns" ] && [ "${p#/proc/}" != "$holder" ] && echo "${p#/proc/}"
    done
    return 0
}

# healthy: all our processes alive and both nodes idle (or busy) according to the controller.
healthy() {
    local entry states
    for entry in "${DAEMONS[@]}"; do
        pid_of "${entry%%:*}" "${entry##*:}" >/dev/null || return 1
    done
    states="$(timeout 10 sinfo -h -N -o '%N=%t' 2>/dev/null | sort -u | tr '\n' ' ')" || return 1
    [[ "$states" =~ ^n1=(idle|mix|alloc|comp)\ n2=(idle|mix|alloc|comp)\ $ ]]
}

log() { echo "testcluster: $*" >&2; }
