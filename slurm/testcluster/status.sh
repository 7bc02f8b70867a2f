#!/usr/bin/env bash
# Exit status 0 if the test cluster is up and healthy (all daemons alive, both nodes usable).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
if healthy; then
    log "up ($SLURM_CONF)"
else
    log "not up (start it with: bash $here/start.sh)"
    exit 1
fi
