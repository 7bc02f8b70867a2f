"""Fixtures for training tests: a tiny synthetic dataset (seconds to make)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainrun import REPO

from hpcdiff.cli import main


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tiny")
    assert main(["synth", str(base / "world"), "--preset", "tiny", "--no-progress"]) == 0
    assert main(["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(base / "ds"),
                 "--set", f"root={base / 'world'}", "--no-progress"]) == 0
    return base / "ds"
