"""``hpcdiff profile sample``: samples/s against the number of array tasks (local executor), each task's
start-up share, the ideal line; a rerun reuses what was measured. (Here, not in tests/profile, for the
session's tiny trained run.)"""

from __future__ import annotations

import csv
import json

import pytest
from sample_helpers import REPO, SMALL

from hpcdiff.cli import main
from hpcdiff.profile.sampling import SAMPLE_COLUMNS


@pytest.mark.slow
def test_samples_per_second_against_array_tasks(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "prof"
    sets = [a for s in SMALL for a in ("--set", s)]
    args = ["profile", "sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(tiny_run.run),
            "--tasks", "1,2", "--out", str(out), "--executor", "local", *sets]
    assert main(args) == 0
    with (out / "sample_scaling.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == SAMPLE_COLUMNS
    assert [int(r["tasks"]) for r in rows] == [1, 2]
    assert [int(r["samples"]) for r in rows] == [18, 18]  # 6 dates x 3 members, whatever the split
    one, two = rows
    assert float(one["efficiency"]) == 1.0
    assert float(two["ideal_samples_per_s"]) == pytest.approx(2 * float(one["samples_per_s"]), rel=1e-4)
    for row in rows:
        assert 0.0 < float(row["startup_share"]) <= float(row["startup_share_max"]) < 1.0
        assert float(row["startup_s_mean"]) > 0.5  # at least importing torch
    result = json.loads((out / "sample" / "tasks-2" / "result.json").read_text())
    assert len(result["results"]) == 2 and sum(r["samples"] for r in result["results"]) == 18
    assert (out / "sample_scaling.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(args) == 0  # a rerun reuses the measured task counts
    assert "submitted sampling array" not in capsys.readouterr().err
