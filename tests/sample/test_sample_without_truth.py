"""Downscaling dates without truth: a conditions-only dataset (ERA5 of 2004 and the same file moved to
2032) normalized like the tiny run's training dataset is sampled by that run, merged, and evaluated
without truth."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import xarray as xr
from future_world import conditions_only_args, future_date, write_future_root

from hpcdiff.cli import main
from hpcdiff.data.manifest import read_manifest
from hpcdiff.sample import parts
from hpcdiff.sample.ensemble import sample_ensemble
from hpcdiff.sample.merge import merge_samples


@pytest.fixture(scope="module")
def future(tiny_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("future")
    root = write_future_root(tiny_run.world, base / "root")
    assert main(conditions_only_args(root, base / "ds", tiny_run.dataset)) == 0
    return base / "ds"


@pytest.fixture(scope="module")
def day(tiny_run):
    """A 2004 date of the training dataset (its 2032 twin has no truth anywhere)."""
    return next(d for d in read_manifest(tiny_run.dataset).split_dates()["test"] if d.startswith("2004-"))


def test_a_shared_date_samples_the_same_members_from_both_datasets(tiny_run, make_job, future, day, tmp_path):
    job = make_job(f"dates.dates=[{day}]", "sample.members=2")
    sample_ensemble(job, tiny_run.run, tmp_path / "trained", progress=False)
    sample_ensemble(make_job(f"dates.dates=[{day}]", "sample.members=2", f"dataset={future}"), tiny_run.run,
                    tmp_path / "future", progress=False)
    np.testing.assert_array_equal(parts.read_part(tmp_path / "future", day),
                                  parts.read_part(tmp_path / "trained", day))


def test_sample_merge_and_evaluate_dates_without_truth(tiny_run, make_job, future, day, tmp_path, capsys):
    first = future_date(day)
    last = str(np.datetime64(first) + 1)
    job = make_job(f"dataset={future}", f"dates.start={first}", f"dates.end={last}")
    done = sample_ensemble(job, tiny_run.run, tmp_path / "samples", progress=False)
    assert done.written == [first, last] and done.samples == 2 * 3
    merged = merge_samples(tmp_path / "samples")
    training = read_manifest(tiny_run.dataset)
    with xr.open_dataset(merged) as ds:
        assert [str(t)[:10] for t in ds["time"].values] == [first, last]
        assert {c.name: ds[c.name].attrs["units"] for c in training.targets} == \
            {c.name: c.units for c in training.targets}
        fields = {c.name: ds[c.name].transpose("time", "member", "y", "x").values for c in training.targets}
    assert all(f.shape == (2, 3, 32, 32) and np.isfinite(f).all() for f in fields.values())

    report = tmp_path / "report"
    assert main(["evaluate", str(merged), "--dataset", str(future), "--out", str(report),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{future} is a conditions-only dataset" in err and "there is no truth" in err
    metrics = json.loads((report / "metrics.json").read_text())
    with h5py.File(future / "static.h5", "r") as f:
        land = f["lsm"][...] > 0.5
    for name, values in fields.items():
        assert set(metrics[name]) == {"model", "bilinear"}
        assert not {"crps", "rmse", "bias", "spread_skill"} & set(metrics[name]["model"])
        assert metrics[name]["model"]["mean"] == pytest.approx(values[..., land].mean(dtype=np.float64),
                                                               rel=1e-6)
    detail = json.loads((report / "metrics_detail.json").read_text())
    assert detail["meta"]["truth"] is False and detail["meta"]["normalization_from"] == \
        str(tiny_run.dataset.resolve())
    assert "no truth" in (report / "report.md").read_text()

    assert main(["evaluate", str(merged), "--dataset", str(tiny_run.dataset), "--out",
                 str(tmp_path / "against-training"), "--no-progress"]) == 1
    assert f"no truth for 2 sample date(s): {first}, {last}" in capsys.readouterr().err
