#!/usr/bin/env bash
# The test command: sets up .venv if needed, lints, then runs the whole pytest suite (slow, mpi,
# distributed and slurm tests included). Extra arguments go to pytest, e.g. `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
# The SLURM tests start the single-host test cluster themselves; it needs Debian's slurm-wlm and munge.
bash slurm/testcluster/install.sh || echo "tools/test.sh: warning: the SLURM test cluster cannot be installed" \
    "(needs root and apt); the tests marked slurm will fail" >&2
venv="${HPCDIFF_VENV:-.venv}"
"$venv/bin/ruff" check hpcdiff tests tools
exec "$venv/bin/python" -m pytest "$@"
