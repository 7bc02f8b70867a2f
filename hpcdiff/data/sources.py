"""Readers for DANRA-like targets and static fields, from NetCDF files or Zarr stores (DANRA as
distributed), lazily and chunk-aware through xarray (:mod:`hpcdiff.data.formats`). The ERA5 side is
:mod:`hpcdiff.data.era5`.

Planning and reading are separate: :func:`scan_target` and :func:`read_target_grid` read only
coordinates and attributes; :func:`read_target_days` reads the values of a planned run of days, cut to
the domain window (only the window's chunks are read). Units are converted to the recipe's through
pint (:mod:`hpcdiff.data.units`); a missing (fill) or NaN value is an error naming the file, the
variable and the date. The grid mapping comes from the variable that carries ``grid_mapping_name``
(a NetCDF variable or a Zarr array's attributes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from hpcdiff.data.formats import OpenInputs, open_inputs
from hpcdiff.data.recipe import TargetVariable
from hpcdiff.data.units import conversion
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import decode_cf_times

TIME_NAMES = ("time", "valid_time")
GRID_DIMS = (("y",), ("x",))


@dataclasses.dataclass(frozen=True)
class TargetFile:
    """Time axis of one target input: ``dates`` ``[T]`` datetime64[D] (each stamped 00:00) and the
    conversion ``name -> (scale, offset)`` of each variable's units to the recipe's."""

    path: Path
    dates: np.ndarray
    conversions: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TargetGrid:
    """The target grid: ``lat``/``lon`` ``[H, W]`` degrees, ``x`` ``[W]`` / ``y`` ``[H]`` in m, the grid
    mapping's name and attributes (JSON-able)."""

    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    mapping_name: str | None
    mapping: dict


def _single(path: Path) -> xr.Dataset:
    datasets = open_inputs(path)
    if len(datasets) != 1:
        for ds in datasets:
            ds.close()
        raise HpcdiffError(f"{path}: a target input must be one NetCDF file or Zarr store, not GRIB")
    return datasets[0]


def _values(da: xr.DataArray, *, where: str) -> np.ndarray:
    """``da``'s values as float64; a one-line error for unreadable data, fill or NaN values."""
    try:
        values = np.asarray(da.values)
    except Exception as err:  # the backends raise many types on damaged files
        raise HpcdiffError(f"{where}: cannot read ({type(err).__name__}: {err}); is the file truncated?") \
            from None
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise HpcdiffError(f"{where}: {bad} fill/missing or NaN values")
    return values.astype(np.float64)


def _axes(da: xr.DataArray, wanted: Sequence[Sequence[str]], *, where: str) -> list[str]:
    """The dimension names of ``da`` matching ``wanted`` (each given by candidate names); other
    dimensions must have size 1."""
    names = []
    for candidates in wanted:
        hit = [d for d in da.dims if d in candidates]
        if len(hit) != 1:
            raise HpcdiffError(f"{where}: dimensions {tuple(da.dims)}, expected one of {tuple(candidates)}")
        names.append(str(hit[0]))
    for dim in da.dims:
        if dim not in names and da.sizes[dim] != 1:
            raise HpcdiffError(f"{where}: extra dimension {dim!r} of size {da.sizes[dim]}")
    return names


def _variable(ds: xr.Dataset, name: str, *, path: Path) -> xr.DataArray:
    if name not in ds.variables:
        raise HpcdiffError(f"{path}: missing variable {name!r} (has: {', '.join(map(str, ds.variables))})")
    return ds[name]


def _conversion(da: xr.DataArray, expected: str, *, path: Path) -> tuple[float, float]:
    units = da.attrs.get("units")
    if units is None:
        raise HpcdiffError(f"{path}: variable {da.name!r} has no units attribute (expected {expected!r})")
    return conversion(str(units), expected, where=f"{path}: variable {da.name!r}")


def _dates(ds: xr.Dataset, *, path: Path) -> np.ndarray:
    name = next((n for n in TIME_NAMES if n in ds.variables), None)
    if name is None:
        raise HpcdiffError(f"{path}: no time coordinate (looked for {', '.join(TIME_NAMES)})")
    var = ds[name]
    times = np.atleast_1d(decode_cf_times(var.values, var.attrs.get("units"), var.attrs.get("calendar"),
                                          where=f"{path}: {name}"))
    dates = times.astype("datetime64[D]")
    if np.any(dates.astype("datetime64[s]") != times):
        raise HpcdiffError(f"{path}: target times must be daily values stamped 00:00 UTC")
    if np.any(np.diff(dates) <= np.timedelta64(0, "D")):
        raise HpcdiffError(f"{path}: target time axis is not strictly increasing (duplicate dates?)")
    return dates


