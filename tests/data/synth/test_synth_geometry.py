"""The target grid and statics of a written world, and reading a world back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hpcdiff.data.lambert import LambertConformal
from hpcdiff.data.synth import World, load_world
from hpcdiff.errors import HpcdiffError


def test_target_grid_and_statics(world: World) -> None:
    with xr.open_dataset(world.static_path) as st, xr.open_dataset(world.danra_path(1995)) as dn:
        for ds in (st, dn):
            for axis in ("x", "y"):
                np.testing.assert_array_equal(np.diff(ds[axis].values), 2500.0)
            assert ds["lambert_conformal_conic"].attrs["grid_mapping_name"] == "lambert_conformal_conic"
        proj = LambertConformal.from_cf(st["lambert_conformal_conic"].attrs)
        lat, lon = proj.inverse(*np.meshgrid(st["x"].values, st["y"].values))
        np.testing.assert_allclose(st["lat"].values, lat, atol=1e-9)
        np.testing.assert_allclose(st["lon"].values, lon, atol=1e-9)
        assert abs(float(st["lat"].mean()) - 56.0) < 0.05 and abs(float(st["lon"].mean()) - 10.5) < 0.05
        lsm, oro = st["lsm"].values, st["orography"].values
        assert 0.05 < lsm.mean() < 0.95 and set(np.unique(lsm)) == {0.0, 1.0}
        assert np.all(oro[lsm == 0] == 0) and 20 < oro.max() < 400 and oro.min() >= 0
        assert dn["t2m"].dims == ("time", "y", "x")
        assert dn["t2m"].attrs["grid_mapping"] == "lambert_conformal_conic"
        assert dn["tp"].attrs["units"] == "kg m-2" and float(dn["tp"].min()) >= 0
        times = dn["time"].values
        np.testing.assert_array_equal(times, world.dates[1995].astype("datetime64[ns]"))


def test_load_world_of_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(HpcdiffError, match="world.json"):
        load_world(tmp_path / "nowhere")
