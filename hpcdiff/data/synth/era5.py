"""ERA5 files of the synthetic world, in both CDS layouts, and their daily aggregates read back.

Even years (by default) are legacy CDS NetCDF3: int16 packed (``scale_factor``/``add_offset``, fill
-32767), ``time`` in hours since 1900, longitudes 0..360 (or -180..180 for a box across 0 deg E, as CDS
writes an area request across Greenwich: ascending either way). Odd years are new CDS NetCDF4: float32,
``valid_time`` in seconds since 1970, longitudes -180..180, extra ``number`` and ``expver``. Latitude
is descending in both; ``e`` is in ``m of water equivalent`` (the CDS spelling), negative for
evaporation.

The law is defined on the files as written (after packing), so :func:`coarse_daily` reads them with
the preprocessing's own reader (:mod:`hpcdiff.data.era5`): the truth, the oracle and the bilinear
baseline start from exactly the numbers a preprocessed dataset's conditions start from. Hourly
accumulations are stamped at the end of their hour, as CDS stamps them (see
:func:`hpcdiff.data.synth.weather.era5_fields`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import netCDF4
import numpy as np

from hpcdiff.data.era5 import scan_era5_inputs
from hpcdiff.data.formats import OpenInputs
from hpcdiff.data.recipe import Era5Variable
from hpcdiff.data.synth.geometry import World
from hpcdiff.data.synth.meta import (
    ACCUMULATIONS,
    ERA5_META,
    ERA5_VARS,
    FILL_INT16,
    NC3_EPOCH,
    NC4_COORDINATES,
    PACK_HALF_RANGE,
    era5_attrs,
    set_attrs,
)
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import as_dates, year_of


def pack_int16(values: np.ndarray, *, nonnegative: bool) -> tuple[np.ndarray, float, float]:
    """CDS-style int16 packing of ``values``: ``(packed, scale_factor, add_offset)``. Packed values
    span -32766..32766 (-32767 is the fill value). For non-negative variables the range starts at 0,
    and packed -32766 decodes to exactly 0.0 (``-n * s + fl(n * s) == 0``)."""
    lo = 0.0 if nonnegative else float(values.min())
    hi = float(values.max())
    scale = (hi - lo) / (2 * PACK_HALF_RANGE) if hi > lo else 1.0
    offset = lo + PACK_HALF_RANGE * scale
    packed = np.clip(np.round((values - offset) / scale), -PACK_HALF_RANGE, PACK_HALF_RANGE)
    return packed.astype(np.int16), scale, offset


def write_era5_nc3(path: Path, world: World, times: np.ndarray, fields: dict[str, np.ndarray]) -> None:
    """Legacy CDS NetCDF3: int16 packed, ``time`` int32 hours since 1900, longitudes 0..360 (-180..180
    when the box crosses 0 deg E, so that they stay ascending)."""
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("longitude", world.era5_lon.size)
        ds.createDimension("latitude", world.era5_lat.size)
        ds.createDimension("time", times.size)
        lon = ds.createVariable("longitude", "f4", ("longitude",))
        set_attrs(lon, {"units": "degrees_east", "long_name": "longitude"})
        lon[:] = world.era5_lon % 360.0 if world.era5_lon[0] >= 0 else world.era5_lon
        lat = ds.createVariable("latitude", "f4", ("latitude",))
        set_attrs(lat, {"units": "degrees_north", "long_name": "latitude"})
        lat[:] = world.era5_lat
        time = ds.createVariable("time", "i4", ("time",))
        set_attrs(time, {"units": "hours since 1900-01-01 00:00:00.0", "long_name": "time",
                         "calendar": "gregorian"})
        time[:] = ((times - NC3_EPOCH.astype("datetime64[s]")) // np.timedelta64(3600, "s")).astype(np.int32)
        for name in ERA5_VARS:
            packed, scale, offset = pack_int16(fields[name], nonnegative=name == "tp")
            var = ds.createVariable(name, "i2", ("time", "latitude", "longitude"), fill_value=FILL_INT16)
            var.set_auto_maskandscale(False)
            set_attrs(var, {"scale_factor": np.float64(scale), "add_offset": np.float64(offset),
                            "missing_value": FILL_INT16, **era5_attrs(name)})
            var[:] = packed
        ds.setncatts({"Conventions": "CF-1.6",
                      "history": "hpcdiff synthetic world: ERA5-like, legacy CDS NetCDF3 layout"})


def write_era5_nc4(path: Path, world: World, times: np.ndarray, fields: dict[str, np.ndarray]) -> None:
    """New CDS NetCDF4: float32, ``valid_time`` int64 seconds since 1970, longitudes -180..180, plus
    the ``number`` and ``expver`` coordinates."""
    dims = ("valid_time", "latitude", "longitude")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        for dim, size in zip(dims, (times.size, world.era5_lat.size, world.era5_lon.size), strict=True):
            ds.createDimension(dim, size)
        number = ds.createVariable("number", "i8")
        set_attrs(number, {"long_name": "ensemble member numerical id", "units": "1",
                           "standard_name": "realization"})
        number.assignValue(0)
        time = ds.createVariable("valid_time", "i8", ("valid_time",))
        set_attrs(time, {"long_name": "time", "standard_name": "time", "units": "seconds since 1970-01-01",
                         "calendar": "proleptic_gregorian"})
        time[:] = times.astype("datetime64[s]").astype(np.int64)
        for name, values, units in (("latitude", world.era5_lat, "degrees_north"),
                                    ("longitude", (world.era5_lon + 180.0) % 360.0 - 180.0, "degrees_east")):
            coord = ds.createVariable(name, "f8", (name,))
            set_attrs(coord, {"units": units, "standard_name": name, "long_name": name})
            coord[:] = values
        expver = ds.createVariable("expver", str, ("valid_time",))
        set_attrs(expver, {"long_name": "model experiment version", "units": "1"})
        expver[:] = np.full(times.size, "0001", dtype=object)
        for name in ERA5_VARS:
            var = ds.createVariable(name, "f4", dims, zlib=True, complevel=1, shuffle=True,
                                    chunksizes=(1, world.era5_lat.size, world.era5_lon.size),
                                    fill_value=np.float32(np.nan))
            set_attrs(var, {**era5_attrs(name), "coordinates": NC4_COORDINATES})
            var[:] = fields[name].astype(np.float32)
        ds.setncatts({"GRIB_centre": "ecmf", "Conventions": "CF-1.7",
                      "institution": "European Centre for Medium-Range Weather Forecasts",
                      "history": "hpcdiff synthetic world: ERA5-like, new CDS NetCDF4 layout"})



def era5_variables() -> list[Era5Variable]:
    """The world's ERA5 variables as the preprocessing describes them (name, file units, kind)."""
    return [Era5Variable(name=name, units=ERA5_META[name][0],
                         kind="accumulation" if name in ACCUMULATIONS else "state") for name in ERA5_VARS]


