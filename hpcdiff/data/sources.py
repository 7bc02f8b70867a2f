"""Readers for ERA5 (both CDS NetCDF flavours) and DANRA-like targets, by dimension name.

Planning and reading are separate: :func:`scan_era5` / :func:`scan_target` read only coordinates and
return small descriptions (time axis, grid); :func:`read_era5_days` / :func:`read_target_days` read
the values of a planned run of consecutive days. Flavours are normalized here:

- time is ``time`` (legacy CDS, hours since 1900) or ``valid_time`` (new CDS, seconds since 1970);
- latitude/longitude may be ``latitude``/``longitude`` or ``lat``/``lon``, in any order; longitudes
  are wrapped to [-180, 180) (the regridder sorts both axes, so the values are read as stored);
- packed int16 (``scale_factor``/``add_offset``) and fill values are decoded by netCDF4; a masked
  or NaN value is an error naming the file, the variable and the date;
- extra size-1 dimensions (``number``, ``expver``) are dropped by name.

Hourly files are aggregated to days over the 24 values stamped 00..23 UTC: states by the mean,
accumulations (m of water per step) by the sum, converted to kg m-2 (x 1000).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import cftime
import netCDF4
import numpy as np

from hpcdiff.data.recipe import Era5Variable, TargetVariable
from hpcdiff.errors import HpcdiffError

TIME_NAMES = ("time", "valid_time")
LAT_NAMES = ("latitude", "lat")
LON_NAMES = ("longitude", "lon")
STEP_S = {"1h": 3600, "1D": 86400}
WATER_KG_M3 = 1000.0  # m of water equivalent -> kg m-2
DAY = np.timedelta64(1, "D")


@dataclasses.dataclass(frozen=True)
class Era5File:
    """Coordinates of one ERA5 file. ``times`` ``[T]`` datetime64[s]; ``lat`` ``[n_lat]`` and ``lon``
    ``[n_lon]`` (degrees, wrapped to [-180, 180)) in file order."""

    path: Path
    times: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    step_s: int

    def day_index(self, dates: np.ndarray) -> np.ndarray:
        """Time indices ``[n, steps_per_day]`` of the steps stamped on each date (datetime64[D])."""
        per_day = 86400 // self.step_s
        offsets = (dates.astype("datetime64[s]") - self.times[0]).astype(np.int64) // self.step_s
        return offsets[:, None] + np.arange(per_day)[None, :]

    def complete_dates(self) -> np.ndarray:
        """Dates (datetime64[D]) all of whose steps 00..23 UTC are in the file."""
        first = self.times[0].astype("datetime64[D]")
        if self.times[0] != first:
            first = first + DAY
        last_step = self.times[-1] - np.timedelta64(86400 - self.step_s, "s")
        last = last_step.astype("datetime64[D]")
        if last.astype("datetime64[s]") != last_step:
            last = last - DAY
        return np.arange(first, last + DAY, DAY) if last >= first else np.array([], "datetime64[D]")


@dataclasses.dataclass(frozen=True)
class TargetFile:
    """Time axis of one target file: ``dates`` ``[T]`` datetime64[D] (each stamped 00:00)."""

    path: Path
    dates: np.ndarray


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


def open_netcdf(path: Path) -> netCDF4.Dataset:
    """Open a NetCDF file (3 or 4) read-only; a one-line error for missing or non-NetCDF files."""
    try:
        return netCDF4.Dataset(str(path), "r")
    except FileNotFoundError:
        raise HpcdiffError(f"{path}: no such file") from None
    except OSError as err:
        raise HpcdiffError(f"{path}: not a readable NetCDF file ({err.strerror or err})") from None


UNIT_ALIASES = {"m of water equivalent": "m", "m water equivalent": "m"}  # CDS spells e's units so


def canonical_units(units: str) -> str:
    """``m s**-1``, ``m s^-1`` and ``m s-1`` compare equal; ``kg m**-2`` equals ``kg m-2``; CDS's
    ``m of water equivalent`` equals ``m``."""
    plain = re.sub(r"\s+", " ", units.replace("**", "").replace("^", "")).strip()
    return UNIT_ALIASES.get(plain, plain)


def find_name(names: Sequence[str], candidates: Sequence[str], *, path: Path, what: str) -> str:
    for name in candidates:
        if name in names:
            return name
    raise HpcdiffError(f"{path}: no {what} coordinate (looked for {', '.join(candidates)})")


def check_units(var: netCDF4.Variable, expected: str, *, path: Path) -> None:
    units = getattr(var, "units", None)
    if units is None:
        raise HpcdiffError(f"{path}: variable {var.name!r} has no units attribute (expected {expected!r})")
    if canonical_units(str(units)) != canonical_units(expected):
        raise HpcdiffError(f"{path}: variable {var.name!r} has units {units!r}, "
                           f"the recipe expects {expected!r}")


def decode_times(var: netCDF4.Variable, *, path: Path) -> np.ndarray:
    """CF time coordinate → datetime64[s] ``[T]``; standard calendars only."""
    units = getattr(var, "units", None)
    calendar = getattr(var, "calendar", "standard")
    raw = _read(var, (slice(None),), path=path)
    if units is None or "since" not in str(units):
        raise HpcdiffError(f"{path}: time coordinate {var.name!r} has no 'units since reference' attribute")
    if calendar not in ("standard", "gregorian", "proleptic_gregorian"):
        raise HpcdiffError(f"{path}: time calendar {calendar!r} is not supported (standard calendars only)")
    try:
        dates = cftime.num2date(np.asarray(raw, dtype=np.float64), str(units), calendar,
                                only_use_cftime_datetimes=False, only_use_python_datetimes=True)
    except (ValueError, TypeError) as err:
        raise HpcdiffError(f"{path}: cannot decode time units {units!r} ({err})") from None
    return np.array(np.atleast_1d(dates), dtype="datetime64[s]")


def _read(var: netCDF4.Variable, index: tuple, *, path: Path) -> np.ndarray:
    """Read ``var[index]`` decoded; a masked (fill) value or NaN is an error naming file and variable."""
    try:
        data = var[index]
    except (OSError, RuntimeError, IndexError, ValueError) as err:
        raise HpcdiffError(f"{path}: cannot read variable {var.name!r} ({err}); "
                           "is the file truncated?") from None
    if np.ma.is_masked(data):
        bad = int(np.ma.count_masked(data))
        raise HpcdiffError(f"{path}: variable {var.name!r} has {bad} fill/missing values")
    data = np.ma.getdata(data)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise HpcdiffError(f"{path}: variable {var.name!r} has {bad} NaN or infinite values")
    return data


def regular_step(times: np.ndarray, *, path: Path) -> int | None:
    """The constant step of a time axis in seconds, ``None`` for a single step; error if irregular."""
    if times.size < 2:
        return None
    steps = np.unique(np.diff(times).astype(np.int64))
    if steps.size != 1 or steps[0] <= 0:
        raise HpcdiffError(f"{path}: time axis is not strictly increasing with a constant step "
                           f"(steps seen: {sorted(set(steps.tolist()))[:5]} s)")
    return int(steps[0])


def check_variables(ds: netCDF4.Dataset, variables: Mapping[str, str], *,
                    dims: Sequence[Sequence[str]], path: Path) -> None:
    """Each ``name: units`` of ``variables`` is in ``ds`` with those units and dimensions ``dims``."""
    for name, units in variables.items():
        if name not in ds.variables:
            raise HpcdiffError(f"{path}: missing variable {name!r} (has: {', '.join(ds.variables)})")
        check_units(ds.variables[name], units, path=path)
        _axes(ds.variables[name], dims, path=path)


def scan_era5(path: Path, *, frequency: str, variables: Mapping[str, str]) -> Era5File:
    """Coordinates of an ERA5 file, whose ``variables`` (name: units) are checked.
    ``frequency``: ``1h``, ``1D`` or ``auto`` (from the time axis)."""
    with open_netcdf(path) as ds:
        names = list(ds.variables)
        check_variables(ds, variables, dims=(TIME_NAMES, LAT_NAMES, LON_NAMES), path=path)
        times = decode_times(ds.variables[find_name(names, TIME_NAMES, path=path, what="time")], path=path)
        lat = _read(ds.variables[find_name(names, LAT_NAMES, path=path, what="latitude")], (slice(None),),
                    path=path).astype(np.float64)
        lon = _read(ds.variables[find_name(names, LON_NAMES, path=path, what="longitude")], (slice(None),),
                    path=path).astype(np.float64)
    step = regular_step(times, path=path)
    if frequency != "auto":
        if step is not None and step != STEP_S[frequency]:
            raise HpcdiffError(f"{path}: time step is {step} s, the recipe says frequency {frequency}")
        step = STEP_S[frequency]
    if step not in STEP_S.values():
        raise HpcdiffError(f"{path}: time step {step} s is neither hourly nor daily; set era5.frequency")
    since_midnight = int((times[0] - times[0].astype("datetime64[D]")).astype(np.int64))
    if since_midnight % step:
        raise HpcdiffError(f"{path}: time axis starts at {times[0]}, off the {step} s grid of its day "
                           "(daily values must be stamped 00:00 UTC, hourly ones on the hour)")
    return Era5File(path=Path(path), times=times, lat=lat, lon=(lon + 180.0) % 360.0 - 180.0, step_s=step)


def _axes(var: netCDF4.Variable, wanted: Sequence[Sequence[str]], *, path: Path) -> list[int]:
    """Positions of the wanted dimensions (each given by its candidate names) in ``var``; other
    dimensions must have size 1."""
    dims = list(var.dimensions)
    axes = []
    for candidates in wanted:
        hit = [i for i, d in enumerate(dims) if d in candidates]
        if len(hit) != 1:
            raise HpcdiffError(f"{path}: variable {var.name!r} has dimensions {tuple(dims)}, "
                               f"expected one of {tuple(candidates)}")
        axes.append(hit[0])
    for i, size in enumerate(var.shape):
        if i not in axes and size != 1:
            raise HpcdiffError(f"{path}: variable {var.name!r} has an extra dimension {dims[i]!r} "
                               f"of size {size}")
    return axes


def read_by_dims(var: netCDF4.Variable, wanted: Sequence[Sequence[str]], slices: Sequence[slice], *,
                 path: Path) -> np.ndarray:
    """``var[...]`` with axes ordered as ``wanted`` (each given by its candidate dimension names and
    cut by the matching entry of ``slices``); other dimensions must have size 1 and are dropped."""
    axes = _axes(var, wanted, path=path)
    index: list[int | slice] = [0] * var.ndim
    for axis, cut in zip(axes, slices, strict=True):
        index[axis] = cut
    data = _read(var, tuple(index), path=path)
    kept = sorted(axes)  # integer-indexed axes are gone from ``data``
    return np.transpose(data, [kept.index(i) for i in axes])


class OpenFiles:
    """NetCDF files kept open across read blocks: blocks come in file order, so the ``keep`` most
    recently used files suffice (opening a NetCDF4 file costs milliseconds)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._open: dict[Path, netCDF4.Dataset] = {}

    def __call__(self, path: Path) -> netCDF4.Dataset:
        ds = self._open.pop(path, None) or open_netcdf(path)
        self._open[path] = ds  # most recent last
        while len(self._open) > self.keep:
            self._open.pop(next(iter(self._open))).close()
        return ds

    def close(self) -> None:
        for ds in self._open.values():
            ds.close()
        self._open = {}

    def __enter__(self) -> OpenFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _variable(ds: netCDF4.Dataset, name: str, *, path: Path) -> netCDF4.Variable:
    """A variable for streaming reads: every chunk is read once, so HDF5's per-variable chunk cache
    (16 MiB each, for every variable of every open file) would only cost memory."""
    if name not in ds.variables:
        raise HpcdiffError(f"{path}: missing variable {name!r} (has: {', '.join(ds.variables)})")
    var = ds.variables[name]
    if ds.data_model.startswith("NETCDF4") and var.chunking() != "contiguous":
        var.set_var_chunk_cache(size=0, nelems=1, preemption=1.0)
    return var


