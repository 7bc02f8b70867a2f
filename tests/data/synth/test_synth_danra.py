"""The ``danra`` preset: DANRA's projection and 589 x 789 grid with the real land-sea mask, and the
other presets still on the projection they always had."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest

from hpcdiff.cli import main
from hpcdiff.data.lambert import LambertConformal
from hpcdiff.data.synth import World, bilinear_baseline, load_world, write_world
from hpcdiff.data.synth.geometry import build_world
from hpcdiff.data.synth.law import PRESETS, get_preset
from hpcdiff.data.transforms import inverse

REPO = Path(__file__).resolve().parents[3]
DANRA_CF = {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [56.7, 56.7],
            "longitude_of_central_meridian": 25.0, "latitude_of_projection_origin": 56.7,
            "false_easting": 0.0, "false_northing": 0.0, "earth_radius": 6367470.0}
# the projection every preset but danra has always used (central meridian 8 E, HARMONIE's radius)
OLD_CF = {**DANRA_CF, "longitude_of_central_meridian": 8.0, "earth_radius": 6371229.0}
PLACES = {"Copenhagen": (55.68, 12.57), "Skagen": (57.72, 10.58), "Esbjerg": (55.47, 8.45),
          "Ronne": (55.10, 14.70)}


def test_other_presets_keep_their_projection(world: World) -> None:
    for name in ("tiny", "demo", "bench"):
        assert PRESETS[name].projection.cf_attributes() == OLD_CF, name
    meta = json.loads((world.root / "world.json").read_text())
    assert meta["target_grid"]["grid_mapping"] == OLD_CF
    assert meta["target_grid"]["shape"] == [32, 32] and meta["target_grid"]["dx_m"] == 2500.0


def test_danra_projection_round_trips_through_cf() -> None:
    projection = get_preset("danra").projection
    assert projection.cf_attributes() == DANRA_CF
    assert LambertConformal.from_cf(DANRA_CF) == projection
    lat, lon = np.array([55.68, 57.72, 48.0, 64.0]), np.array([12.57, 10.58, -9.0, 27.0])
    back = projection.inverse(*projection.forward(lat, lon))
    np.testing.assert_allclose(back, (lat, lon), atol=1e-10)


def _cell(world: World, lat: float, lon: float) -> tuple[int, int]:
    """The ``(row, column)`` of the cell holding the point ``lat``/``lon`` (degrees)."""
    x, y = world.grid.projection.forward(np.array(lat), np.array(lon))
    dx = world.grid.dx_m
    return int(np.round((y - world.grid.y[0]) / dx)), int(np.round((x - world.grid.x[0]) / dx))


def test_danra_grid_holds_denmark_well_inside(tmp_path: Path) -> None:
    world = build_world(tmp_path, get_preset("danra"), seed=0)
    assert world.shape == (589, 789) and world.lsm.shape == (589, 789)
    np.testing.assert_array_equal(np.diff(world.grid.x), 2500.0)
    np.testing.assert_array_equal(np.diff(world.grid.y), 2500.0)
    for name, (lat, lon) in PLACES.items():
        row, col = _cell(world, lat, lon)
        assert 150 < row < 589 - 150 and 200 < col < 789 - 200, (name, row, col)
        assert abs(world.lat[row, col] - lat) < 0.02 and abs(world.lon[row, col] - lon) < 0.03, name
        assert world.lsm[row, col] == 1.0, name
    # a real mask: North Sea and Baltic water, Scandinavian and continental land
    assert world.lsm[_cell(world, 56.5, 5.0)] == 0.0 and world.lsm[_cell(world, 55.5, 17.0)] == 0.0
    assert world.lsm[_cell(world, 52.5, 13.4)] == 1.0 and world.lsm[_cell(world, 60.0, 10.0)] == 1.0
    assert 0.3 < world.lsm.mean() < 0.8
    # the grid crosses 0 deg E: the ERA5 box has negative western longitudes, ascending
    assert world.era5_lon[0] < 0 < world.era5_lon[-1] and np.all(np.diff(world.era5_lon) == 0.25)


def _split(dataset: Path, name: str, key: str) -> tuple[dict, np.ndarray]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    parts = []
    for shard in manifest["splits"][name]["shards"]:
        with h5py.File(dataset / shard["path"], "r") as f:
            parts.append(f[key][...])
    return manifest, np.concatenate(parts)


@pytest.mark.slow
def test_danra_world_writes_and_preprocesses_with_the_shipped_recipe(tmp_path: Path) -> None:
    """The real preset end to end: ``hpcdiff synth --preset danra`` and the shipped recipe unchanged;
    the conditions are the generator's bilinear baseline, through both ERA5 layouts across 0 deg E."""
    root = write_world(tmp_path / "world", preset="danra", seed=0, progress=False)
    for path in [root / "static" / "static.nc", *sorted((root / "danra").glob("*.nc"))[:2]]:
        with netCDF4.Dataset(path) as ds:
            mapping = ds["lambert_conformal_conic"]
            attrs = {k: mapping.getncattr(k) for k in mapping.ncattrs()}
            assert {**attrs, "standard_parallel": list(attrs["standard_parallel"])} == DANRA_CF, path
            assert ds.dimensions["y"].size == 589 and ds.dimensions["x"].size == 789
    world = load_world(root)
    assert world.grid.projection == get_preset("danra").projection and world.shape == (589, 789)
    assert sum(d.size for d in world.dates.values()) == 15 * 2
    out = tmp_path / "ds"
    assert main(["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(out),
                 "--no-progress", "--set", f"root={root}"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["grid"]["shape"] == [589, 789] and manifest["grid"]["projection"] == DANRA_CF
    for split in ("val", "test"):  # val: 2000, legacy nc3 (longitudes -180..180); test: both layouts
        manifest, cond = _split(out, split, "cond")
        dates = np.array(manifest["splits"][split]["dates"], dtype="datetime64[D]")
        baseline = bilinear_baseline(world, dates)
        for c, channel in enumerate(manifest["conditions"][:3]):
            want = baseline[channel["name"]].values
            got = inverse(cond[:, c], channel["stats"])
            np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), err_msg=channel["name"])
