"""ERA5 inputs in the layouts users download, written from the mini world's hourly law
(:func:`mini_world.era5_value`): GRIB 1 written with ecCodes as CDS delivers it (instantaneous
variables as analyses, accumulations as 06 and 18 UTC forecasts with steps 1..12 h), the new CDS split
layout (one NetCDF per step type), monthly files, ``expver`` mixing and scalar-time daily files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from mini_world import ERA5_LAT, ERA5_LON, UNITS, era5_value

H0 = np.datetime64("2000-01-01T00", "h")
GRIB_SHORT = {"t2m": "2t", "tp": "tp", "e": "e", "msl": "msl"}
ACCUMULATED = ("tp", "e")


def hours_since_2000(times: np.ndarray) -> np.ndarray:
    return (np.asarray(times, "datetime64[h]") - H0).astype(np.int64)


def grid() -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(ERA5_LAT, ERA5_LON, indexing="ij")


def write_grib(path: Path, *, first: str, last: str, names: Sequence[str] = ("t2m", "tp", "e", "msl"),
               edition: int = 1) -> None:
    """Hourly values stamped ``first`` .. ``last`` (ISO hours), as CDS delivers a request for them:
    analyses of the instantaneous ``names``, and steps of the 06/18 UTC forecasts (1..12 h, each the
    accumulation of the hour ending at its valid time) of the accumulated ones."""
    import eccodes

    lat2, lon2 = grid()
    hours = np.arange(np.datetime64(first, "h"), np.datetime64(last, "h") + 1)
    sample = eccodes.codes_grib_new_from_samples(f"regular_ll_sfc_grib{edition}")
    geometry = {"Ni": ERA5_LON.size, "Nj": ERA5_LAT.size,
                "latitudeOfFirstGridPointInDegrees": float(ERA5_LAT[0]),
                "latitudeOfLastGridPointInDegrees": float(ERA5_LAT[-1]),
                "longitudeOfFirstGridPointInDegrees": float(ERA5_LON[0]),
                "longitudeOfLastGridPointInDegrees": float(ERA5_LON[-1]),
                "iDirectionIncrementInDegrees": 0.5, "jDirectionIncrementInDegrees": 0.5,
                "jScansPositively": 0}

    def message(f, name: str, base: np.datetime64, step: int, values: np.ndarray) -> None:
        h = eccodes.codes_clone(sample)
        eccodes.codes_set_key_vals(h, geometry)
        eccodes.codes_set(h, "centre", "ecmf")
        eccodes.codes_set(h, "bitsPerValue", 24)
        eccodes.codes_set(h, "shortName", GRIB_SHORT[name])
        day = str(base.astype("datetime64[D]")).replace("-", "")
        eccodes.codes_set(h, "dataDate", int(day))
        eccodes.codes_set(h, "dataTime", int((base - base.astype("datetime64[D]")).astype(int)) * 100)
        if step:
            eccodes.codes_set(h, "stepType", "accum")
            eccodes.codes_set(h, "startStep", step - 1)
            eccodes.codes_set(h, "endStep", step)
        eccodes.codes_set_values(h, values.ravel().astype(np.float64))
        eccodes.codes_write(h, f)
        eccodes.codes_release(h)

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for name in names:
            if name not in ACCUMULATED:
                for hour in hours:
                    message(f, name, hour, 0, era5_value(name, hours_since_2000([hour]), lat2, lon2)[0])
                continue
            start = hours[0] - np.timedelta64(12, "h")
            bases = [b for b in np.arange(start, hours[-1] + 1) if int(hours_since_2000([b])[0]) % 12 == 6]
            for base in bases:
                for step in range(1, 13):
                    valid = base + np.timedelta64(step, "h")
                    if not hours[0] <= valid <= hours[-1]:
                        continue  # CDS delivers the requested valid times only
                    message(f, name, base, step, era5_value(name, hours_since_2000([valid]), lat2, lon2)[0])
    eccodes.codes_release(sample)


def era5_dataset(times: np.ndarray, names: Sequence[str], *, time_name: str = "valid_time") -> xr.Dataset:
    """A new-CDS-like dataset of ``names`` at ``times`` (datetime64 hours)."""
    lat2, lon2 = grid()
    h = hours_since_2000(times)
    data = {name: ((time_name, "latitude", "longitude"), era5_value(name, h, lat2, lon2).astype(np.float32),
                   {"units": UNITS[name]}) for name in names}
    seconds = (np.asarray(times, "datetime64[s]") - np.datetime64("1970-01-01T00", "s")).astype(np.int64)
    time_attrs = {"units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"}
    coords = {time_name: (time_name, seconds, time_attrs),
              "latitude": ("latitude", ERA5_LAT, {"units": "degrees_north"}),
              "longitude": ("longitude", ERA5_LON, {"units": "degrees_east"}), "number": ((), 0)}
    return xr.Dataset(data, coords=coords)


def write_netcdf(path: Path, ds: xr.Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4")
    return path


def hourly(first: str, last: str) -> np.ndarray:
    return np.arange(np.datetime64(first, "h"), np.datetime64(last, "h") + 1)
