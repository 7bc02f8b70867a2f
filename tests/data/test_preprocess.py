"""End-to-end preprocessing on the minimal world: manifest, statistics, physical content, statics,
atomic replacement, and one-line errors with nothing left behind for every kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
from mini_world import expected_era5, land_mask, target_grid, write_mini_world, write_recipe

from hpcdiff.cli import main
from hpcdiff.config import load_config
from hpcdiff.data.manifest import parse_manifest, read_manifest
from hpcdiff.data.recipe import PreprocessRecipe
from hpcdiff.data.split import split_dates
from hpcdiff.data.transforms import inverse, inverse_transform
from hpcdiff.fsutil import temporary_name

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_mini_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def dataset(world, tmp_path_factory):
    base = tmp_path_factory.mktemp("pre")
    recipe = write_recipe(base / "recipe.yaml", world)
    out = base / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return out


def read_split(dataset, name, key):
    manifest = json.loads((dataset / "manifest.json").read_text())
    parts = [h5py.File(dataset / s["path"], "r")[key][...] for s in manifest["splits"][name]["shards"]]
    return manifest, np.concatenate(parts)


def test_typed_manifest_reads_what_was_written(dataset):
    """The typed reader gives every stage the same view: channels with statistics, physical bounds and
    residual scales, grid, shards with sizes; its fingerprint changes with any statistic."""
    manifest = read_manifest(dataset)
    raw = json.loads((dataset / "manifest.json").read_text())
    assert manifest.target_names == [c["name"] for c in raw["targets"]]
    assert {c.name: c.bounds for c in manifest.targets} == {"t2m": (0.0, None), "tp": (0.0, None),
                                                            "e": (None, None)}
    # the mini world's tp target is its condition times unit-mean gamma noise: a residual about as wide
    # as the target itself; t2m and e targets are their conditions plus small noise
    rms = {c.name: c.residual_rms for c in manifest.targets}
    assert 0 < rms["t2m"] < 0.5 and 0 < rms["e"] < 0.5 and 0.5 < rms["tp"] < 1.5, rms
    for split in manifest.splits.values():
        for shard in split.shards:
            assert (dataset / shard.path).stat().st_size == shard.bytes
    assert manifest.grid.shape == tuple(raw["grid"]["shape"])
    raw["conditions"][0]["stats"]["mean"] += 1e-9
    assert parse_manifest(raw, root=dataset).fingerprint() != manifest.fingerprint()


def test_manifest_layout_and_split(dataset, world):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert [c["name"] for c in manifest["targets"]] == ["t2m", "tp", "e"]
    assert [c["name"] for c in manifest["conditions"]] == ["t2m", "tp", "e", "msl"]
    assert [c["units"] for c in manifest["conditions"]] == ["K", "kg m-2", "kg m-2", "Pa"]
    assert [c["name"] for c in manifest["static_channels"]] == ["lsm", "orography", "sdf"]
    assert manifest["grid"]["shape"] == list(land_mask().shape)
    assert manifest["grid"]["projection"]["grid_mapping_name"] == "lambert_conformal_conic"
    counts = {k: v["n"] for k, v in manifest["splits"].items()}
    assert counts == {"train": 24, "val": 12, "test": 5}
    recipe = load_config(PreprocessRecipe, dataset / "recipe.yaml")
    assert recipe.root == world
    all_dates = np.concatenate([np.datetime64(f"{y}-01-01") + np.arange(12) for y in range(2000, 2004)])
    want = split_dates(all_dates, recipe.split, where="x")["test"]
    assert manifest["splits"]["test"]["dates"] == [str(d) for d in want]
    _, days = read_split(dataset, "test", "time")
    assert [str(np.datetime64(int(d), "D")) for d in days] == manifest["splits"]["test"]["dates"]


def test_land_mean_of_transformed_training_targets_is_zero(dataset):
    _, target = read_split(dataset, "train", "target")
    land = land_mask()
    on_land = target[:, :, land]  # [N, Ct, n_land]
    np.testing.assert_allclose(on_land.mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(on_land.std(axis=(0, 2)), 1.0, atol=1e-4)
    _, val = read_split(dataset, "val", "target")
    assert np.abs(val[:, :, land].mean(axis=(0, 2))).max() > 1e-3  # other splits are not re-fitted


def test_conditions_are_daily_aggregates_regridded_in_physical_units(dataset):
    manifest, cond = read_split(dataset, "val", "cond")  # 2002: nc3 flavour, int16-packed
    dates = np.array(manifest["splits"]["val"]["dates"], dtype="datetime64[D]")
    _, _, lat, lon = target_grid()
    for c, channel in enumerate(manifest["conditions"]):
        physical = inverse(cond[:, c], channel["stats"])
        want = expected_era5(channel["name"], dates, lat, lon)
        tol = {"t2m": 0.01, "msl": 0.5}.get(channel["name"], 2e-3 * np.abs(want).max())
        np.testing.assert_allclose(physical, want, atol=tol, err_msg=channel["name"])


def test_targets_invert_to_the_files(dataset, world):
    manifest, target = read_split(dataset, "test", "target")
    physical = inverse_transform(read_manifest(dataset).target_transforms(), target)
    dates = np.array(manifest["splits"]["test"]["dates"], dtype="datetime64[D]")
    with netCDF4.Dataset(world / "danra" / "danra_2003.nc") as ds:
        index = (dates - np.datetime64("2003-01-01")).astype(int)
        for c, name in enumerate(("t2m", "tp", "e")):
            np.testing.assert_allclose(physical[:, c], ds[name][index], rtol=1e-5, atol=1e-6)


def test_static_file(dataset):
    with h5py.File(dataset / "static.h5", "r") as f:
        lsm, sdf, oro = f["lsm"][...], f["sdf"][...], f["orography"][...]
        assert f["sdf"].attrs["units"] == "km"
    np.testing.assert_array_equal(lsm == 1, land_mask())
    assert (sdf[lsm == 1] > 0).all() and (sdf[lsm == 0] < 0).all()
    assert sdf.max() <= 14 * 25 and np.isclose(np.abs(sdf).min(), 12.5)  # half a 25 km pixel
    assert oro.max() > 50


def test_domain_cut_and_compression(world, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", world, compression="zstd")
    out = tmp_path / "cut"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress",
                 "--set", "domain={y: [2, 8], x: [1, 11]}", "--set", "split.test_dates=null"]) == 0
    manifest, cond = read_split(out, "test", "cond")
    assert manifest["grid"]["shape"] == [6, 10] and cond.shape == (12, 4, 6, 10)
    _, _, lat, lon = target_grid()
    dates = np.array(manifest["splits"]["test"]["dates"], dtype="datetime64[D]")
    want = expected_era5("t2m", dates, lat[2:8, 1:11], lon[2:8, 1:11])
    np.testing.assert_allclose(inverse(cond[:, 0], manifest["conditions"][0]["stats"]), want, atol=1e-3)
    with h5py.File(out / manifest["splits"]["test"]["shards"][0]["path"], "r") as f:
        assert f["cond"].chunks == (2, 4, 6, 10) and f["cond"].compression is not None
    assert main(["check", str(out)]) == 0


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_rerun_replaces_a_finished_dataset(world, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", world)
    out = tmp_path / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 0
    (out / "stale").write_text("from an older run")
    killed = temporary_name(out, pid=2**22 + 1)  # a killed run's temporary (no such process)
    (killed / "shards").mkdir(parents=True)
    alive = temporary_name(out)  # a run in progress (this process): never touched
    alive.mkdir()
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress",
                 "--set", "split.test_dates=2"]) == 0
    assert not (out / "stale").exists() and not killed.exists() and alive.is_dir()
    assert json.loads((out / "manifest.json").read_text())["splits"]["test"]["n"] == 2
    alive.rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "r.yaml"]
    assert (out.stat().st_mode & 0o777) == 0o777 & ~current_umask()  # shared like any folder


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(world, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", world)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "precious.txt").write_text("keep me")
    assert main(["preprocess", str(recipe), "--out", str(tmp_path / "home"), "--no-progress"]) == 1
    assert "not a dataset" in capsys.readouterr().err
    assert (tmp_path / "home" / "precious.txt").exists()


def _nc_set(path, name, index, value):
    with netCDF4.Dataset(path, "a") as ds:
        ds[name][index] = value


BAD_INPUTS = {
    # name: (file to damage, damage, words the error must contain)
    "truncated": ("era5/era5_2001.nc", lambda p: p.write_bytes(p.read_bytes()[:3000]), "NetCDF"),
    "not-netcdf": ("era5/era5_2002.nc", lambda p: p.write_text("<html>502 Bad Gateway</html>"),
                   "not a readable NetCDF, GRIB or Zarr input"),
    "missing-variable": ("danra/danra_2001.nc", lambda p: _rename(p, "tp", "pr"), "missing variable 'tp'"),
    "nan": ("era5/era5_2001.nc", lambda p: _nc_set(p, "t2m", (5, 1, 2), np.nan),
            "'t2m' has 1 fill/missing or NaN values, first at 2001-01-01T05:00"),
    "fill": ("era5/era5_2000.nc", lambda p: _nc_set(p, "msl", (30, 0, 0), np.ma.masked),
             "'msl' has 1 fill/missing or NaN values, first at 2000-01-02T06:00"),
    "target-nan": ("danra/danra_2003.nc", lambda p: _nc_set(p, "e", (slice(None), 0, 0), np.nan), "'e' has"),
    "time-axes": ("era5/era5_2002.nc", lambda p: _shorten(p),
                  "'t2m' has no value for 2002-01-12T01:00:00 UTC, needed for 2002-01-12"),
    "no-lat-lon": ("danra/danra_2000.nc", lambda p: _rename(p, "lat", "nav_lat"), "no 2-D 'lat'"),
    "units": ("era5/era5_2003.nc", lambda p: _set_attr(p, "tp", "units", "K"),
              "units 'K' cannot be converted to 'm'"),
}


def _rename(path, old, new):
    with netCDF4.Dataset(path, "a") as ds:
        ds.renameVariable(old, new)


def _set_attr(path, name, attr, value):
    with netCDF4.Dataset(path, "a") as ds:
        ds[name].setncattr(attr, value)


def _shorten(path):
    from mini_world import write_era5
    write_era5(path, 2002, days=11)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file_and_leaves_nothing(case, tmp_path, capsys):
    world = write_mini_world(tmp_path / "world")
    name, damage, words = BAD_INPUTS[case]
    damage(world / name)
    recipe = write_recipe(tmp_path / "r.yaml", world)
    out = tmp_path / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpcdiff: error: "), err
    assert str(world / name) in err[0] and words in err[0], err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "world"]


# ----------------------------------------------------------------- the shipped recipe on `hpcdiff synth`


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from hpcdiff.data.synth import write_world

    base = tmp_path_factory.mktemp("tiny")
    world = write_world(base / "world", preset="tiny", seed=0, progress=False)
    out = base / "ds"
    recipe = REPO / "preprocess" / "synthetic.yaml"
    args = ["preprocess", str(recipe), "--out", str(out), "--no-progress", "--set", f"root={world}"]
    assert main(args) == 0
    return world, out


def test_shipped_recipes_load():
    for name in ("synthetic.yaml", "era5_danra_template.yaml"):
        recipe = load_config(PreprocessRecipe, REPO / "preprocess" / name)
        assert recipe.split.train_years == list(range(1991, 2000)) and recipe.split.test_dates == 100
    cordex = load_config(PreprocessRecipe, REPO / "preprocess" / "eurocordex_template.yaml")
    assert cordex.conditions_only
    assert [v.source for v in cordex.era5.variables][:3] == ["tas", "pr", "evspsbl"]


def test_synthetic_world_matches_the_generators_bilinear_baseline(tiny_dataset):
    from hpcdiff.data.synth import bilinear_baseline, load_world

    world, dataset = tiny_dataset
    assert main(["check", str(dataset)]) == 0
    for split in ("train", "test"):  # train: hourly nc3 + nc4 years; test: 2001-2005
        manifest, cond = read_split(dataset, split, "cond")
        dates = np.array(manifest["splits"][split]["dates"], dtype="datetime64[D]")
        baseline = bilinear_baseline(load_world(world), dates)
        for c, channel in enumerate(manifest["conditions"][:3]):
            want = baseline[channel["name"]].values
            got = inverse(cond[:, c], channel["stats"])
            np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), err_msg=channel["name"])
    _, target = read_split(dataset, "train", "target")
    with h5py.File(dataset / "static.h5", "r") as f:
        land = f["lsm"][...] == 1
    np.testing.assert_allclose(target[:, :, land].mean(axis=(0, 2)), 0.0, atol=1e-5)


@pytest.mark.slow
def test_grib_monthly_files_and_zarr_targets_give_the_netcdf_dataset(dataset, world, tmp_path):
    """The same world as users may hold it: ERA5 as monthly GRIB files written with ecCodes (analyses and
    06/18 UTC forecast steps; the 12th's last accumulation hour in the next month's file for December),
    DANRA as Zarr stores. The dataset equals the NetCDF one to GRIB's 24-bit packing."""
    import xarray as xr
    from era5_layouts import write_grib

    other = tmp_path / "world"
    for year in (2000, 2001, 2002, 2003):
        # January's file ends on the 12th at 23 UTC; the 13th 00 UTC comes from a "February" file
        write_grib(other / "era5" / f"era5_{year}_01.grib", first=f"{year}-01-01T00", last=f"{year}-01-12T23")
        write_grib(other / "era5" / f"era5_{year}_02.grib", first=f"{year}-01-13T00", last=f"{year}-01-13T00")
        with xr.open_dataset(world / "danra" / f"danra_{year}.nc", decode_times=False) as ds:
            store = other / "danra" / f"danra_{year}.zarr"
            ds.chunk({"time": 4, "y": 5, "x": 7}).to_zarr(store, zarr_format=2)
    (other / "static").mkdir()
    (other / "static" / "static.nc").write_bytes((world / "static" / "static.nc").read_bytes())
    recipe = write_recipe(tmp_path / "recipe.yaml", other)
    recipe.write_text(recipe.read_text().replace("era5/era5_*.nc", "era5/era5_*.grib")
                      .replace("danra/danra_*.nc", "danra/danra_*.zarr"))
    out = tmp_path / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 0
    for split in ("train", "val", "test"):
        ref_manifest, ref_target = read_split(dataset, split, "target")
        manifest, target = read_split(out, split, "target")
        assert manifest["splits"][split]["dates"] == ref_manifest["splits"][split]["dates"]
        np.testing.assert_array_equal(target, ref_target)
        cond, ref_cond = read_split(out, split, "cond")[1], read_split(dataset, split, "cond")[1]
        np.testing.assert_allclose(cond, ref_cond, atol=2e-3)  # normalized units; nc3 int16 vs GRIB 24 bits
