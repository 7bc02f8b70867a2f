"""EURO-CORDEX-like daily files of the synthetic world's coarse weather, as ESGF delivers them: one
NetCDF per variable and period (``tas_EUR-44_..._day_19910101-19951230.nc``), CMOR names and units
(``tas`` K, ``pr`` and ``evspsbl`` kg m-2 s-1 with evaporation positive upward, ``psl`` Pa, ``uas`` and
``vas`` m s-1), on a rotated-pole grid (``rlat``/``rlon`` in degrees of the rotated frame, 2-D
``lat``/``lon``, a ``rotated_latitude_longitude`` grid mapping with EURO-CORDEX's pole), daily means
stamped at 12:00 with ``time_bnds``, in a chosen calendar (``360_day``, ``noleap`` or ``standard``).

The weather is the world's coarse weather (:mod:`hpcdiff.data.synth.weather`) at the calendar's day
numbers, interpolated from the ERA5 grid onto the rotated grid's points: plausible fields for the
preprocessing to read, not a second law (no truth exists for a model calendar's dates).
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import netCDF4
import numpy as np

from hpcdiff.data.regrid import apply_bilinear, plan_bilinear, to_rotated_pole
from hpcdiff.data.synth.geometry import World
from hpcdiff.data.synth.weather import coarse_weather, latent_anchors
from hpcdiff.data.units import SECONDS_PER_DAY
from hpcdiff.timeaxis import calendar_name

POLE = {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 39.25,
        "grid_north_pole_longitude": -162.0, "north_pole_grid_longitude": 0.0}  # EURO-CORDEX's
SPACING_DEG = 0.44  # EUR-44
TIME_UNITS = "days since 1949-12-01 00:00:00"
FILL = np.float32(1.0e20)
# CMOR name: (world variable, units, standard name, factor on the world's daily value)
CMOR = {"tas": ("t2m", "K", "air_temperature", 1.0),
        "pr": ("tp", "kg m-2 s-1", "precipitation_flux", 1.0 / SECONDS_PER_DAY),
        "evspsbl": ("e", "kg m-2 s-1", "water_evapotranspiration_flux", -1.0 / SECONDS_PER_DAY),
        "psl": ("msl", "Pa", "air_pressure_at_mean_sea_level", 1.0),
        "uas": ("u10", "m s-1", "eastward_wind", 1.0),
        "vas": ("v10", "m s-1", "northward_wind", 1.0)}
YEARS_PER_FILE = 5


def rotated_grid(world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``rlat`` ``[n]``, ``rlon`` ``[m]`` (ascending, :data:`SPACING_DEG`) enclosing the target grid with
    a margin of two cells, and the geographic ``lat``/``lon`` ``[n, m]`` of its points."""
    import pyproj

    rlat, rlon = to_rotated_pole(world.lat, world.lon, POLE, where="synthetic CORDEX grid")
    margin = 2 * SPACING_DEG
    rlat_axis = np.arange(np.floor((rlat.min() - margin) / SPACING_DEG),
                          np.ceil((rlat.max() + margin) / SPACING_DEG) + 1) * SPACING_DEG
    rlon_axis = np.arange(np.floor((rlon.min() - margin) / SPACING_DEG),
                          np.ceil((rlon.max() + margin) / SPACING_DEG) + 1) * SPACING_DEG
    crs = pyproj.CRS.from_cf(POLE)
    back = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    rlon2, rlat2 = np.meshgrid(rlon_axis, rlat_axis)
    lon, lat = back.transform(rlon2, rlat2)
    return rlat_axis, rlon_axis, np.asarray(lat), np.asarray(lon)


def calendar_dates(world: World, calendar: str) -> list:
    """cftime dates of ``calendar``: for each world year, as many consecutive days as the world holds,
    from the same month and day (clipped to the 30th)."""
    import cftime

    out = []
    for year in world.years:
        first = world.dates[year][0].astype(object)
        start = cftime.datetime(year, first.month, min(first.day, 28 if first.month == 2 else 30),
                                calendar=calendar)
        out += [start + datetime.timedelta(days=k) for k in range(world.dates[year].size)]
    return out


