"""The demo's chain end to end, CI-sized (``hpcdiff demo --quick``): every stage's real command line,
all the files the README promises, and the metrics in the shape DESIGN.md fixes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import netCDF4
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed, pytest.mark.timeout(900)]

METHODS = {"model", "bilinear", "qm", "oracle"}
METRICS = {"crps", "bias", "rmse", "spread_skill", "psd_high_ratio"}


def test_quick_demo_produces_every_output(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hpcdiff.cli", "demo", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("synthesize the world", "preprocess", "train", "sample", "merge", "evaluate"):
        assert f"== {stage}" in proc.stdout
    assert "mpiexec" in proc.stdout  # preprocessing ran on 2 MPI ranks
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert set(metrics) == {"t2m", "tp", "e"}
    for variable, methods in metrics.items():
        assert set(methods) == METHODS, variable
        for method, values in methods.items():
            assert set(values) >= METRICS, (variable, method)
            assert all(isinstance(x, float) for x in values.values()), (variable, method)
    with netCDF4.Dataset(out / "samples.nc") as ds:
        assert float(ds["tp"][:].min()) >= 0.0  # physical bounds hold in the demo's own output
        assert ds["t2m"].dimensions == ("time", "member", "y", "x")
        assert ds["t2m"].shape[:2] == (4, 2)
        assert ds.Conventions == "CF-1.8"
    html = (out / "report" / "report.html").read_text()
    assert "t2m" in html and ".png" in html
    skill = json.loads((out / "report" / "skill.json").read_text())
    assert skill["quick"] is True and len(skill["checks"]) == 7
    assert [c["required"] for c in skill["checks"]][:3] == [True, True, True]
    assert "model/oracle" in proc.stdout  # the headline table
    # a rerun continues: world and dataset are kept, training is complete, no part is resampled
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=850)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "synthesize the world: done already" in again.stdout
    assert "nothing submitted" in again.stdout + again.stderr
