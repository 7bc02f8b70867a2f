"""Merging part files into the CF-1.8 NetCDF contract: layout, metadata, values in physical units,
the CF checker, and refusal of incomplete input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
from sample_helpers import REPO

from hpcdiff.cli import main
from hpcdiff.data.manifest import read_manifest
from hpcdiff.data.transforms import inverse_transform
from hpcdiff.errors import HpcdiffError
from hpcdiff.provenance import provenance
from hpcdiff.sample import parts
from hpcdiff.sample.ensemble import sample_ensemble
from hpcdiff.sample.merge import default_output, merge_samples
from hpcdiff.sample.plan import read_plan, write_plan


@pytest.fixture(scope="module")
def sampled(tiny_run, make_job, tmp_path_factory):
    out = tmp_path_factory.mktemp("merge") / "samples"
    sample_ensemble(make_job(), tiny_run.run, out, progress=False)
    return out


@pytest.fixture(scope="module")
def merged(sampled):
    return merge_samples(sampled)


def test_default_output_is_next_to_the_folder(tmp_path):
    assert default_output(tmp_path / "demo-out" / "samples") == tmp_path / "demo-out" / "samples.nc"


def test_layout_coordinates_and_values(merged, sampled, tiny_run):
    assert merged == sampled.parent / "samples.nc"
    plan = read_plan(sampled)
    manifest = json.loads((tiny_run.dataset / "manifest.json").read_text())
    with xr.open_dataset(merged) as ds, h5py.File(tiny_run.dataset / "static.h5") as static:
        assert dict(ds.sizes) == {"time": 6, "member": 3, "y": 32, "x": 32, "nv": 2}
        assert [str(t)[:10] for t in ds["time"].values.astype("datetime64[D]")] == plan.dates
        assert ds["member"].values.tolist() == [0, 1, 2]
        np.testing.assert_array_equal(ds["x"].values, static["x"][...])
        np.testing.assert_array_equal(ds["lat"].values, static["lat"][...])
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate" and ds["y"].attrs["units"] == "m"
        assert ds["lon"].attrs == {"standard_name": "longitude", "long_name": "longitude",
                                   "units": "degrees_east"}
        mapping = manifest["grid"]["grid_mapping"]
        assert ds[mapping].attrs["grid_mapping_name"] == manifest["grid"]["projection"]["grid_mapping_name"]
        for c, target in enumerate(manifest["targets"]):
            var = ds[target["name"]]
            assert var.dims == ("time", "member", "y", "x") and var.dtype == np.float32
            assert var.attrs["units"] == target["units"] and var.attrs["grid_mapping"] == mapping
            assert var.encoding["coordinates"] == "lat lon"
            assert var.encoding["chunksizes"] == (1, 3, 32, 32) and var.encoding["zlib"]
            with np.errstate(over="ignore"):  # the 2-step model's samples overflow exp: fine here
                transforms = read_manifest(tiny_run.dataset).target_transforms()
                expected = inverse_transform(transforms, parts.read_part(sampled, plan.dates[4]))[:, c]
            np.testing.assert_array_equal(var.values[4], expected)
        assert ds["t2m"].attrs["standard_name"] == "air_temperature"
        assert ds["tp"].attrs["cell_methods"] == "time: sum"
        assert ds["t2m"].attrs["cell_methods"] == "time: mean"
        assert "negative" in ds["e"].attrs["long_name"]
        assert ds["e"].attrs["standard_name"] == "water_evapotranspiration_amount"
        # physical bounds: no negative precipitation, whatever the (barely trained) model produced
        assert float(ds["tp"].min()) >= 0.0 and ds["tp"].attrs["valid_min"] == 0.0
        assert ds["tp"].attrs["hpcdiff_values_clamped_to_bounds"] >= 0 and "valid_min" not in ds["e"].attrs


def test_global_attributes_name_the_run(merged, tiny_run):
    with netCDF4.Dataset(merged) as nc:
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        time = nc["time"]
        assert (time.units, time.calendar, time.standard_name) == ("days since 1970-01-01", "standard",
                                                                   "time")
    assert attrs["Conventions"] == "CF-1.8" and "hpcdiff merge" in attrs["history"]
    assert attrs["hpcdiff_run"] == str(tiny_run.run.resolve())
    assert attrs["hpcdiff_checkpoint"].endswith("step-00000002") and attrs["hpcdiff_checkpoint_step"] == 2
    assert (attrs["hpcdiff_sampler"], attrs["hpcdiff_steps"], attrs["hpcdiff_members"]) == ("dpmpp_3m", 4, 3)
    assert attrs["hpcdiff_seed"] == 0 and attrs["hpcdiff_dataset"] == str(tiny_run.dataset.resolve())
    state = Path(attrs["hpcdiff_checkpoint"]) / "state.pt"
    assert attrs["hpcdiff_checkpoint_sha256"] == hashlib.sha256(state.read_bytes()).hexdigest()
    software = provenance()
    assert attrs["hpcdiff_version"] == software["hpcdiff"]
    assert attrs["hpcdiff_commit"] == software["hpcdiff_commit"]
    assert json.loads(attrs["software_versions"]) == {k: software[k] for k in
                                                      ("torch", "deepspeed", "numpy", "xarray", "h5py")}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the checker's own (its ioos_sos plugin)
def test_cf_checker_finds_no_errors(merged, tmp_path):
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    report = tmp_path / "cf.json"
    ComplianceChecker.run_checker(str(merged), ["cf:1.8"], verbose=0, criteria="normal",
                                  output_filename=str(report), output_format="json")
    result = json.loads(report.read_text())["cf:1.8"]
    failed = [(r["name"], r["msgs"]) for r in result["high_priorities"] if r["value"][0] < r["value"][1]]
    assert failed == [] and result["high_count"] == 0


def test_incomplete_samples_are_refused_naming_the_missing_dates(sampled, tmp_path, capsys):
    broken = tmp_path / "broken"
    plan = read_plan(sampled)
    write_plan(broken, plan)
    for date in plan.dates[1:4]:
        parts.write_part(broken, date, parts.read_part(sampled, date), attrs={})
    parts.write_part(broken, plan.dates[4], parts.read_part(sampled, plan.dates[4])[:2], attrs={})
    code = main(["merge", str(broken), "--out", str(tmp_path / "out.nc")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    missing = [plan.dates[i] for i in (0, 4, 5)]  # date 4 has 2 of 3 members
    assert f"3 of 6 planned dates have no complete part (3 members): {', '.join(missing)};" in err
    assert not (tmp_path / "out.nc").exists() and list(tmp_path.glob(".out.nc*")) == []


def test_a_long_list_of_missing_dates_is_truncated(sampled, tmp_path):
    dates = [f"2001-01-{d:02d}" for d in range(1, 26)]
    write_plan(tmp_path, dataclasses.replace(read_plan(sampled), dates=dates, members=2))
    with pytest.raises(HpcdiffError, match=r"25 of 25 .*2001-01-10, \.\.\. and 15 more; rerun"):
        merge_samples(tmp_path)


def test_cli_merge_default_output(sampled, tmp_path, capsys):
    link = tmp_path / "again"
    link.symlink_to(sampled, target_is_directory=True)
    assert main(["merge", str(link), "--no-progress"]) == 0
    assert (tmp_path / "again.nc").is_file() and "again.nc" in capsys.readouterr().out


def one_line_error(capsys) -> str:
    """The error line, after checking that it is the last line of stderr and that nothing failed loudly."""
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("hpcdiff: error: ") and "Traceback" not in err and err.count("error") == 1, err
    return last


def test_merge_refuses_a_disk_without_room_for_the_file(sampled, small_disk, capsys):
    disk = small_disk(128)
    assert main(["merge", str(sampled), "--out", str(disk / "samples.nc"), "--no-progress"]) == 1
    err = one_line_error(capsys)
    assert (f"{disk}: not enough free space for the merged file samples.nc: needs 240.0 KiB, 128.0 KiB free"
            in err)
    assert list(disk.iterdir()) == []


def sample_into(out, tiny_run, *sets):
    return main(["sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(tiny_run.run),
                 "--out", str(out), "--no-progress", "--set", "dates.limit=2", "--set", "sample.steps=2",
                 *[a for s in sets for a in ("--set", s)]])


def leftovers(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if p.name.endswith(".tmp"))


def test_sampling_refuses_a_disk_without_room_for_a_part(tiny_run, small_disk, capsys):
    disk = small_disk(48)
    assert sample_into(disk / "s", tiny_run) == 1
    err = one_line_error(capsys)
    assert f"{disk / 's' / 'parts'}: not enough free space for the part " in err
    assert not (disk / "s" / "parts").exists() or list((disk / "s" / "parts").iterdir()) == []
    assert leftovers(disk) == []


def test_a_disk_that_fills_up_while_sampling_ends_in_one_line(tiny_run, small_disk, capsys, monkeypatch):
    monkeypatch.setattr("hpcdiff.sample.parts.require_free_space", lambda *a, **kw: None)  # "it fitted"
    disk = small_disk(48)
    assert sample_into(disk / "s", tiny_run) == 1
    err = one_line_error(capsys)
    assert err.endswith(f"{disk / 's' / 'parts'}/2001-09-08.h5: cannot write (no space left on the device); "
                        "nothing was written")
    assert list((disk / "s" / "parts").iterdir()) == [] and leftovers(disk) == []


def test_sampling_refuses_an_edited_manifest(tiny_run, tmp_path, capsys):
    copy = shutil.copytree(tiny_run.dataset, tmp_path / "ds")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["targets"][0]["stats"]["std"] *= 1.5
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert sample_into(tmp_path / "s", tiny_run, f"dataset={copy}") == 1
    assert one_line_error(capsys).endswith(f"{copy}/manifest.json: edited after preprocessing (checksum "
                                           "mismatch); preprocess again")
    assert not (tmp_path / "s").exists()
