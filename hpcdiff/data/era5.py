"""ERA5 condition inputs as users download them, assembled into daily values.

A recipe variable is a *series* of valid times (instants) over every input that holds it. Files are
matched by the recipe's patterns; a variable is found in whichever file holds it (the new CDS delivers
instantaneous and accumulated variables in separate files), under its recipe name, its ``source`` name,
or its GRIB short name (``2t`` is ``t2m``). Days are assembled from the series, not from one file, so a
day whose steps lie in two monthly or yearly files is complete, and a file's last day is kept when the
next file supplies its last step.

Layouts normalized here (each piece of a series is one variable of one file or GRIB hypercube):

- time as ``time`` (legacy CDS, hours since 1900), ``valid_time`` (new CDS), a scalar time, or cfgrib's
  forecast layout ``(time, step)`` with ``valid_time = time + step`` (06 and 18 UTC forecasts with steps
  1..12 h): every value is placed at its valid time;
- ``expver`` as a dimension (ERA5 mixed with ERA5T): ERA5 (the lowest ``expver``) where it has a value,
  ERA5T where ERA5 is missing; size-1 dimensions such as ``number`` are dropped;
- units converted to the recipe's through pint (:mod:`hpcdiff.data.units`);
- latitude in any order, longitude 0..360 or -180..180 (wrapped; the regridder sorts the axes).

Daily aggregation, per variable, over the values stamped at ``date 00:00 + window`` hours: states take
00..23 UTC and their mean; accumulations (CDS stamps an hourly accumulation at the *end* of its hour)
take 01..24 UTC (the last on the next day, possibly in the next file) and their sum, in ``kg m-2``;
fluxes (per second) take the mean times the day. Daily inputs (one value per date, at any hour of it)
are used as they are. A missing or non-finite value is an error naming the file, the variable and the
hour.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from hpcdiff.data.formats import OpenInputs, detect_format, grib_valid_times, open_inputs
from hpcdiff.data.recipe import Era5Variable
from hpcdiff.data.units import DAILY_TOTAL_UNITS, conversion, daily_total_factor
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import decode_cf_durations, decode_cf_seconds, iso_dates, iso_instant

LEAD_DIMS = ("time", "valid_time", "step")  # dimensions that place a value in time
# (latitude, longitude) dimension names; rlat/rlon: a rotated pole (CORDEX), whose coordinates are in the
# rotated frame and whose grid mapping the variable names
GRID_NAMES = (("rlat", "rlon"), ("latitude", "longitude"), ("lat", "lon"))
GRIB_NAMES = {"t2m": ("2t",), "d2m": ("2d",), "u10": ("10u",), "v10": ("10v",), "u100": ("100u",),
              "v100": ("100v",)}  # recipe name -> GRIB short names that mean it
STEP_S = {"1h": 3600, "1D": 86400}
HOUR_S, DAY_S = 3600, 86400
DEFAULT_WINDOW = {"state": (0, 23), "accumulation": (1, 24), "flux": (0, 23)}


def file_names(spec: Era5Variable) -> tuple[str, ...]:
    """The names ``spec`` may have in a file: its ``source`` alone when set, else its name and GRIB
    short names."""
    if spec.source is not None:
        return (spec.source,)
    return (spec.name, *GRIB_NAMES.get(spec.name, ()))


@dataclasses.dataclass(frozen=True)
class Piece:
    """One variable of one input (``part``: the GRIB hypercube). ``lead`` are its time dimensions, in
    order, with sizes ``lead_shape``; values are addressed by a flat index over them (C order).
    ``expver``: the order in which the ``expver`` dimension's entries fill each other, or ``()``.
    ``scale``/``offset`` convert its units to the recipe's."""

    path: Path
    part: int
    name: str
    lead: tuple[str, ...]
    lead_shape: tuple[int, ...]
    expver: tuple[int, ...]
    scale: float
    offset: float
    grid_dims: tuple[str, str]  # (latitude, longitude) dimension names
    calendar: str  # of the valid times