def scan_target(path: Path, *, variables: Mapping[str, str]) -> TargetFile:
    """Time axis of a target input, whose ``variables`` (name: units) are checked: dimensions
    (time, y, x), units convertible to the recipe's; every value stamped 00:00, dates unique."""
    with _single(path) as ds:
        conversions = {}
        for name, units in variables.items():
            da = _variable(ds, name, path=path)
            conversions[name] = _conversion(da, units, path=path)
            _axes(da, (TIME_NAMES, *GRID_DIMS), where=f"{path}: variable {name!r}")
        dates = _dates(ds, path=path)
    return TargetFile(path=Path(path), dates=dates, conversions=conversions)


def read_target_grid(path: Path) -> TargetGrid:
    """The 2-D ``lat``/``lon`` ``[H, W]``, ``x``/``y`` in m and the grid mapping of a target or static
    input."""
    with _single(path) as ds:
        for name in ("lat", "lon"):
            if name not in ds.variables or ds[name].ndim != 2:
                raise HpcdiffError(f"{path}: target grid has no 2-D {name!r} variable")
        lat = _values(ds["lat"], where=f"{path}: lat")
        lon = _values(ds["lon"], where=f"{path}: lon")
        x, y = (_projection_coord(ds, name, path=path) for name in ("x", "y"))
        mapping_name, mapping = _grid_mapping(ds)
    if lat.shape != (y.size, x.size):
        raise HpcdiffError(f"{path}: lat/lon shape {lat.shape} does not match (y, x) = ({y.size}, {x.size})")
    return TargetGrid(lat=lat, lon=lon, x=x, y=y, mapping_name=mapping_name, mapping=mapping)


def _projection_coord(ds: xr.Dataset, name: str, *, path: Path) -> np.ndarray:
    if name not in ds.variables:
        raise HpcdiffError(f"{path}: target grid has no projection coordinate {name!r}")
    var = ds[name]
    scale, offset = conversion(str(var.attrs.get("units", "m")), "m", where=f"{path}: coordinate {name!r}")
    return _values(var, where=f"{path}: {name}") * scale + offset


def _grid_mapping(ds: xr.Dataset) -> tuple[str | None, dict]:
    for name, var in ds.variables.items():
        if "grid_mapping_name" in var.attrs:
            return str(name), {str(k): _jsonable(v) for k, v in var.attrs.items()}
    return None, {}


def _jsonable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_target_days(files: OpenInputs, info: TargetFile, variables: Sequence[TargetVariable], *,
                     index: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    """Target values ``[n, C, H, W]`` float64 (the recipe's units) of ``variables`` at time indices
    ``index`` ``[n]`` (one run, read as one range), cut to ``window`` (y, x slices)."""
    start, stop = int(index.min()), int(index.max()) + 1
    ds = files(info.path)[0]
    out = None
    for c, spec in enumerate(variables):
        da = _variable(ds, spec.name, path=info.path)
        time, y, x = _axes(da, (TIME_NAMES, *GRID_DIMS), where=f"{info.path}: variable {spec.name!r}")
        cut = da.isel({time: slice(start, stop), y: window[0], x: window[1]})
        cut = cut.isel({d: 0 for d in cut.dims if d not in (time, y, x)}).transpose(time, y, x)
        try:
            block = np.asarray(cut.values, np.float64)[index - start]
        except Exception as err:
            raise HpcdiffError(f"{info.path}: cannot read variable {spec.name!r} ({type(err).__name__}: "
                               f"{err}); is the file truncated?") from None
        bad = ~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        if bad.any():
            raise HpcdiffError(f"{info.path}: variable {spec.name!r} has "
                               f"{int(np.count_nonzero(~np.isfinite(block)))} fill/missing or NaN values, "
                               f"first on {info.dates[index[bad][0]]}")
        if out is None:
            out = np.empty((index.size, len(variables), *block.shape[1:]))
        scale, offset = info.conversions.get(spec.name, (1.0, 0.0))
        out[:, c] = block * scale + offset
    return out


def read_static_field(path: Path, name: str, *, units: str | None) -> np.ndarray:
    """A static 2-D field ``[H, W]`` float64 (dims y, x) of the static input, in ``units`` when given."""
    with _single(path) as ds:
        da = _variable(ds, name, path=path)
        y, x = _axes(da, GRID_DIMS, where=f"{path}: variable {name!r}")
        da = da.isel({d: 0 for d in da.dims if d not in (y, x)}).transpose(y, x)
        scale, offset = _conversion(da, units, path=path) if units is not None else (1.0, 0.0)
        return _values(da, where=f"{path}: variable {name!r}") * scale + offset
