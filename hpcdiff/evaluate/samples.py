"""Reading the merged ensemble ``SAMPLES.nc`` that ``hpcdiff merge`` writes, and checking it against the
dataset it is evaluated on.

The contract: CF-1.8 NetCDF with dims ``(time, member, y, x)``; ``time`` in days since 1970-01-01 (any
CF time units decode); one float32 variable per target channel, named as in the manifest, in physical
units (t2m K, tp / e kg m-2); global attributes ``hpcdiff_*`` naming the run, checkpoint, sampler,
steps, members, seed and dataset. Every way a file can break that contract is a one-line
:class:`~hpcdiff.errors.HpcdiffError` naming the file and the problem.

Non-finite values are not a broken contract: ``hpcdiff merge`` keeps the inf of a diverged sample (an
under-trained model) and warns. They are counted here (``Samples.non_finite``) and, once the truth is
known, replaced by the truth's extreme in their direction (:func:`replace_non_finite`): a large error
that keeps every score and plot finite, while the report states how many there were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import TIME_UNITS

DIMS = ("time", "member", "y", "x")
GRID_TOLERANCE_M = 1.0  # projected coordinates closer than this are the same grid


@dataclasses.dataclass(frozen=True)
class Samples:
    """An ensemble in physical units: ``fields[name]`` ``[T, M, H, W]`` float32 for ``dates`` ``[T]``
    (datetime64[D]); ``attrs`` are the file's ``hpcdiff_*`` attributes (JSON-able); ``non_finite[name]``
    counts the NaN / inf values of each field."""

    path: Path
    dates: np.ndarray
    fields: dict[str, np.ndarray]
    attrs: dict[str, Any]
    non_finite: dict[str, int]

    @property
    def members(self) -> int:
        return next(iter(self.fields.values())).shape[1]


def open_netcdf_file(path: Path) -> xr.Dataset:
    """Open ``path`` lazily; a one-line error if it is missing or not NetCDF."""
    path = Path(path)
    if not path.is_file():
        raise HpcdiffError(f"{path}: no such file")
    try:
        return xr.open_dataset(path, engine="netcdf4", decode_times=True)
    except (OSError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0].split(". ")[0] if str(err) else type(err).__name__  # 1st sentence
        raise HpcdiffError(f"{path}: not a readable NetCDF file ({reason})") from None


def check_layout(ds: xr.Dataset, path: Path, *, variables: Mapping[str, str], shape: tuple[int, int]) -> None:
    """Dims, variables (``{name: units}``, units checked where the file states them) and the grid shape
    ``(H, W)`` of the dataset."""
    missing_dims = [d for d in DIMS if d not in ds.dims]
    if missing_dims:
        raise HpcdiffError(f"{path}: missing dimension(s) {', '.join(missing_dims)}; expected {DIMS}")
    if (ds.sizes["y"], ds.sizes["x"]) != tuple(shape):
        raise HpcdiffError(f"{path}: grid is {ds.sizes['y']} x {ds.sizes['x']} (y x x), the dataset's is "
                           f"{shape[0]} x {shape[1]}")
    for name, units in variables.items():
        if name not in ds.data_vars:
            present = ", ".join(map(str, ds.data_vars))
            raise HpcdiffError(f"{path}: variable {name!r} is missing (has {present})")
        var = ds[name]
        if set(var.dims) != set(DIMS):
            raise HpcdiffError(f"{path}: variable {name!r} has dims {var.dims}, expected {DIMS}")
        stated = var.attrs.get("units")
        if stated is not None and str(stated) != units:
            raise HpcdiffError(f"{path}: variable {name!r} is in {stated!r}, the dataset's unit is {units!r}")


def check_coordinates(ds: xr.Dataset, path: Path, *, x: np.ndarray, y: np.ndarray) -> None:
    """The projected ``x`` ``[W]`` / ``y`` ``[H]`` (m) of the file, where it has them, match the dataset's."""
    for name, expected in (("x", x), ("y", y)):
        if name in ds.coords and not np.allclose(ds[name].values, expected, rtol=0, atol=GRID_TOLERANCE_M):
            raise HpcdiffError(f"{path}: coordinate {name!r} differs from the dataset's grid "
                               f"(max difference {np.abs(ds[name].values - expected).max():.1f} m)")


def sample_dates(ds: xr.Dataset, path: Path) -> np.ndarray:
    """The file's dates ``[T]`` datetime64[D]; a one-line error for undecodable or repeated times. Dates
    of a non-standard calendar (cftime objects) are ``1970-01-01 + day number`` of their calendar, the
    dataset's own time axis (see :mod:`hpcdiff.timeaxis`)."""
    values = ds["time"].values
    if values.dtype == object and values.size and hasattr(values[0], "calendar"):
        import cftime

        days = np.asarray(cftime.date2num(list(values), TIME_UNITS, calendar=values[0].calendar), np.int64)
        values = days.astype("datetime64[D]")
    if not np.issubdtype(values.dtype, np.datetime64):
        raise HpcdiffError(f"{path}: time has no CF time units (expected {TIME_UNITS!r})")
    dates = values.astype("datetime64[D]")
    if np.unique(dates).size != dates.size:
        raise HpcdiffError(f"{path}: time lists a date twice")
    return dates


def read_fields(ds: xr.Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: [T, M, H, W] float32}`` in ``(time, member, y, x)`` order whatever the file's order."""
    return {name: np.ascontiguousarray(ds[name].transpose(*DIMS).values, dtype=np.float32) for name in names}


def replace_non_finite(values: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``values`` with +inf and NaN set to ``truth.max()`` and -inf to ``truth.min()`` (a copy when any)."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    out = values.copy()
    out[bad] = np.where(np.isneginf(values[bad]), truth.min(), truth.max())
    return out


def _json_attr(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def read_samples(path: Path, *, variables: Mapping[str, str], shape: tuple[int, int],
                 x: np.ndarray | None = None, y: np.ndarray | None = None) -> Samples:
    """Read and check ``path`` against the dataset: ``variables`` ``{name: units}`` (manifest targets),
    grid ``shape`` ``(H, W)`` and, when given, its projected coordinates ``x`` ``[W]``, ``y`` ``[H]`` (m)."""
    path = Path(path)
    with open_netcdf_file(path) as ds:
        check_layout(ds, path, variables=variables, shape=shape)
        if x is not None and y is not None:
            check_coordinates(ds, path, x=x, y=y)
        dates = sample_dates(ds, path)
        if dates.size == 0 or ds.sizes["member"] == 0:
            raise HpcdiffError(f"{path}: holds no samples ({dates.size} dates, {ds.sizes['member']} members)")
        fields = read_fields(ds, list(variables))
        attrs = {k: _json_attr(v) for k, v in ds.attrs.items() if str(k).startswith("hpcdiff_")}
    non_finite = {name: int(values.size - np.isfinite(values).sum()) for name, values in fields.items()}
    return Samples(path=path, dates=dates, fields=fields, attrs=attrs, non_finite=non_finite)
