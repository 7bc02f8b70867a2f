"""A minimal world in the ``hpcdiff synth`` folder contract, written with netCDF4 in well under a
second, whose ERA5 fields are *linear* in lat/lon at every hour, so bilinear regridding reproduces them
exactly and every number the preprocessing produces can be computed by hand (see :func:`expected_era5`).

Layout: ``era5/era5_<YYYY>.nc`` (even years legacy NetCDF3 int16-packed with ``time`` in hours since
1900 and longitudes 0..360; odd years NetCDF4 float32 with ``valid_time`` in seconds since 1970,
longitudes -180..180, ``number``/``expver``), latitude descending; ``danra/danra_<YYYY>.nc`` daily on a
small projected grid; ``static/static.nc``.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

ERA5_LAT = np.arange(58.0, 52.9, -0.5)  # descending, as CDS delivers it
ERA5_LON = np.arange(4.0, 16.1, 0.5)
HEIGHT, WIDTH, DX_M = 10, 14, 25_000.0
UNITS = {"t2m": "K", "tp": "m", "e": "m", "msl": "Pa"}


def target_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x`` ``[W]``, ``y`` ``[H]`` (m) and a rotated 2-D ``lat``/``lon`` ``[H, W]`` inside the ERA5 box."""
    x = np.arange(WIDTH) * DX_M - WIDTH * DX_M / 2
    y = np.arange(HEIGHT) * DX_M - HEIGHT * DX_M / 2
    xx, yy = np.meshgrid(x, y)
    lat = 55.5 + (yy * 0.97 + xx * 0.1) / 111_000.0
    lon = 10.0 + (xx * 0.97 - yy * 0.1) / (111_000.0 * np.cos(np.deg2rad(55.5)))
    return x, y, lat, lon


