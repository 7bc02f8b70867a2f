"""Helpers shared by the sampling tests (a module of its own name: ``conftest`` is ambiguous to import)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Small enough for seconds per test: 6 test dates x 3 members, 4 solver steps, odd batches.
SMALL = ["dates.limit=6", "sample.members=3", "sample.steps=4", "sample.batch_size=4", "array.tasks=2"]


def hpcdiff_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "hpcdiff.cli", *map(str, args)]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    """A free TCP port for the training subprocess's rendezvous (others may train on 29500 meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