def read_era5_days(files: OpenFiles, info: Era5File, variables: Sequence[Era5Variable], *,
                   index: np.ndarray) -> np.ndarray:
    """Daily values ``[n, C, n_lat, n_lon]`` float64 (grid in file order) of ``variables`` at the time
    indices ``index`` ``[n, steps_per_day]`` (one run of consecutive days). States: daily mean in the
    file's units; accumulations: daily sum, converted from m of water to kg m-2. Variables and units
    were checked by :func:`scan_era5`."""
    start, stop = int(index.min()), int(index.max()) + 1
    out = np.empty((index.shape[0], len(variables), info.lat.size, info.lon.size))
    ds = files(info.path)
    for c, spec in enumerate(variables):
        block = read_by_dims(_variable(ds, spec.name, path=info.path), (TIME_NAMES, LAT_NAMES, LON_NAMES),
                             (slice(start, stop), slice(None), slice(None)), path=info.path)
        steps = block[index - start]  # [n, steps_per_day, n_lat, n_lon]
        if spec.kind == "accumulation":
            out[:, c] = steps.sum(axis=1, dtype=np.float64) * WATER_KG_M3
        else:
            out[:, c] = steps.mean(axis=1, dtype=np.float64)
    return out


def scan_target(path: Path, *, variables: Mapping[str, str]) -> TargetFile:
    """Time axis of a target file, whose ``variables`` (name: units) are checked; every value must be
    stamped 00:00 and dates must be unique."""
    with open_netcdf(path) as ds:
        names = list(ds.variables)
        check_variables(ds, variables, dims=(TIME_NAMES, ("y",), ("x",)), path=path)
        times = decode_times(ds.variables[find_name(names, TIME_NAMES, path=path, what="time")], path=path)
    dates = times.astype("datetime64[D]")
    if np.any(dates.astype("datetime64[s]") != times):
        raise HpcdiffError(f"{path}: target times must be daily values stamped 00:00 UTC")
    if np.any(np.diff(dates) <= np.timedelta64(0, "D")):
        raise HpcdiffError(f"{path}: target time axis is not strictly increasing (duplicate dates?)")
    return TargetFile(path=Path(path), dates=dates)