def check_dates(world: World, dates: np.ndarray) -> None:
    """A one-line error naming the first of ``dates`` ``[n]`` datetime64[D] the world does not hold."""
    held = world.holds(dates)
    if not held.all():
        raise HpcdiffError(f"{world.root}: date {dates[~held][0]} is not in the synthetic world")


def coarse_daily(world: World, dates: Sequence | np.ndarray) -> dict[str, np.ndarray]:
    """ERA5 daily aggregates ``[T, n_lat, n_lon]`` float64 on the ERA5 grid (latitude descending) read
    from the files by the preprocessing's reader: t2m (K), msl (Pa), u10/v10 (m s-1) daily means of the
    steps stamped 00..23 UTC; tp, e daily sums (kg m-2) of the steps stamped 01..24 UTC."""
    dates = as_dates(dates)
    check_dates(world, dates)
    years = np.unique(year_of(dates)).tolist()
    paths = [world.era5_path(y) for y in years]
    # a year's last day ends with the 00 UTC step of the next year's file when that year continues it
    paths += [world.era5_path(y + 1) for y in years if y + 1 in world.dates and y + 1 not in years
              and world.dates[y + 1][0] - world.dates[y][-1] == np.timedelta64(1, "D")]
    inputs = scan_era5_inputs(paths, era5_variables(), frequency=world.era5_freq)
    with OpenInputs() as files:
        daily = inputs.read_days(files, dates)
    return {name: daily[:, c] for c, name in enumerate(ERA5_VARS)}
