"""Bilinear regridding from a regular lat/lon grid onto a curvilinear target grid (2-D lat/lon).

Planning is separate from applying: :func:`plan_bilinear` computes, once, a sparse matrix
``[H * W, n_lat * n_lon]`` with four weights per target point (interpolation in degrees of lat/lon,
as the synthetic world defines its truth); :func:`apply_bilinear` is then one sparse product per
block of days. The source axes may be in any order (latitude descending as CDS delivers it,
longitudes 0..360 or -180..180): the plan sorts them and maps back to the file's indices, so the
data are used exactly as read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse

from hpcdiff.errors import HpcdiffError

ROWS_PER_PRODUCT = 8  # fields per sparse product: keeps the transpose of its result in cache


@dataclasses.dataclass(frozen=True)
class BilinearPlan:
    """``matrix`` ``[H * W, n_lat * n_lon]`` (CSR, rows sum to 1); ``src_shape`` ``(n_lat, n_lon)``;
    ``dst_shape`` ``(H, W)``."""

    matrix: scipy.sparse.csr_matrix
    src_shape: tuple[int, int]
    dst_shape: tuple[int, int]


def wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes in degrees wrapped to [-180, 180)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def _axis_weights(src: np.ndarray, dst: np.ndarray, *, name: str, where: str) -> tuple[np.ndarray, ...]:
    """For each ``dst`` value: the file indices of its two bracketing ``src`` values and the weight of
    the upper one. ``src`` ``[n]`` in any order (strictly monotonic after sorting), ``dst`` ``[m]``."""
    order = np.argsort(src, kind="stable")
    srt = src[order]
    if srt.size < 2 or np.any(np.diff(srt) <= 0):
        raise HpcdiffError(f"{where}: source {name} axis must have at least 2 distinct values")
    outside = (dst < srt[0]) | (dst > srt[-1])
    if outside.any():
        bad = float(dst[outside][0])
        raise HpcdiffError(f"{where}: target {name} {bad:.3f} lies outside the source grid "
                           f"[{srt[0]:.3f}, {srt[-1]:.3f}]; widen the ERA5 area")
    lo = np.clip(np.searchsorted(srt, dst, side="right") - 1, 0, srt.size - 2)
    frac = (dst - srt[lo]) / (srt[lo + 1] - srt[lo])
    return order[lo], order[lo + 1], frac


def to_rotated_pole(lat: np.ndarray, lon: np.ndarray, mapping: dict, *, where: str) -> tuple[np.ndarray, ...]:
    """Rotated latitude and longitude (degrees, same shape) of geographic ``lat``/``lon`` in the frame of a
    CF ``rotated_latitude_longitude`` grid mapping (pyproj). A rotated-pole source (CORDEX) is regridded
    bilinearly in its own coordinates, where its grid is regular, not in its curvilinear 2-D lat/lon."""
    import pyproj

    try:
        crs = pyproj.CRS.from_cf(mapping)
    except Exception as err:  # pyproj raises CRSError and KeyError for incomplete mappings
        raise HpcdiffError(f"{where}: grid mapping {mapping.get('grid_mapping_name')!r} is not usable "
                           f"({type(err).__name__}: {err})") from None
    transformer = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    rlon, rlat = transformer.transform(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    return np.asarray(rlat), np.asarray(rlon)


def plan_bilinear(src_lat: np.ndarray, src_lon: np.ndarray, dst_lat: np.ndarray, dst_lon: np.ndarray, *,
                  where: str = "regrid") -> BilinearPlan:
    """Bilinear weights from a regular source grid (1-D ``src_lat`` ``[n_lat]``, ``src_lon`` ``[n_lon]``,
    degrees, file order) to target points ``dst_lat``/``dst_lon`` ``[H, W]`` (degrees). ``where`` names
    the source in errors (a target point outside the source grid)."""
    dst_lat, dst_lon = np.asarray(dst_lat, np.float64), np.asarray(dst_lon, np.float64)
    assert dst_lat.shape == dst_lon.shape and dst_lat.ndim == 2, (dst_lat.shape, dst_lon.shape)
    n_lat, n_lon = len(src_lat), len(src_lon)
    i0, i1, wy = _axis_weights(np.asarray(src_lat, np.float64), dst_lat.ravel(), name="latitude", where=where)
    j0, j1, wx = _axis_weights(wrap_lon(src_lon), wrap_lon(dst_lon.ravel()), name="longitude", where=where)
    rows = np.repeat(np.arange(dst_lat.size), 4)
    cols = np.stack([i0 * n_lon + j0, i0 * n_lon + j1, i1 * n_lon + j0, i1 * n_lon + j1], axis=1).ravel()
    vals = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], axis=1).ravel()
    matrix = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(dst_lat.size, n_lat * n_lon))
    return BilinearPlan(matrix=matrix, src_shape=(n_lat, n_lon), dst_shape=dst_lat.shape)


def apply_bilinear(plan: BilinearPlan, field: np.ndarray) -> np.ndarray:
    """Regrid ``field`` ``[..., n_lat, n_lon]`` (file order) → ``[..., H, W]``, float64.

    The sparse product gives pixel-major ``[H * W, k]`` blocks; they are transposed :data:`ROWS_PER_PRODUCT`
    fields at a time, which stays in cache (one transpose of ``[H * W, all fields]`` does not)."""
    assert field.shape[-2:] == plan.src_shape, (field.shape, plan.src_shape)
    lead = field.shape[:-2]
    flat = np.asarray(field, np.float64).reshape(-1, plan.src_shape[0] * plan.src_shape[1])
    out = np.empty((flat.shape[0], plan.dst_shape[0] * plan.dst_shape[1]))
    for start in range(0, flat.shape[0], ROWS_PER_PRODUCT):
        rows = slice(start, start + ROWS_PER_PRODUCT)
        out[rows] = (plan.matrix @ flat[rows].T).T
    return out.reshape(*lead, *plan.dst_shape)
