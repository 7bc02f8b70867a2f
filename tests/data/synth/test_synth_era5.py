"""ERA5 files of the synthetic world: both CDS layouts decode to the intended values, and the daily
aggregates read back (with the preprocessing's reader) are the intended ones."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

from hpcdiff.data.synth import World
from hpcdiff.data.synth.era5 import coarse_daily, pack_int16
from hpcdiff.data.synth.meta import ACCUMULATIONS, ERA5_META, ERA5_VARS, PACK_HALF_RANGE
from hpcdiff.data.synth.weather import era5_fields

NC3_YEAR, NC4_YEAR = 1992, 1991


def quantum_tolerance(scale: float, values: np.ndarray) -> float:
    """Half a packing quantum, plus float32 rounding in case a decoder unpacks to float32."""
    return 0.5 * scale * (1 + 1e-9) + 2 * float(np.spacing(np.float32(np.abs(values).max())))


@pytest.mark.parametrize("engine", ["netcdf4", "scipy"])
def test_nc3_flavour_decodes_to_intended_values(world: World, engine: str) -> None:
    times, intended = era5_fields(world, NC3_YEAR)
    path = world.era5_path(NC3_YEAR)
    with netCDF4.Dataset(path) as raw:
        assert raw.data_model == "NETCDF3_64BIT_OFFSET"
        assert raw["time"].dtype == np.int32 and raw["time"].units.startswith("hours since 1900-01-01")
        scales = {}
        for name in ERA5_VARS:
            var = raw[name]
            assert var.dimensions == ("time", "latitude", "longitude") and var.dtype == np.int16
            assert var._FillValue == -32767 and var.missing_value == -32767
            scales[name] = float(var.scale_factor)
    with xr.open_dataset(path, engine=engine) as ds:
        assert np.all(np.diff(ds["latitude"].values) < 0)
        assert ds["longitude"].values.min() >= 0 and ds["longitude"].values.max() <= 360
        np.testing.assert_array_equal(ds["time"].values.astype("datetime64[s]"), times)
        for name in ERA5_VARS:
            error = np.abs(ds[name].values.astype(np.float64) - intended[name]).max()
            assert error <= quantum_tolerance(scales[name], intended[name]), name
        assert ds["t2m"].attrs["units"] == "K" and 255 < float(ds["t2m"].min()) < float(ds["t2m"].max()) < 300
        assert float(ds["tp"].min()) >= 0.0 and float(ds["e"].median()) < 0


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
def test_nc4_flavour_decodes_to_intended_values(world: World, engine: str) -> None:
    times, intended = era5_fields(world, NC4_YEAR)
    path = world.era5_path(NC4_YEAR)
    with netCDF4.Dataset(path) as raw:
        assert raw.data_model == "NETCDF4"
        assert raw["valid_time"].dtype == np.int64 and raw["valid_time"].units == "seconds since 1970-01-01"
        assert raw["t2m"].dimensions == ("valid_time", "latitude", "longitude")
        assert raw["t2m"].dtype == np.float32
    with xr.open_dataset(path, engine=engine) as ds:
        assert "time" not in ds.variables and {"number", "expver"} <= set(ds.coords)
        assert int(ds["number"]) == 0 and set(ds["expver"].values.tolist()) == {"0001"}
        assert np.all(np.diff(ds["latitude"].values) < 0)
        assert ds["longitude"].values.min() >= -180 and ds["longitude"].values.max() < 180
        np.testing.assert_array_equal(ds["valid_time"].values.astype("datetime64[s]"), times)
        for name in ERA5_VARS:
            np.testing.assert_array_equal(ds[name].values, intended[name].astype(np.float32))
            assert ds[name].attrs["units"] == ERA5_META[name][0]


def test_pack_int16_zero_decodes_to_exact_zero() -> None:
    values = np.array([0.0, 1e-5, 3.7e-3, 0.0])
    packed, scale, offset = pack_int16(values, nonnegative=True)
    decoded = packed * scale + offset
    assert packed.min() == -PACK_HALF_RANGE and decoded[0] == 0.0 and decoded.min() >= 0.0
    assert np.abs(decoded - values).max() <= 0.5 * scale * (1 + 1e-9)


def packing_scales(world: World, year: int) -> dict[str, float]:
    """``scale_factor`` of each ERA5 variable of ``year``'s file (0 for unpacked float32 files)."""
    with netCDF4.Dataset(world.era5_path(year)) as raw:
        return {name: float(getattr(raw[name], "scale_factor", 0.0)) for name in ERA5_VARS}


@pytest.mark.parametrize("year", [NC3_YEAR, NC4_YEAR])
def test_coarse_daily_aggregates_the_intended_hourly_values(world: World, year: int) -> None:
    """The daily aggregates the law starts from are the mean of the 24 intended values stamped 00..23 UTC
    (states) and the sum x 1000 (m -> kg m-2) of those stamped 01..24 UTC (accumulations, stamped at the
    end of their hour), to the files' packing or float32 rounding. The file ends with the 00 UTC step
    after its last date."""
    dates = world.dates[year]
    daily = coarse_daily(world, dates)
    times, intended = era5_fields(world, year)
    assert times.size == dates.size * 24 + 1 and times[-1] == (dates[-1] + 1).astype("datetime64[s]")
    scales = packing_scales(world, year)
    for name in ERA5_VARS:
        if name in ACCUMULATIONS:
            hourly = intended[name][1:].reshape(dates.size, 24, *intended[name].shape[1:])
            expected, per_day = hourly.sum(axis=1) * 1000.0, 24 * 1000.0
        else:
            hourly = intended[name][:-1].reshape(dates.size, 24, *intended[name].shape[1:])
            expected, per_day = hourly.mean(axis=1), 1.0
        tolerance = per_day * quantum_tolerance(scales[name], intended[name])
        assert daily[name].shape == (dates.size, world.era5_lat.size, world.era5_lon.size)
        assert np.abs(daily[name] - expected).max() <= tolerance, name


def test_coarse_daily_keeps_the_order_of_dates_across_years(world: World) -> None:
    dates = np.array([world.dates[NC3_YEAR][1], world.dates[NC4_YEAR][4], world.dates[NC3_YEAR][0]])
    together = coarse_daily(world, dates)
    for i, date in enumerate(dates):
        alone = coarse_daily(world, [date])
        for name in ERA5_VARS:
            np.testing.assert_array_equal(together[name][i], alone[name][0], err_msg=name)
