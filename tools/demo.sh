#!/usr/bin/env bash
# The demo: sets up .venv if needed, then runs the whole chain on the embedded synthetic world.
# Extra arguments go to `hpcdiff demo` (default output folder: demo-out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
venv="${HPCDIFF_VENV:-.venv}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ "$#" -eq 0 ]; then set -- --out demo-out; fi
exec "$venv/bin/hpcdiff" demo "$@"
