"""ERA5 and target readers: both CDS flavours, coordinate conventions, daily aggregation, bad input."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
from mini_world import ERA5_LAT, ERA5_LON, expected_era5, write_era5, write_target

from hpcdiff.data.recipe import Era5Variable, TargetVariable
from hpcdiff.data.sources import (
    OpenFiles,
    canonical_units,
    read_era5_days,
    read_target_days,
    read_target_grid,
    scan_era5,
    scan_target,
)
from hpcdiff.errors import HpcdiffError

VARS = {"t2m": "K", "tp": "m", "e": "m", "msl": "Pa"}
SPECS = [Era5Variable("t2m", "K"), Era5Variable("tp", "m", kind="accumulation"),
         Era5Variable("e", "m", kind="accumulation")]


@pytest.mark.parametrize("flavour", ["nc3", "nc4"])
def test_both_flavours_decode_to_the_same_daily_values(tmp_path, flavour):
    path = tmp_path / "era5.nc"
    write_era5(path, 2001, days=3, flavour=flavour)
    info = scan_era5(path, frequency="auto", variables=VARS)
    assert info.step_s == 3600 and info.times[0] == np.datetime64("2001-01-01T00:00:00")
    np.testing.assert_array_equal(info.lon, ERA5_LON)  # 0..360 wrapped back to -180..180 (same here)
    dates = info.complete_dates()
    np.testing.assert_array_equal(dates, np.arange("2001-01-01", "2001-01-04", dtype="datetime64[D]"))
    daily = read_era5_days(OpenFiles(), info, SPECS, index=info.day_index(dates[1:]))
    lat2, lon2 = np.meshgrid(ERA5_LAT, ERA5_LON, indexing="ij")
    for c, name in enumerate(("t2m", "tp", "e")):
        want = expected_era5(name, dates[1:], lat2, lon2)
        tol = 0.05 if name == "t2m" else 0.02 * np.abs(want).max()  # nc3 is int16-packed
        np.testing.assert_allclose(daily[:, c], want, atol=tol)
    assert daily[:, 1].min() > -1e-3 and daily[:, 2].max() < 0  # kg m-2: precipitation >= 0, evaporation < 0


def test_longitudes_0_360_are_wrapped(tmp_path):
    path = tmp_path / "west.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("time", 2)
        ds.createDimension("latitude", 2)
        ds.createDimension("longitude", 3)
        ds.createVariable("time", "f8", ("time",))[:] = [0, 1]
        ds["time"].units = "days since 2001-01-01"
        ds.createVariable("latitude", "f8", ("latitude",))[:] = [56, 55]
        ds.createVariable("longitude", "f8", ("longitude",))[:] = [359.5, 0.0, 0.5]
    info = scan_era5(path, frequency="auto", variables={})
    assert info.step_s == 86400
    np.testing.assert_array_equal(info.lon, [-0.5, 0.0, 0.5])


def test_daily_files_keep_states_and_convert_accumulations(tmp_path):
    path = tmp_path / "daily.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        for dim, size in (("valid_time", 3), ("latitude", 2), ("longitude", 2)):
            ds.createDimension(dim, size)
        ds.createVariable("valid_time", "i8", ("valid_time",))[:] = np.array([0, 1, 2]) * 86400
        ds["valid_time"].units = "seconds since 2001-01-01"
        ds.createVariable("latitude", "f8", ("latitude",))[:] = [56, 55]
        ds.createVariable("longitude", "f8", ("longitude",))[:] = [9, 10]
        for name, units, value in (("t2m", "K", 280.0), ("tp", "m", 0.004)):
            var = ds.createVariable(name, "f4", ("valid_time", "latitude", "longitude"))
            var.units = units
            var[:] = np.full((3, 2, 2), value) * np.arange(1, 4)[:, None, None]
    info = scan_era5(path, frequency="auto", variables={"t2m": "K", "tp": "m"})
    assert info.step_s == 86400 and info.complete_dates().size == 3
    daily = read_era5_days(OpenFiles(), info, SPECS[:2], index=info.day_index(info.complete_dates()[1:]))
    np.testing.assert_allclose(daily[:, 0, 0, 0], [560.0, 840.0])
    np.testing.assert_allclose(daily[:, 1, 0, 0], [8.0, 12.0], rtol=1e-6)  # m of water -> kg m-2


def test_units_spellings():
    assert canonical_units("m s**-1") == canonical_units("m s-1") == canonical_units("m  s^-1")
    assert canonical_units("kg m**-2") == "kg m-2"
    assert canonical_units("m of water equivalent") == "m" != canonical_units("mm")


def test_target_reader_cuts_the_window(tmp_path):
    path = tmp_path / "danra.nc"
    write_target(path, 2001, days=4)
    info = scan_target(path, variables={"t2m": "K", "tp": "kg m-2"})
    assert info.dates.size == 4
    grid = read_target_grid(path)
    assert grid.lat.shape == (grid.y.size, grid.x.size) and grid.mapping["grid_mapping_name"]
    block = read_target_days(OpenFiles(), path, [TargetVariable("t2m", "K"), TargetVariable("tp", "kg m-2")],
                             index=np.array([1, 2]), window=(slice(2, 5), slice(0, 4)))
    assert block.shape == (2, 2, 3, 4)
    with netCDF4.Dataset(path) as ds:
        np.testing.assert_allclose(block[:, 0], ds["t2m"][1:3, 2:5, 0:4], rtol=1e-6)


def _corrupt(path, name, values):
    with netCDF4.Dataset(path, "a") as ds:
        ds[name][0, 0, :3] = values


@pytest.mark.parametrize(("how", "message"), [
    ("nan", "NaN"), ("fill", "fill/missing"), ("units", "units 'degC'"), ("missing", "missing variable 'tp'"),
])
def test_bad_era5_values_name_file_and_variable(tmp_path, how, message):
    path = tmp_path / "era5_2001.nc"
    write_era5(path, 2001, days=2, names=("t2m",) if how == "missing" else ("t2m", "tp"))
    if how == "nan":
        _corrupt(path, "t2m", np.nan)
    elif how == "fill":
        _corrupt(path, "t2m", np.ma.masked)
    elif how == "units":
        with netCDF4.Dataset(path, "a") as ds:
            ds["t2m"].units = "degC"
    with pytest.raises(HpcdiffError, match=message) as err:
        info = scan_era5(path, frequency="auto", variables={"t2m": "K", "tp": "m"})
        read_era5_days(OpenFiles(), info, [SPECS[0], SPECS[1]], index=info.day_index(info.complete_dates()))
    assert str(path) in str(err.value)


def test_not_netcdf_and_truncated(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_text("this is not NetCDF\n")
    with pytest.raises(HpcdiffError, match="not a readable NetCDF file"):
        scan_era5(junk, frequency="auto", variables={})
    for flavour in ("nc3", "nc4"):
        path = tmp_path / f"cut_{flavour}.nc"
        write_era5(path, 2001, days=2, flavour=flavour)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(HpcdiffError, match=str(path)):
            info = scan_era5(path, frequency="auto", variables=VARS)
            read_era5_days(OpenFiles(), info, SPECS, index=info.day_index(info.complete_dates()))


def test_irregular_time_axis_is_an_error(tmp_path):
    path = tmp_path / "gap.nc"
    write_era5(path, 2001, days=2, flavour="nc4")
    with netCDF4.Dataset(path, "a") as ds:
        ds["valid_time"][5] = ds["valid_time"][4]
    with pytest.raises(HpcdiffError, match="not strictly increasing"):
        scan_era5(path, frequency="auto", variables={})


def test_target_without_lat_lon(tmp_path):
    path = tmp_path / "danra.nc"
    write_target(path, 2001, days=2)
    with netCDF4.Dataset(path, "a") as ds:
        ds.renameVariable("lat", "latitude_2d")
    with pytest.raises(HpcdiffError, match="no 2-D 'lat'"):
        read_target_grid(path)
