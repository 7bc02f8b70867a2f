# shellcheck shell=bash
# Source this to use the test cluster from a shell: `. slurm/testcluster/env.sh`.
# Sets SLURM_CONF and puts bin/ (the sacct stand-in) first on PATH. Safe to source twice.
# HPCDIFF_SLURM_DIR (state, logs, config) and HPCDIFF_SLURM_PORT (slurmctld on the host's
# 127.0.0.1) may be set beforehand; start.sh, stop.sh and tests/conftest.py use the same defaults.
_hpcdiff_tc="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HPCDIFF_SLURM_DIR="${HPCDIFF_SLURM_DIR:-/tmp/hpcdiff-slurm}"
export HPCDIFF_SLURM_PORT="${HPCDIFF_SLURM_PORT:-16817}"
export SLURM_CONF="$HPCDIFF_SLURM_DIR/etc/slurm.conf"
case ":$PATH:" in
    *":$_hpcdiff_tc/bin:"*) ;;
    *) export PATH="$_hpcdiff_tc/bin:$PATH" ;;
esac
unset _hpcdiff_tc
