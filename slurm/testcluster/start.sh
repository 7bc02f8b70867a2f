#!/usr/bin/env bash
# Start the single-host test cluster as root: munged, slurmctld and two slurmd (nodes n1, n2) in a
# private network namespace, and a forwarder that makes slurmctld reachable on the host's
# 127.0.0.1:$HPCDIFF_SLURM_PORT. Idempotent: if our cluster is up and healthy it does nothing;
# otherwise it stops what is left of it and starts afresh with empty state (job ids restart at 1).
# Clients then need `. slurm/testcluster/env.sh`. See README.md.
set -euo pipefail
trap 'echo "testcluster: start.sh failed at line $LINENO (logs in ${HPCDIFF_SLURM_DIR:-/tmp/hpcdiff-slurm}/log)" >&2' ERR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "timed out after ${seconds}s waiting for $what; logs in $D/log"
    tail -n 20 "$D"/log/*.log >&2 || true
    exit 1
}

[ "$(id -u)" -eq 0 ] || { log "must run as root (slurmd runs jobs as any user)"; exit 1; }
for cmd in munged slurmctld slurmd sinfo unshare nsenter ip python3 timeout setsid; do
    command -v "$cmd" >/dev/null || { log "$cmd not found; run: bash $here/install.sh"; exit 1; }
done

# One start at a time (two pytest sessions may call this together). The daemons must not
# inherit fd 9, or they would hold the lock for as long as they run.
exec 9>"$D.lock"
timeout 120 flock 9 || { log "another start.sh holds $D.lock"; exit 1; }
if healthy; then
    log "already up ($SLURM_CONF)"
    exit 0
fi
t0=$EPOCHREALTIME
bash "$here/stop.sh" 2>/dev/null
# Start afresh, but never wipe a folder that is not ours (HPCDIFF_SLURM_DIR may be mistyped).
if [ -e "$D" ] && [ ! -e "$D/.hpcdiff-testcluster" ] && [ -n "$(ls -A "$D")" ]; then
    log "$D exists and is not a test-cluster folder; not touching it"
    exit 1
fi
rm -rf "$D"
mkdir -p "$D"/{etc,ctld,spool/n1,spool/n2,run,log,munge}
touch "$D/.hpcdiff-testcluster"
chmod 755 "$D/munge"

sed -e "s|@STATE@|$D|g" -e "s|@HOST@|$(hostname -s)|g" -e "s|@CTLD_PORT@|$HPCDIFF_SLURM_PORT|g" \
    -e "s|@NODE_PORTS@|17001-17002|g" "$here/slurm.conf.in" >"$SLURM_CONF"

# Our own munge key and socket, so that a system munged (if any) is left alone.
head -c 1024 /dev/urandom >"$D/munge/munge.key"
chmod 400 "$D/munge/munge.key"
munged --key-file="$D/munge/munge.key" --socket="$D/munge/munge.socket" \
    --pid-file="$RUN/munged.pid" --log-file="$D/log/munged.log" --seed-file="$D/munge/munged.seed" \
    </dev/null >>"$D/log/munged.log" 2>&1 9>&-
wait_for 10 munged pid_of munged.pid munged

# The namespace holder; every daemon joins its network namespace. setsid: nothing here may die
# with the caller's process group (e.g. when the caller is `timeout`).
setsid unshare -n sleep infinity </dev/null >/dev/null 2>&1 9>&- &
echo $! >"$RUN/netns.pid"
# Ready once it has left our namespace (before that its command line already says sleep).
left_our_netns() { [ "$(readlink "/proc/$1/ns/net")" != "$(readlink /proc/self/ns/net)" ]; }
wait_for 5 "network namespace" left_our_netns "$(cat "$RUN/netns.pid")"
ns="$(pid_of netns.pid "sleep infinity")"
nsenter -t "$ns" -n ip link set lo up

setsid python3 "$here/nsfwd.py" "$ns" "$HPCDIFF_SLURM_PORT" "$RUN/nsfwd.pid" \
    </dev/null >>"$D/log/nsfwd.log" 2>&1 9>&- &
wait_for 5 "the port forwarder (is 127.0.0.1:$HPCDIFF_SLURM_PORT free?)" pid_of nsfwd.pid nsfwd.py

in_ns() { nsenter -t "$ns" -n "$@" </dev/null >>"$D/log/start.log" 2>&1 9>&-; }
in_ns slurmctld -f "$SLURM_CONF"
for node in n1 n2; do
    in_ns slurmd -f "$SLURM_CONF" -N "$node"
done
wait_for 30 "both nodes idle" healthy
log "up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s ($SLURM_CONF)"
