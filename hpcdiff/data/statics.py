"""Static channels on the target grid: land–sea mask, orography and the signed distance to the coast.

The signed distance (km, positive on land, negative at sea) is computed on the *full* target grid
before the domain cut, so a coast just outside the cut still counts. Distances are between pixel
centres; the coast is put half a pixel from the last land / first sea pixel, so that
``|sdf| >= dx / 2`` and the sign is the mask.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from hpcdiff.data.recipe import StaticSource
from hpcdiff.data.sources import TargetGrid, read_static_field, read_target_grid
from hpcdiff.errors import HpcdiffError

LAND_THRESHOLD = 0.5  # land-sea fraction at or above which a pixel is land


@dataclasses.dataclass(frozen=True)
class StaticFields:
    """Static fields ``[H, W]`` on the (cut) target grid: ``lsm`` 0/1 float32, ``orography`` m,
    ``sdf`` km (positive on land), ``lat``/``lon`` degrees; ``x`` ``[W]`` / ``y`` ``[H]`` in m."""

    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    lsm: np.ndarray
    orography: np.ndarray
    sdf: np.ndarray


def signed_distance_km(land: np.ndarray, *, dy_km: float, dx_km: float) -> np.ndarray:
    """Signed distance to the coast ``[H, W]`` in km, positive on land. ``land`` ``[H, W]`` bool.
    A grid without any coast gets +/- the grid diagonal everywhere."""
    land = np.asarray(land, bool)
    half = 0.5 * min(dy_km, dx_km)
    if land.all() or not land.any():
        diag = float(np.hypot(land.shape[0] * dy_km, land.shape[1] * dx_km))
        return np.full(land.shape, diag if land.all() else -diag)
    to_sea = ndimage.distance_transform_edt(land, sampling=(dy_km, dx_km))
    to_land = ndimage.distance_transform_edt(~land, sampling=(dy_km, dx_km))
    return np.where(land, to_sea - half, -(to_land - half))


def grid_spacing_km(coord_m: np.ndarray, *, name: str, path: Path) -> float:
    """The constant spacing of a projection coordinate ``[n]`` (m) in km."""
    steps = np.abs(np.diff(coord_m))
    if steps.size == 0 or not np.allclose(steps, steps[0], rtol=1e-4):
        raise HpcdiffError(f"{path}: projection coordinate {name!r} is not evenly spaced")
    return float(steps[0]) / 1000.0


def check_same_grid(grid: TargetGrid, other: TargetGrid, *, path: Path) -> None:
    """``other`` (read from ``path``) must be the same grid as ``grid`` (shape and lat/lon)."""
    if other.lat.shape != grid.lat.shape:
        raise HpcdiffError(f"{path}: grid shape {other.lat.shape} differs from the target grid's "
                           f"{grid.lat.shape}")
    if not (np.allclose(other.lat, grid.lat, atol=1e-5) and np.allclose(other.lon, grid.lon, atol=1e-5)):
        raise HpcdiffError(f"{path}: lat/lon differ from the target grid's")


def load_statics(path: Path, spec: StaticSource, *, grid: TargetGrid,
                 window: tuple[slice, slice]) -> StaticFields:
    """Read the static file (on ``grid``), compute the SDF on the full grid, cut to ``window``."""
    check_same_grid(grid, read_target_grid(path), path=path)
    lsm = read_static_field(path, spec.lsm, units=None)
    orography = read_static_field(path, spec.orography, units=spec.orography_units)
    if lsm.min() < 0 or lsm.max() > 1:
        raise HpcdiffError(f"{path}: land-sea mask {spec.lsm!r} has values outside [0, 1]")
    land = lsm >= LAND_THRESHOLD
    sdf = signed_distance_km(land, dy_km=grid_spacing_km(grid.y, name="y", path=path),
                             dx_km=grid_spacing_km(grid.x, name="x", path=path))
    ys, xs = window
    return StaticFields(lat=grid.lat[ys, xs], lon=grid.lon[ys, xs], x=grid.x[xs], y=grid.y[ys],
                        lsm=land[ys, xs].astype(np.float32), orography=orography[ys, xs], sdf=sdf[ys, xs])

