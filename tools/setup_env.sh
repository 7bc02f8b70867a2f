#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv, or $HPCDIFF_VENV) with everything the
# demo and the tests need, at the versions of constraints.txt (all but torch: a site's own torch build is
# kept as it is). Idempotent: a second run with unchanged requirements returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HPCDIFF_VENV:-.venv}"
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
stamp="$venv/.hpcdiff-requirements"
want="$(cat setup.py constraints.txt tools/setup_env.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)
    # torch first (or together with deepspeed): otherwise pip resolves a CUDA build of several GB.
    # An existing torch (a site's CUDA build) is kept as it is.
    if "$venv/bin/python" -c "import torch" 2>/dev/null; then
        "${pip[@]}" deepspeed
    else
        "${pip[@]}" torch==2.13.0 deepspeed
    fi
    "${pip[@]}" -e ".[mpi,test,profile]"
    echo "$want" > "$stamp"
fi
