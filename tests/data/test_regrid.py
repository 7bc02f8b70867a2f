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
