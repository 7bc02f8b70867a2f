"""Bilinear regridding: exact on linear fields, independent of axis order and longitude convention."""

from __future__ import annotations

import numpy as np
import pytest
from mini_world import ERA5_LAT, ERA5_LON, target_grid

from hpcdiff.data.regrid import apply_bilinear, plan_bilinear
from hpcdiff.errors import HpcdiffError


def linear(lat, lon):
    return 3.0 + 0.7 * lat - 0.2 * lon


def test_linear_fields_are_reproduced_exactly():
    _, _, lat, lon = target_grid()
    src = linear(*np.meshgrid(ERA5_LAT, ERA5_LON, indexing="ij"))
    plan = plan_bilinear(ERA5_LAT, ERA5_LON, lat, lon)
    np.testing.assert_allclose(plan.matrix.sum(axis=1), 1.0)
    out = apply_bilinear(plan, np.stack([src, 2 * src])[None])  # [1, 2, n_lat, n_lon]
    assert out.shape == (1, 2, *lat.shape)
    np.testing.assert_allclose(out[0, 0], linear(lat, lon), atol=1e-10)
    np.testing.assert_allclose(out[0, 1], 2 * linear(lat, lon), atol=1e-10)


def test_axis_order_and_longitude_convention_do_not_matter():
    _, _, lat, lon = target_grid()
    rng = np.random.default_rng(0)
    field = rng.normal(size=(ERA5_LAT.size, ERA5_LON.size))
    reference = apply_bilinear(plan_bilinear(ERA5_LAT, ERA5_LON, lat, lon), field)
    flipped = apply_bilinear(plan_bilinear(ERA5_LAT[::-1], ERA5_LON, lat, lon), field[::-1])
    np.testing.assert_allclose(flipped, reference, atol=1e-12)
    # a grid straddling Greenwich, given as 0..360 and unsorted
    src_lon = np.array([0.0, 0.5, 1.0, 359.0, 359.5])
    values = np.array([[0.0, 0.5, 1.0, -1.0, -0.5]] * 2)
    plan = plan_bilinear(np.array([50.0, 51.0]), src_lon, np.array([[50.5, 50.5]]), np.array([[-0.75, 0.25]]))
    np.testing.assert_allclose(apply_bilinear(plan, values), [[-0.75, 0.25]], atol=1e-12)


def test_target_outside_the_source_is_an_error():
    with pytest.raises(HpcdiffError, match="era5_x.nc: target latitude 60.000 lies outside"):
        plan_bilinear(ERA5_LAT, ERA5_LON, np.array([[60.0]]), np.array([[10.0]]), where="era5_x.nc")


def test_a_rotated_pole_is_regridded_in_its_own_coordinates():
    """A field linear in (rlat, rlon) of EURO-CORDEX's rotated pole is reproduced exactly at the target
    points, which regridding in the 2-D geographic lat/lon would not do."""
    from hpcdiff.data.regrid import to_rotated_pole
    from hpcdiff.data.synth.cordex import POLE

    _, _, lat, lon = target_grid()
    rlat, rlon = to_rotated_pole(lat, lon, POLE, where="test")
    assert 3 < rlat.mean() < 8 and -6 < rlon.mean() < 0  # Denmark in EUR-11's frame
    rlat_axis = np.arange(np.floor(rlat.min()) - 1, np.ceil(rlat.max()) + 1.5, 0.44)
    rlon_axis = np.arange(np.floor(rlon.min()) - 1, np.ceil(rlon.max()) + 1.5, 0.44)
    src = linear(*np.meshgrid(rlat_axis, rlon_axis, indexing="ij"))
    out = apply_bilinear(plan_bilinear(rlat_axis, rlon_axis, rlat, rlon), src)
    np.testing.assert_allclose(out, linear(rlat, rlon), atol=1e-9)
    with pytest.raises(HpcdiffError, match="f.nc: grid mapping 'rotated_latitude_longitude' is not usable"):
        to_rotated_pole(lat, lon, {"grid_mapping_name": "rotated_latitude_longitude"}, where="f.nc")