def era5_value(name: str, hours: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """ERA5 field ``[T, ...]`` at ``hours`` since 2000-01-01 ``[T]``: linear in lat and lon."""
    h = hours.reshape(-1, *([1] * lat.ndim)).astype(np.float64)
    day = np.floor(h / 24.0)
    if name == "t2m":
        return 275.0 + 3.0 * np.sin(2 * np.pi * h / 24) + 0.01 * day + 0.3 * (lat - 55) + 0.2 * (lon - 10)
    if name == "tp":
        return 1e-4 * (h % 3 == 0) * (1.0 + 0.1 * (lat - 55)) * (1.0 + 0.5 * np.sin(day))
    if name == "e":
        return -2e-5 * (1.0 + 0.05 * (lon - 10)) * (1.5 + np.cos(day)) + 0.0 * h
    if name == "msl":
        return 101_000.0 + 50.0 * (lat - 55) + 10.0 * np.cos(day) + 0.0 * h
    raise KeyError(name)


def expected_era5(name: str, dates: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """What preprocessing must produce from hourly ERA5 at target points: daily mean of the steps
    stamped 00..23 UTC (states) or daily sum in kg m-2 of those stamped 01..24 UTC (accumulations, which
    CDS stamps at the end of their hour) ``[n, ...]``."""
    base = (dates.astype("datetime64[h]") - np.datetime64("2000-01-01T00", "h")).astype(np.int64)
    first = 1 if name in ("tp", "e") else 0
    hours = (base[:, None] + np.arange(first, first + 24)[None, :]).ravel()
    values = era5_value(name, hours, lat, lon).reshape(len(dates), 24, *lat.shape)
    return values.sum(axis=1) * 1000.0 if name in ("tp", "e") else values.mean(axis=1)


def _packed(var_values: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = float(var_values.min()), float(var_values.max())
    scale = (hi - lo) / 60_000.0 or 1.0
    offset = (hi + lo) / 2
    return np.round((var_values - offset) / scale).astype(np.int16), scale, offset


def write_era5(path: Path, year: int, *, days: int, names: tuple[str, ...] = ("t2m", "tp", "e", "msl"),
               flavour: str | None = None, after: bool = True) -> None:
    """Hourly ERA5 for the first ``days`` days of ``year`` in the year's flavour (even: nc3), and (with
    ``after``) the 00 UTC step after them (the last day's last hourly accumulation; leave it to the next
    year's file when that one starts on the next day)."""
    flavour = flavour or ("nc3" if year % 2 == 0 else "nc4")
    start = (np.datetime64(f"{year}-01-01T00", "h") - np.datetime64("2000-01-01T00", "h")).astype(np.int64)
    hours = start + np.arange(days * 24 + int(after))
    lat2, lon2 = np.meshgrid(ERA5_LAT, ERA5_LON, indexing="ij")
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET" if flavour == "nc3" else "NETCDF4") as ds:
        tname = "time" if flavour == "nc3" else "valid_time"
        for dim, size in ((tname, None), ("latitude", ERA5_LAT.size), ("longitude", ERA5_LON.size)):
            ds.createDimension(dim, size)
        t = ds.createVariable(tname, "i4" if flavour == "nc3" else "i8", (tname,))
        if flavour == "nc3":
            t.units, t[:] = "hours since 1900-01-01 00:00:00.0", hours + 876_576  # 2000-01-01 since 1900
        else:
            t.units, t[:] = "seconds since 1970-01-01", (hours + 262_968) * 3600  # 2000-01-01 in h since 1970
        ds.createVariable("latitude", "f8", ("latitude",))[:] = ERA5_LAT
        lon = ds.createVariable("longitude", "f8", ("longitude",))
        lon[:] = ERA5_LON % 360 if flavour == "nc3" else ERA5_LON
        if flavour == "nc4":
            ds.createVariable("number", "i8").assignValue(0)
        for name in names:
            values = era5_value(name, hours, lat2, lon2)
            if flavour == "nc3":
                packed, scale, offset = _packed(values)
                var = ds.createVariable(name, "i2", (tname, "latitude", "longitude"), fill_value=-32767)
                var.scale_factor, var.add_offset, var.missing_value = scale, offset, np.int16(-32767)
                var.set_auto_scale(False)
                var[:] = packed
            else:
                var = ds.createVariable(name, "f4", (tname, "latitude", "longitude"))
                var[:] = values.astype(np.float32)
            var.units = UNITS[name]


def write_target(path: Path, year: int, *, days: int) -> None:
    """Daily targets (t2m K, tp and e kg m-2) for the first ``days`` days of ``year``."""
    x, y, lat, lon = target_grid()
    dates = np.datetime64(f"{year}-01-01") + np.arange(days)
    rng = np.random.default_rng(year)
    fields = {"t2m": expected_era5("t2m", dates, lat, lon) + rng.normal(0, 0.5, (days, HEIGHT, WIDTH)),
              "tp": expected_era5("tp", dates, lat, lon) * rng.gamma(1.0, 1.0, (days, HEIGHT, WIDTH)),
              "e": expected_era5("e", dates, lat, lon) + rng.normal(0, 0.01, (days, HEIGHT, WIDTH))}
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        _grid_vars(ds, x, y, lat, lon)
        ds.createDimension("time", None)
        t = ds.createVariable("time", "i8", ("time",))
        t.units = "days since 1970-01-01"
        t[:] = (dates - np.datetime64("1970-01-01")).astype(np.int64)
        for name, values in fields.items():
            var = ds.createVariable(name, "f4", ("time", "y", "x"))
            var[:] = values.astype(np.float32)
            var.units, var.grid_mapping = ("K" if name == "t2m" else "kg m-2"), "lambert_conformal_conic"


def _grid_vars(ds: netCDF4.Dataset, x: np.ndarray, y: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
    ds.createDimension("y", y.size)
    ds.createDimension("x", x.size)
    ds.createVariable("x", "f8", ("x",))[:] = x
    ds.createVariable("y", "f8", ("y",))[:] = y
    ds["x"].units = ds["y"].units = "m"
    ds.createVariable("lat", "f8", ("y", "x"))[:] = lat
    ds.createVariable("lon", "f8", ("y", "x"))[:] = lon
    gm = ds.createVariable("lambert_conformal_conic", "i4")
    gm.grid_mapping_name = "lambert_conformal_conic"
    gm.standard_parallel = np.array([56.7, 56.7])
    gm.longitude_of_central_meridian, gm.latitude_of_projection_origin = 10.0, 56.7


def land_mask() -> np.ndarray:
    """Land ``[H, W]`` bool: the right half plus an island."""
    land = np.zeros((HEIGHT, WIDTH), bool)
    land[:, WIDTH // 2:] = True
    land[2:4, 2:4] = True
    return land


def write_static(path: Path) -> None:
    x, y, lat, lon = target_grid()
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        _grid_vars(ds, x, y, lat, lon)
        ds.createVariable("lsm", "f4", ("y", "x"))[:] = land_mask().astype(np.float32)
        ds["lsm"].units = "1"
        oro = ds.createVariable("orography", "f4", ("y", "x"))
        oro[:] = np.where(land_mask(), 20.0 + 5.0 * np.arange(WIDTH)[None, :], 0.0)
        oro.units = "m"


def write_mini_world(root: Path, *, years: tuple[int, ...] = (2000, 2001, 2002, 2003),
                     days: int = 12) -> Path:
    """The whole folder; ``days`` days at the start of each year."""
    for year in years:
        write_era5(root / "era5" / f"era5_{year}.nc", year, days=days)
        write_target(root / "danra" / f"danra_{year}.nc", year, days=days)
    write_static(root / "static" / "static.nc")
    return root


RECIPE = """\
root: {root}
era5:
  files: [era5/era5_*.nc]
  variables:
    - {{name: t2m, units: K}}
    - {{name: tp, units: m, kind: accumulation, transform: log1p, scale: 0.1}}
    - {{name: e, units: m, kind: accumulation, transform: asinh, scale: 0.05}}
    - {{name: msl, units: Pa}}
target:
  files: [danra/danra_*.nc]
  variables:
    - {{name: t2m, units: K}}
    - {{name: tp, units: kg m-2, transform: log1p, scale: 0.1}}
    - {{name: e, units: kg m-2, transform: asinh, scale: 0.05}}
static: {{file: static/static.nc}}
split: {{train_years: [2000, 2001], val_years: [2002], test_years: [2003], test_dates: 5, test_seed: 1}}
shards: {{samples_per_shard: 8, shard_mb: null, batch_chunk: 2, compression: {compression}}}
"""


def write_recipe(path: Path, root: Path, *, compression: str = "null") -> Path:
    path.write_text(RECIPE.format(root=root, compression=compression))
    return path