def cordex_fields(world: World, dates: list, calendar: str, *, lat: np.ndarray,
                  lon: np.ndarray) -> dict[str, np.ndarray]:
    """Daily CMOR fields ``[n, *lat.shape]`` float32 at ``dates`` on the points ``lat``/``lon``."""
    import cftime

    days = np.asarray(cftime.date2num(dates, "days since 1900-01-01", calendar), np.int64)
    latent = latent_anchors(world, days)
    # the seasonal cycle needs a Gregorian instant: the same month and day (the 30th of February is
    # the 28th)
    proxies = np.array([f"{d.year:04d}-{d.month:02d}-{min(d.day, 28 if d.month == 2 else 30):02d}"
                        for d in dates], "datetime64[D]").astype("datetime64[s]")
    daily = coarse_weather(dataclasses.replace(world, era5_freq="1D"), proxies, latent)
    # the rotated grid's corners may lie beyond the world's ERA5 box: they take its edge values
    lat = np.clip(lat, world.era5_lat.min(), world.era5_lat.max())
    lon = np.clip(lon, world.era5_lon.min(), world.era5_lon.max())
    plan = plan_bilinear(world.era5_lat, world.era5_lon, lat, lon, where="synthetic CORDEX grid")
    return {cmor: (apply_bilinear(plan, daily[name]) * factor).astype(np.float32)
            for cmor, (name, _, _, factor) in CMOR.items()}


def write_cordex(world: World, folder: Path, *, calendar: str = "360_day") -> list[Path]:
    """The world's years as CORDEX files in ``folder`` (created), one per variable and period of
    :data:`YEARS_PER_FILE` years; returns their paths."""
    import cftime

    calendar = calendar_name(calendar)
    folder.mkdir(parents=True, exist_ok=True)
    rlat, rlon, lat, lon = rotated_grid(world)
    dates = calendar_dates(world, calendar)
    fields = cordex_fields(world, dates, calendar, lat=lat, lon=lon)
    times = np.asarray(cftime.date2num(dates, TIME_UNITS, calendar), np.float64) + 0.5
    years = np.array([d.year for d in dates])
    paths = []
    for first in range(years.min(), years.max() + 1, YEARS_PER_FILE):
        sel = np.flatnonzero((years >= first) & (years < first + YEARS_PER_FILE))
        if sel.size == 0:
            continue
        span = f"{_stamp(dates[sel[0]])}-{_stamp(dates[sel[-1]])}"
        for cmor, (_, units, standard, _) in CMOR.items():
            path = folder / f"{cmor}_EUR-44_SYNTH_historical_r1i1p1_HPCDIFF_v1_day_{span}.nc"
            _write_file(path, cmor, units, standard, fields[cmor][sel], times[sel], calendar=calendar,
                        grid=(rlat, rlon, lat, lon))
            paths.append(path)
    return paths


def _stamp(date: object) -> str:
    return f"{date.year:04d}{date.month:02d}{date.day:02d}"


def _write_file(path: Path, cmor: str, units: str, standard: str, values: np.ndarray, times: np.ndarray, *,
                calendar: str, grid: tuple[np.ndarray, ...]) -> None:
    rlat, rlon, lat, lon = grid
    with netCDF4.Dataset(path, "w", format="NETCDF4_CLASSIC") as ds:
        ds.createDimension("time", None)
        ds.createDimension("bnds", 2)
        ds.createDimension("rlat", rlat.size)
        ds.createDimension("rlon", rlon.size)
        time = ds.createVariable("time", "f8", ("time",))
        time.setncatts({"standard_name": "time", "units": TIME_UNITS, "calendar": calendar, "axis": "T",
                        "bounds": "time_bnds"})
        time[:] = times
        ds.createVariable("time_bnds", "f8", ("time", "bnds"))[:] = np.stack([times - 0.5, times + 0.5], 1)
        for name, values_1d, standard_name in (("rlat", rlat, "grid_latitude"),
                                               ("rlon", rlon, "grid_longitude")):
            var = ds.createVariable(name, "f8", (name,))
            var.setncatts({"standard_name": standard_name, "units": "degrees", "axis": name[1].upper()})
            var[:] = values_1d
        for name, values_2d, unit in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
            var = ds.createVariable(name, "f8", ("rlat", "rlon"))
            var.setncatts({"standard_name": "latitude" if name == "lat" else "longitude", "units": unit})
            var[:] = values_2d
        pole = ds.createVariable("rotated_pole", "c")
        pole.setncatts(POLE)
        var = ds.createVariable(cmor, "f4", ("time", "rlat", "rlon"), fill_value=FILL, zlib=True)
        var.setncatts({"standard_name": standard, "units": units, "grid_mapping": "rotated_pole",
                       "coordinates": "lat lon", "cell_methods": "time: mean"})
        var[:] = values
        ds.setncatts({"Conventions": "CF-1.4", "project_id": "CORDEX", "CORDEX_domain": "EUR-44",
                      "frequency": "day", "title": "synthetic EURO-CORDEX-like data (hpcdiff synth)"})