def read_target_grid(path: Path) -> TargetGrid:
    """The 2-D ``lat``/``lon`` ``[H, W]``, ``x``/``y`` in m and the grid mapping of a target or static
    file."""
    with open_netcdf(path) as ds:
        for name in ("lat", "lon"):
            if name not in ds.variables or ds.variables[name].ndim != 2:
                raise HpcdiffError(f"{path}: target grid has no 2-D {name!r} variable")
        lat = _read(ds.variables["lat"], (slice(None),) * 2, path=path).astype(np.float64)
        lon = _read(ds.variables["lon"], (slice(None),) * 2, path=path).astype(np.float64)
        x, y = (_projection_coord(ds, name, path=path) for name in ("x", "y"))
        mapping_name, mapping = _grid_mapping(ds)
    if lat.shape != (y.size, x.size):
        raise HpcdiffError(f"{path}: lat/lon shape {lat.shape} does not match (y, x) = ({y.size}, {x.size})")
    return TargetGrid(lat=lat, lon=lon, x=x, y=y, mapping_name=mapping_name, mapping=mapping)


def _projection_coord(ds: netCDF4.Dataset, name: str, *, path: Path) -> np.ndarray:
    if name not in ds.variables:
        raise HpcdiffError(f"{path}: target grid has no projection coordinate {name!r}")
    var = ds.variables[name]
    values = _read(var, (slice(None),), path=path).astype(np.float64)
    units = canonical_units(str(getattr(var, "units", "m")))
    if units not in ("m", "km"):
        raise HpcdiffError(f"{path}: coordinate {name!r} has units {units!r}, expected m or km")
    return values * 1000.0 if units == "km" else values


