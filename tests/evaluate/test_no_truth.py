"""``hpcdiff evaluate`` on a conditions-only dataset: no truth, so no skill scores; the report holds the
ensemble's own statistics next to the bilinear baseline's, and says why."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from future_world import conditions_only_args, write_future_root
from samples_file import write_samples

from hpcdiff.cli import main
from hpcdiff.data.manifest import read_manifest
from hpcdiff.evaluate.truth import physical, read_dated


@pytest.fixture(scope="module")
def future(tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("no-truth")
    root = write_future_root(tiny[0], base / "root")
    assert main(conditions_only_args(root, base / "ds", tiny[1])) == 0
    return base / "ds"


def test_report_has_only_statistics_that_need_no_truth(future, tmp_path, capsys):
    manifest = read_manifest(future)
    future_dates = [d for d in manifest.splits["all"].dates if d.startswith("2032-")]
    dates = np.asarray(future_dates[:3], "datetime64[D]")
    offsets = np.array([-1.0, 0.0, 1.0, 2.0])  # members: a constant field each, plus the member offset
    fields = {"t2m": np.broadcast_to(280.0 + offsets[None, :, None, None], (3, 4, 32, 32)),
              "tp": np.broadcast_to(0.5 + offsets[None, :, None, None], (3, 4, 32, 32)),
              "e": np.full((3, 4, 32, 32), -1.0)}
    fields["e"][0, 0, 0, 0] = np.nan
    samples = write_samples(tmp_path / "samples.nc", fields, dates=dates, dataset=future)
    out = tmp_path / "report"
    assert main(["evaluate", str(samples), "--dataset", str(future), "--out", str(out), "--no-progress"]) == 0
    assert "there is no truth to score against" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    model = metrics["t2m"]["model"]
    assert model["mean"] == pytest.approx(280.5) and model["std"] == pytest.approx(np.std(offsets))
    assert model["spread"] == pytest.approx(np.std(offsets, ddof=1))
    assert model["min"] == pytest.approx(279.0) and model["max"] == pytest.approx(282.0)
    assert metrics["tp"]["model"]["outside_bounds"] == 3 * 32 * 32  # member 0: -0.5 kg m-2, below 0
    assert metrics["t2m"]["model"]["outside_bounds"] == 0
    assert metrics["tp"]["model"]["wet_day_frequency"] == pytest.approx(0.5)  # members 2 and 3 (>= 1 kg m-2)
    assert metrics["e"]["model"]["non_finite"] == 1 and metrics["e"]["model"]["mean"] == pytest.approx(-1.0)
    with h5py.File(future / "static.h5", "r") as f:
        land = f["lsm"][...] > 0.5
    bilinear = physical(read_dated(manifest, dates, key="cond"), manifest.conditions, ["t2m"])["t2m"]
    assert metrics["t2m"]["bilinear"]["mean"] == pytest.approx(bilinear[:, land].mean(), rel=1e-9)
    for scores in metrics.values():
        assert not {"crps", "bias", "rmse", "mae", "spread_skill", "psd_high_ratio"} & set(scores["model"])
    detail = json.loads((out / "metrics_detail.json").read_text())
    assert detail["meta"]["truth"] is False and set(detail["t2m"]["spectrum"]["psd"]) == {"model", "bilinear"}
    assert main(["evaluate", str(samples), "--dataset", str(future), "--out", str(out), "--no-progress"]) == 0
