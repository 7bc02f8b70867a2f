"""A tiny synthetic world and its preprocessed dataset, made once per session (~6 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpcdiff.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """``(world, dataset)``: ``hpcdiff synth --preset tiny`` and ``hpcdiff preprocess`` of it."""
    base = tmp_path_factory.mktemp("evaluate-tiny")
    world, dataset = base / "world", base / "ds"
    assert main(["synth", str(world), "--preset", "tiny", "--no-progress"]) == 0
    assert main(["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(dataset),
                 "--no-progress", "--set", f"root={world}"]) == 0
    return world, dataset


@pytest.fixture(scope="session")
def test_dates(tiny) -> np.ndarray:
    """Eight test-split dates of the tiny dataset."""
    manifest = json.loads((tiny[1] / "manifest.json").read_text())
    return np.asarray(manifest["splits"]["test"]["dates"][::4][:8], "datetime64[D]")