def _grid_mapping(ds: netCDF4.Dataset) -> tuple[str | None, dict]:
    for name, var in ds.variables.items():
        if "grid_mapping_name" in var.ncattrs():
            return name, {k: _jsonable(var.getncattr(k)) for k in var.ncattrs()}
    return None, {}


def _jsonable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_target_days(files: OpenFiles, path: Path, variables: Sequence[TargetVariable], *,
                     index: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    """Target values ``[n, C, H, W]`` float64 of ``variables`` at consecutive time indices ``index``
    ``[n]``, cut to ``window`` (y, x slices). Variables and units were checked by :func:`scan_target`."""
    start, stop = int(index.min()), int(index.max()) + 1
    dims = (TIME_NAMES, ("y",), ("x",))
    ds = files(path)
    out = None
    for c, spec in enumerate(variables):
        var = _variable(ds, spec.name, path=path)
        block = read_by_dims(var, dims, (slice(start, stop), *window), path=path)[index - start]
        if out is None:
            out = np.empty((index.size, len(variables), *block.shape[1:]))
        out[:, c] = block
    return out


def read_static_field(path: Path, name: str, *, units: str | None) -> np.ndarray:
    """A static 2-D field ``[H, W]`` float64 (dims y, x) of the static file."""
    with open_netcdf(path) as ds:
        var = _variable(ds, name, path=path)
        if units is not None:
            check_units(var, units, path=path)
        return read_by_dims(var, (("y",), ("x",)), (slice(None), slice(None)), path=path).astype(np.float64)
