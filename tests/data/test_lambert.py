"""The Lambert conformal conic projection: forward and inverse agree, the origin maps to (0, 0) and the
scale factor is 1 on the standard parallels."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.data.lambert import LambertConformal


@pytest.mark.parametrize("parallels", [(56.7, 56.7), (50.0, 60.0)])
def test_lambert_round_trip(parallels: tuple[float, float]) -> None:
    proj = LambertConformal(standard_parallels=parallels, central_meridian=8.0, origin_lat=56.7)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(50, 62, 500), rng.uniform(-5, 25, 500)
    x, y = proj.forward(lat, lon)
    back_lat, back_lon = proj.inverse(x, y)
    np.testing.assert_allclose(back_lat, lat, atol=1e-10)
    np.testing.assert_allclose(back_lon, lon, atol=1e-10)
    origin = proj.forward(np.array(56.7), np.array(8.0))
    np.testing.assert_allclose(origin, (0.0, 0.0), atol=1e-6)
    # conformal: the scale factor is 1 on the standard parallels (distances of a 1 m east step)
    for phi in set(parallels):
        x0, y0 = proj.forward(np.array(phi), np.array(8.0))
        x1, y1 = proj.forward(np.array(phi), np.array(8.0 + 1e-4))
        along = np.deg2rad(1e-4) * proj.earth_radius_m * np.cos(np.deg2rad(phi))
        assert abs(float(np.hypot(x1 - x0, y1 - y0)) / along - 1) < 1e-6
