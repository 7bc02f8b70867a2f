"""EURO-CORDEX input end to end: synthetic CORDEX files as ESGF delivers them (one file per variable
and period, CMOR names and units, rotated pole, 360_day or noleap calendar) preprocessed as a
conditions-only dataset normalized like the tiny run's ERA5 dataset, sampled on dates only the model
calendar has, merged into a NetCDF that carries the calendar, and evaluated without truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import cftime
import numpy as np
import pytest
import xarray as xr

from hpcdiff.cli import main
from hpcdiff.data.manifest import read_manifest
from hpcdiff.data.synth import load_world
from hpcdiff.data.synth.cordex import write_cordex
from hpcdiff.sample.ensemble import sample_ensemble
from hpcdiff.sample.merge import merge_samples
from hpcdiff.timeaxis import day_numbers

REPO = Path(__file__).resolve().parents[2]

CORDEX_VARIABLES = ("era5.variables=["
                    "{name: t2m, source: tas, units: K}, "
                    "{name: tp, source: pr, units: kg m-2 s-1, kind: flux, transform: log1p, scale: 1.0}, "
                    "{name: e, source: evspsbl, units: kg m-2 s-1, kind: flux, multiply: -1, "
                    "transform: asinh, scale: 0.5}, "
                    "{name: msl, source: psl, units: Pa}, {name: u10, source: uas, units: m s-1}, "
                    "{name: v10, source: vas, units: m s-1}]")


def preprocess_cordex(world, root, out, training, calendar):
    """The shipped EURO-CORDEX template over synthetic CORDEX files of ``world``."""
    write_cordex(load_world(world), root / "cordex", calendar=calendar)
    (root / "static").mkdir()
    shutil.copy(world / "static" / "static.nc", root / "static" / "static.nc")
    sets = [f"root={root}", "era5.files=[cordex/*_day_*.nc]", f"normalization.dataset={training}",
            "static.file=static/static.nc", "domain=null"]
    args = ["preprocess", str(REPO / "preprocess" / "eurocordex_template.yaml"), "--out", str(out),
            "--no-progress"]
    return main([*args, *[a for s in sets for a in ("--set", s)]])


@pytest.fixture(scope="module")
def cordex_360(tiny_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("cordex")
    assert preprocess_cordex(tiny_run.world, base / "root", base / "ds", tiny_run.dataset, "360_day") == 0
    return base / "ds"


def test_the_dataset_keeps_the_model_calendar(cordex_360, tiny_run):
    manifest = read_manifest(cordex_360)
    assert manifest.calendar == "360_day" and manifest.conditions_only
    dates = manifest.split_dates()["all"]
    # the world's 1999 block starts on 02-26: in 360_day February has a 29th and a 30th, then March
    assert [d for d in dates if d.startswith("1999-")] == \
        ["1999-02-26", "1999-02-27", "1999-02-28", "1999-02-29", "1999-02-30", "1999-03-01"]
    assert manifest.fingerprint() == read_manifest(tiny_run.dataset).fingerprint()


def test_sample_and_merge_dates_only_the_model_calendar_has(cordex_360, tiny_run, make_job, tmp_path, capsys):
    job = make_job(f"dataset={cordex_360}", "dates.start=1999-02-29", "dates.end=1999-03-01")
    done = sample_ensemble(job, tiny_run.run, tmp_path / "samples", progress=False)
    assert done.written == ["1999-02-29", "1999-02-30", "1999-03-01"]
    merged = merge_samples(tmp_path / "samples")
    with xr.open_dataset(merged, decode_times=False) as raw:
        assert raw["time"].attrs["calendar"] == "360_day"
        np.testing.assert_array_equal(raw["time"].values,
                                      day_numbers(["1999-02-29", "1999-02-30", "1999-03-01"], "360_day"))
    with xr.open_dataset(merged, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        assert [(t.month, t.day) for t in ds["time"].values] == [(2, 29), (2, 30), (3, 1)]
        assert isinstance(ds["time"].values[0], cftime.Datetime360Day)
        assert float(ds["tp"].min()) >= 0.0 and np.isfinite(ds["t2m"].values).all()
    assert main(["evaluate", str(merged), "--dataset", str(cordex_360), "--out", str(tmp_path / "report"),
                 "--no-progress"]) == 0
    assert "there is no truth" in capsys.readouterr().err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "360_day" in report and "1999-02-29" in report and "1999-03-01" in report


def test_a_date_the_calendar_lacks_is_refused(cordex_360, tiny_run, make_job, tmp_path):
    from hpcdiff.errors import HpcdiffError
    with pytest.raises(HpcdiffError, match="'1999-02-31' is not a date of the 360_day calendar"):
        sample_ensemble(make_job(f"dataset={cordex_360}", "dates.dates=[1999-02-31]"), tiny_run.run,
                        tmp_path / "s", progress=False)


def test_noleap_has_no_29th_of_february(tiny_run, tmp_path):
    out = tmp_path / "ds"
    assert preprocess_cordex(tiny_run.world, tmp_path / "root", out, tiny_run.dataset, "noleap") == 0
    manifest = read_manifest(tmp_path / "ds")
    dates = manifest.split_dates()["all"]
    assert manifest.calendar == "noleap"
    assert [d for d in dates if d.startswith("1999-0")] == \
        ["1999-02-26", "1999-02-27", "1999-02-28", "1999-03-01", "1999-03-02", "1999-03-03"]


def test_targets_need_the_standard_calendar(tiny_run, tmp_path, capsys):
    root = tmp_path / "root"
    write_cordex(load_world(tiny_run.world), root / "cordex", calendar="360_day")
    sets = [f"root={tiny_run.world}", f"era5.files=[{root}/cordex/*_day_*.nc]", CORDEX_VARIABLES]
    args = ["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(tmp_path / "ds"),
            "--no-progress", *[a for s in sets for a in ("--set", s)]]
    assert main(args) == 1
    assert "the inputs use the 360_day calendar; a dataset with targets needs standard-calendar inputs" in \
        capsys.readouterr().err
