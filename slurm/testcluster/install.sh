#!/usr/bin/env bash
# Install what the test cluster needs (Debian/Ubuntu, as root). Does nothing if already there.
set -euo pipefail
need=()
for pkg in slurm-wlm munge iproute2 util-linux; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "testcluster: slurm-wlm and munge already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "testcluster: installing ${need[*]} needs root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq
timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start nothing without systemd; start.sh runs the daemons itself.
echo "testcluster: installed ${need[*]}"