@dataclasses.dataclass(frozen=True)
class Series:
    """Every value of one recipe variable: ``stamps`` ``[K]`` (seconds since 1970, sorted), each in piece
    ``piece[k]`` at flat index ``flat[k]``. A date's value aggregates the stamps ``date + offsets_s``."""

    spec: Era5Variable
    pieces: tuple[Piece, ...]
    stamps: np.ndarray
    piece: np.ndarray
    flat: np.ndarray
    step_s: int
    offsets_s: np.ndarray
    total_factor: float  # daily aggregate (recipe units) -> kg m-2, for accumulations and fluxes

    def needed(self, dates: np.ndarray) -> np.ndarray:
        """Stamps ``[n, w]`` (seconds since 1970) whose values make each of ``dates`` ``[n]``."""
        midnight = np.asarray(dates, "datetime64[D]").astype("datetime64[s]").astype(np.int64)
        return midnight[:, None] + self.offsets_s[None, :]

    def find(self, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``stamps`` in the series and whether each is there."""
        pos = np.clip(np.searchsorted(self.stamps, stamps), 0, self.stamps.size - 1)
        return pos, self.stamps[pos] == stamps

    def complete(self, dates: np.ndarray) -> np.ndarray:
        """Whether each of ``dates`` ``[n]`` has every value of its window ``[n]`` bool."""
        return self.find(self.needed(dates))[1].all(axis=1)

    def complete_dates(self) -> np.ndarray:
        """The dates ``[n]`` datetime64[D] whose window is complete."""
        first = np.unique((self.stamps - self.offsets_s[0]) // DAY_S).astype("datetime64[D]")
        return first[self.complete(first)]

    def describe_window(self) -> str:
        if self.step_s == DAY_S:
            return "one daily value"
        hours = self.offsets_s // HOUR_S
        return f"the steps stamped {hours[0]:02d}..{hours[-1]:02d} UTC"


@dataclasses.dataclass(frozen=True)
class Era5Inputs:
    """The recipe's ERA5 variables as series over the matched ``files``, on one grid: ``lat`` ``[n_lat]``
    and ``lon`` ``[n_lon]`` (degrees, file order; longitudes wrapped to [-180, 180)), in the rotated
    frame of ``projection`` (the CF grid mapping of a rotated pole) when it is set. ``calendar``: of
    every input's time axis; dates are datetime64[D] values ``1970-01-01 + day number`` of it."""

    series: tuple[Series, ...]
    lat: np.ndarray
    lon: np.ndarray
    files: tuple[Path, ...]
    calendar: str = "standard"
    projection: dict | None = None

    def complete(self, dates: np.ndarray) -> np.ndarray:
        """Whether every variable is complete on each of ``dates`` ``[n]`` bool."""
        ok = np.ones(len(dates), bool)
        for series in self.series:
            ok &= series.complete(dates)
        return ok

    def complete_dates(self) -> np.ndarray:
        """Dates ``[n]`` datetime64[D] on which every variable is complete."""
        dates = self.series[0].complete_dates()
        return dates[self.complete(dates)]

    def missing(self, date: np.datetime64) -> str | None:
        """Why ``date`` is incomplete (the first missing value: variable, hour, nearest file), or None."""
        for series in self.series:
            need = series.needed(np.array([date], "datetime64[D]"))[0]
            pos, found = series.find(need)
            if not found.all():
                stamp = int(need[~found][0])
                k = int(pos[~found][0])
                if k > 0 and abs(series.stamps[k - 1] - stamp) < abs(series.stamps[k] - stamp):
                    k -= 1  # the piece holding the nearest valid time
                nearest = series.pieces[int(series.piece[k])].path
                when = iso_instant(stamp, self.calendar)
                day = iso_dates([int(np.datetime64(date, "D").astype(np.int64))], self.calendar)[0]
                return (f"{nearest}: ERA5 variable {series.spec.name!r} has no value for {when} UTC, needed "
                        f"for {day} ({series.describe_window()}; {int((~found).sum())} of "
                        f"{found.size} missing)")
        return None

    def read_days(self, opened: OpenInputs, dates: np.ndarray) -> np.ndarray:
        """Daily values ``[n, C, n_lat, n_lon]`` float64 (grid in file order) of complete ``dates`` ``[n]``
        (consecutive dates read fastest). States: daily mean in the recipe's units; accumulations and
        fluxes: daily totals in kg m-2."""
        dates = np.asarray(dates, "datetime64[D]")
        out = np.empty((dates.size, len(self.series), self.lat.size, self.lon.size))
        for c, series in enumerate(self.series):
            need = series.needed(dates)
            pos, found = series.find(need)
            if not found.all():
                raise HpcdiffError(self.missing(dates[np.flatnonzero(~found.all(axis=1))[0]]) or "")
            values = np.empty((*need.shape, self.lat.size, self.lon.size))
            flat_pos, flat_values = pos.ravel(), values.reshape(-1, self.lat.size, self.lon.size)
            for p in np.unique(series.piece[flat_pos]).tolist():
                rows = np.flatnonzero(series.piece[flat_pos] == p)
                flat_values[rows] = read_rows(opened, series.pieces[p], series.flat[flat_pos[rows]],
                                              stamps=series.stamps[flat_pos[rows]],
                                              grid=(self.lat.size, self.lon.size), calendar=self.calendar)
            kind = series.spec.kind
            if kind == "state":
                out[:, c] = values.mean(axis=1)
            elif kind == "accumulation":
                out[:, c] = values.sum(axis=1) * series.total_factor
            else:
                out[:, c] = values.mean(axis=1) * series.total_factor
        return out


def _names(ds: xr.Dataset, candidates: Sequence[str]) -> str | None:
    return next((name for name in candidates if name in ds.variables), None)


def _stamps(ds: xr.Dataset, da: xr.DataArray, lead: tuple[str, ...], *, where: str) -> tuple[np.ndarray, str]:
    """Valid times ``lead_shape`` (seconds since 1970 of the calendar, int64) of ``da``'s values:
    ``valid_time`` where the input has it, else ``time`` plus ``step`` (0 without one); the calendar."""
    calendars = []

    def decoded(name: str) -> xr.DataArray:
        var = ds[name]
        values, calendar = decode_cf_seconds(var.values, var.attrs.get("units"), var.attrs.get("calendar"),
                                             where=f"{where}: {name}")
        calendars.append(calendar)
        return xr.DataArray(values, dims=var.dims)

    if "valid_time" in ds.variables:
        stamps = decoded("valid_time")
    elif "time" in ds.variables:
        stamps = decoded("time")
        if "step" in ds.variables:
            step = ds["step"]
            seconds = decode_cf_durations(step.values, step.attrs.get("units"), where=f"{where}: step")
            stamps = stamps + xr.DataArray(seconds.astype(np.int64), dims=step.dims)
    else:
        raise HpcdiffError(f"{where}: no time coordinate (looked for valid_time, time)")
    if not set(stamps.dims) <= set(lead):
        raise HpcdiffError(f"{where}: the valid time varies along {stamps.dims}, not along the variable's "
                           f"time dimensions {lead}")
    stamps = stamps.expand_dims({d: da.sizes[d] for d in lead if d not in stamps.dims})
    return np.asarray(stamps.transpose(*lead).values, np.int64), calendars[0]


def _rotated_pole(ds: xr.Dataset, da: xr.DataArray, *, where: str) -> dict:
    """The CF grid mapping of a rotated-pole variable (JSON-able attributes)."""
    name = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    if name is None or name not in ds.variables:
        name = next((n for n, v in ds.variables.items()
                     if v.attrs.get("grid_mapping_name") == "rotated_latitude_longitude"), None)
    if name is None or ds[name].attrs.get("grid_mapping_name") != "rotated_latitude_longitude":
        raise HpcdiffError(f"{where}: rlat/rlon dimensions without a rotated_latitude_longitude grid mapping")
    return {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in ds[name].attrs.items()}


def scan_piece(ds: xr.Dataset, name: str, spec: Era5Variable, *, path: Path,
               part: int) -> tuple[Piece, np.ndarray, tuple[np.ndarray, np.ndarray], dict | None]:
    """The piece of ``spec`` held as ``name`` in ``ds``, its stamps ``[K]``, the grid (lat, lon: 1-D,
    in the rotated frame for a rotated pole) and the rotated pole's grid mapping (or None)."""
    where = f"{path}: {name}"
    da = ds[name]
    pair = next((p for p in GRID_NAMES if p[0] in da.dims and p[1] in da.dims), None)
    if pair is None:
        raise HpcdiffError(f"{where}: dimensions {da.dims} lack latitude/longitude "
                           f"(looked for {', '.join('/'.join(p) for p in GRID_NAMES)})")
    lat_name, lon_name = pair
    if lat_name not in ds.variables or lon_name not in ds.variables:
        raise HpcdiffError(f"{where}: no coordinate values for {lat_name}/{lon_name}")
    projection = _rotated_pole(ds, da, where=where) if lat_name == "rlat" else None
    lead = tuple(d for d in da.dims if d in LEAD_DIMS)
    expver: tuple[int, ...] = ()
    for dim in da.dims:
        if dim in (*lead, lat_name, lon_name) or da.sizes[dim] == 1:
            continue
        if dim == "expver":
            expver = tuple(np.argsort(ds["expver"].values.astype(str)).tolist()) if "expver" in ds.variables \
                else tuple(range(da.sizes[dim]))
            continue
        raise HpcdiffError(f"{where}: extra dimension {dim!r} of size {da.sizes[dim]}")
    units = da.attrs.get("units")
    if units is None:
        raise HpcdiffError(f"{where}: no units attribute (expected {spec.units!r})")
    scale, offset = conversion(str(units), spec.units, where=where)
    scale, offset = scale * spec.multiply, offset * spec.multiply
    stamps, calendar = _stamps(ds, da, lead, where=where)
    stamps = stamps.ravel()
    lat = np.asarray(ds[lat_name].values, np.float64)
    lon = (np.asarray(ds[lon_name].values, np.float64) + 180.0) % 360.0 - 180.0
    piece = Piece(path=Path(path), part=part, name=name, lead=lead,
                  lead_shape=tuple(da.sizes[d] for d in lead), expver=expver, scale=scale, offset=offset,
                  grid_dims=(lat_name, lon_name), calendar=calendar)
    return piece, stamps, (lat, lon), projection


def _filled_cells(da: xr.DataArray, piece: Piece) -> np.ndarray:
    """Whether each cell ``[K]`` (flat over the time dimensions) of a forecast-layout variable holds a
    value, probed at the first grid point: cfgrib fills the steps a request did not include with NaN."""
    probe = da.isel({piece.grid_dims[0]: 0, piece.grid_dims[1]: 0})
    probe = probe.isel({d: 0 for d in probe.dims if d not in piece.lead and d != "expver"})
    values = np.asarray(probe.transpose(*piece.lead, *(["expver"] if piece.expver else [])).values)
    finite = np.isfinite(values)
    return (finite.any(axis=-1) if piece.expver else finite).ravel()


def read_rows(opened: OpenInputs, piece: Piece, flat: np.ndarray, *, stamps: np.ndarray,
              grid: tuple[int, int], calendar: str = "standard") -> np.ndarray:
    """Values ``[m, n_lat, n_lon]`` float64 in the recipe's units at flat indices ``flat`` ``[m]`` of
    ``piece`` (valid times ``stamps`` ``[m]``, for errors). Reads one range of the first time dimension."""
    da = opened(piece.path)[piece.part][piece.name]
    where = f"{piece.path}: variable {piece.name!r}"
    inner = math.prod(piece.lead_shape[1:])
    first = flat // inner if piece.lead else np.zeros_like(flat)
    start, stop = int(first.min()), int(first.max()) + 1
    if piece.lead:
        da = da.isel({piece.lead[0]: slice(start, stop)})
    da = da.isel({d: 0 for d in da.dims if d not in piece.lead and da.sizes[d] == 1})
    order = [*piece.lead, *(["expver"] if piece.expver else []), *piece.grid_dims]
    try:
        block = np.asarray(da.transpose(*order).values, np.float64)
    except Exception as err:  # the backends raise many types on damaged files
        raise HpcdiffError(f"{where}: cannot read ({type(err).__name__}: {err}); is the file truncated?") \
            from None
    block = block.reshape(-1, *block.shape[len(piece.lead):])[flat - start * inner]
    if piece.expver:
        merged = block[:, piece.expver[0]]
        for e in piece.expver[1:]:
            merged = np.where(np.isfinite(merged), merged, block[:, e])
        block = merged
    if block.shape[1:] != grid:
        raise HpcdiffError(f"{where}: grid {block.shape[1:]} differs from the other inputs' {grid}")
    bad = ~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
    if bad.any():
        count = int(np.count_nonzero(~np.isfinite(block)))
        raise HpcdiffError(f"{where} has {count} fill/missing or NaN values, first at "
                           f"{iso_instant(int(stamps[bad][0]), calendar)} UTC")
    return block * piece.scale + piece.offset


def _series(spec: Era5Variable, found: list[tuple[Piece, np.ndarray, np.ndarray]], *,
            frequency: str) -> Series:
    """Join the pieces of ``spec`` (each with its stamps and their flat indices) into one sorted series;
    a valid time in two inputs is an error."""
    pieces = tuple(p for p, _, _ in found)
    stamps = np.concatenate([s for _, s, _ in found])
    piece = np.concatenate([np.full(s.size, i) for i, (_, s, _) in enumerate(found)])
    flat = np.concatenate([f for _, _, f in found])
    order = np.argsort(stamps, kind="stable")
    stamps, piece, flat = stamps[order], piece[order], flat[order]
    twice = np.flatnonzero(np.diff(stamps) == 0)
    if twice.size:
        k = int(twice[0])
        a, b = pieces[int(piece[k])].path, pieces[int(piece[k + 1])].path
        when = iso_instant(int(stamps[k]), pieces[0].calendar)
        raise HpcdiffError(f"{b}: ERA5 variable {spec.name!r} at {when} UTC is also in {a}"
                           + (" (twice in one input)" if a == b else ""))
    steps = np.diff(stamps)
    step = int(steps.min()) if steps.size else STEP_S.get(frequency)
    where = f"{pieces[0].path}: ERA5 variable {spec.name!r}"
    if frequency != "auto" and step is not None and step != STEP_S[frequency]:
        raise HpcdiffError(f"{where}: time step is {step} s, the recipe says frequency {frequency}")
    if step is None:
        raise HpcdiffError(f"{where}: a single time step; set era5.frequency (1h or 1D)")
    if step == HOUR_S:
        first, last = spec.window if spec.window is not None else DEFAULT_WINDOW[spec.kind]
        offsets = np.arange(first, last + 1, dtype=np.int64) * HOUR_S
        if np.any(stamps % HOUR_S):
            raise HpcdiffError(f"{where}: hourly values must be stamped on the hour")
    elif step == DAY_S:
        time_of_day = np.unique(stamps % DAY_S)
        if time_of_day.size != 1:
            raise HpcdiffError(f"{where}: daily values at different hours of the day")
        offsets = time_of_day.astype(np.int64)
    else:
        raise HpcdiffError(f"{where}: time step {step} s is neither hourly nor daily; set era5.frequency")
    factor = 1.0 if spec.kind == "state" else daily_total_factor(spec.units, spec.kind, where=where)
    return Series(spec=spec, pieces=pieces, stamps=stamps, piece=piece, flat=flat, step_s=step,
                  offsets_s=offsets, total_factor=factor)


def scan_era5_inputs(paths: Sequence[Path], variables: Sequence[Era5Variable], *,
                     frequency: str = "auto") -> Era5Inputs:
    """Scan ``paths`` (NetCDF, GRIB) for the recipe's ``variables``: coordinates, time axes and units
    only. Every variable must be in at least one input, every input on the same grid."""
    found: dict[str, list[tuple[Piece, np.ndarray, np.ndarray]]] = {v.name: [] for v in variables}
    grid: tuple[np.ndarray, np.ndarray, Path] | None = None
    projections: list[tuple[dict | None, Path]] = []
    calendars: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for path in paths:
        present = grib_valid_times(path) if detect_format(path) == "grib" else None
        for part, ds in enumerate(open_inputs(path)):
            try:
                seen.update(str(n) for n in ds.data_vars)
                for spec in variables:
                    name = _names(ds, file_names(spec))
                    if name is None or name not in ds.data_vars:
                        continue
                    piece, stamps, (lat, lon), projection = scan_piece(ds, name, spec, path=Path(path),
                                                                       part=part)
                    projections.append((projection, Path(path)))
                    calendars.append((piece.calendar, Path(path)))
                    if grid is None:
                        grid = (lat, lon, Path(path))
                    elif not (lat.shape == grid[0].shape and lon.shape == grid[1].shape
                              and np.allclose(lat, grid[0]) and np.allclose(lon, grid[1])):
                        raise HpcdiffError(f"{path}: ERA5 grid ({lat.size} x {lon.size}) differs from "
                                           f"{grid[2]}'s ({grid[0].size} x {grid[1].size})")
                    flat = np.arange(stamps.size)
                    if present is not None:  # cells of cfgrib's hypercube that a message holds
                        flat = flat[np.isin(stamps, present.get(name, np.array([], np.int64)))]
                    elif "step" in piece.lead:  # cfgrib's hypercube saved as NetCDF: empty cells are NaN
                        flat = flat[_filled_cells(ds[name], piece)]
                    found[spec.name].append((piece, stamps[flat], flat))
            finally:
                ds.close()
    for spec in variables:
        if not found[spec.name]:
            names = " or ".join(repr(n) for n in file_names(spec))
            raise HpcdiffError(f"{paths[0].parent}: missing variable {names} (recipe's {spec.name!r}) in all "
                               f"{len(paths)} ERA5 inputs (they hold: {', '.join(sorted(seen)) or 'nothing'})"
                               )
    assert grid is not None
    for (projection, path), (calendar, _) in zip(projections[1:], calendars[1:], strict=True):
        if projection != projections[0][0]:
            raise HpcdiffError(f"{path}: grid mapping differs from {projections[0][1]}'s")
        if calendar != calendars[0][0]:
            raise HpcdiffError(f"{path}: calendar {calendar} differs from {calendars[0][1]}'s "
                               f"({calendars[0][0]})")
    series = tuple(_series(spec, found[spec.name], frequency=frequency) for spec in variables)
    return Era5Inputs(series=series, lat=grid[0], lon=grid[1], files=tuple(Path(p) for p in paths),
                      calendar=calendars[0][0], projection=projections[0][0])


def units_of(spec: Era5Variable) -> str:
    """The units of the daily value of ``spec``: kg m-2 for totals, the recipe's for states."""
    return DAILY_TOTAL_UNITS if spec.kind in ("accumulation", "flux") else spec.units

