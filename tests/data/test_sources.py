"""ERA5 and target readers: the layouts users download (both CDS NetCDF flavours, GRIB with forecast
steps, split files, monthly files, expver, scalar times, Zarr), accumulation windows, units, bad input."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr
from era5_layouts import era5_dataset, hourly, write_grib, write_netcdf
from mini_world import ERA5_LAT, ERA5_LON, era5_value, expected_era5, write_era5, write_target

from hpcdiff.data.era5 import scan_era5_inputs
from hpcdiff.data.formats import OpenInputs
from hpcdiff.data.recipe import Era5Variable, TargetVariable
from hpcdiff.data.sources import read_static_field, read_target_days, read_target_grid, scan_target
from hpcdiff.data.units import conversion, same_units
from hpcdiff.errors import HpcdiffError

SPECS = [Era5Variable("t2m", "K"), Era5Variable("tp", "m", kind="accumulation"),
         Era5Variable("e", "m", kind="accumulation"), Era5Variable("msl", "Pa")]
LAT2, LON2 = np.meshgrid(ERA5_LAT, ERA5_LON, indexing="ij")


def days(first: str, last: str) -> np.ndarray:
    return np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1)


def read(paths, dates, specs=SPECS, **kw):
    inputs = scan_era5_inputs(paths, specs, **kw)
    with OpenInputs() as files:
        return inputs, inputs.read_days(files, dates)


def assert_expected(daily, dates, specs=SPECS, *, rtol=1e-5):
    for c, spec in enumerate(specs):
        want = expected_era5(spec.name, dates, LAT2, LON2)
        atol = rtol * np.abs(want).max()
        np.testing.assert_allclose(daily[:, c], want, atol=atol, err_msg=spec.name)


@pytest.mark.parametrize("flavour", ["nc3", "nc4"])
def test_both_flavours_decode_to_the_same_daily_values(tmp_path, flavour):
    path = tmp_path / "era5.nc"
    write_era5(path, 2001, days=3, flavour=flavour)
    inputs = scan_era5_inputs([path], SPECS)
    assert inputs.series[0].step_s == 3600
    np.testing.assert_array_equal(inputs.lon, ERA5_LON)  # 0..360 wrapped back to -180..180 (same here)
    dates = inputs.complete_dates()
    np.testing.assert_array_equal(dates, days("2001-01-01", "2001-01-03"))
    with OpenInputs() as files:
        daily = inputs.read_days(files, dates[1:])
    for c, name in enumerate(("t2m", "tp", "e", "msl")):
        want = expected_era5(name, dates[1:], LAT2, LON2)
        tol = 0.05 if name in ("t2m", "msl") else 0.02 * np.abs(want).max()  # nc3 is int16-packed
        np.testing.assert_allclose(daily[:, c], want, atol=tol)
    assert daily[:, 1].min() > -1e-3 and daily[:, 2].max() < 0  # kg m-2: precipitation >= 0, evaporation < 0


def test_a_file_keeps_its_last_complete_day(tmp_path):
    """Hourly 02-27 00 .. 03-01 00: states 27, 28, 29 complete, accumulations (01..24) too; 02-26 23 ..
    02-29 22: states lack 29's 23 UTC, accumulations lack 26's 01..23, so 27 and 28 remain."""
    a = write_netcdf(tmp_path / "a.nc", era5_dataset(hourly("2020-02-27T00", "2020-03-01T00"), ["t2m", "tp"]))
    inputs, daily = read([a], days("2020-02-27", "2020-02-29"), SPECS[:2])
    np.testing.assert_array_equal(inputs.complete_dates(), days("2020-02-27", "2020-02-29"))
    assert_expected(daily, days("2020-02-27", "2020-02-29"), SPECS[:2])
    b = write_netcdf(tmp_path / "b.nc", era5_dataset(hourly("2020-02-26T23", "2020-02-29T22"), ["t2m", "tp"]))
    np.testing.assert_array_equal(scan_era5_inputs([b], SPECS[:2]).complete_dates(),
                                  days("2020-02-27", "2020-02-28"))


def test_days_are_assembled_across_monthly_files(tmp_path):
    """Monthly files 00..23 UTC of each day, as CDS delivers them: the 31st's last accumulation hour is the
    next file's first step, so no month end is lost; values equal one file holding everything."""
    jan = write_netcdf(tmp_path / "era5_2001_01.nc",
                       era5_dataset(hourly("2001-01-01T00", "2001-01-31T23"), ["t2m", "tp", "e", "msl"]))
    feb = write_netcdf(tmp_path / "era5_2001_02.nc",
                       era5_dataset(hourly("2001-02-01T00", "2001-02-28T23"), ["t2m", "tp", "e", "msl"]))
    dates = days("2001-01-30", "2001-02-02")
    inputs, daily = read([jan, feb], dates)
    np.testing.assert_array_equal(inputs.complete_dates(), days("2001-01-01", "2001-02-27"))
    assert_expected(daily, dates)


def test_accumulation_window_is_configurable(tmp_path):
    path = write_netcdf(tmp_path / "a.nc", era5_dataset(hourly("2001-01-01T00", "2001-01-04T00"), ["tp"]))
    dates = days("2001-01-02", "2001-01-03")
    _, end_stamped = read([path], dates, [Era5Variable("tp", "m", kind="accumulation")])
    _, shifted = read([path], dates, [Era5Variable("tp", "m", kind="accumulation", window=(0, 23))])
    base = (dates.astype("datetime64[h]") - np.datetime64("2000-01-01T00", "h")).astype(np.int64)
    for first, got in ((1, end_stamped), (0, shifted)):
        hours = (base[:, None] + np.arange(first, first + 24)).ravel()
        by_hand = era5_value("tp", hours, LAT2, LON2).reshape(2, 24, *LAT2.shape).sum(axis=1) * 1000.0
        np.testing.assert_allclose(got[:, 0], by_hand, rtol=1e-5)
    assert not np.allclose(shifted, end_stamped)


def test_grib_with_forecast_steps_and_short_names(tmp_path):
    """GRIB 1 written with ecCodes: 2t analyses (short name 2t is t2m), tp/e as 06 and 18 UTC forecasts with
    steps 1..12 (cfgrib's (time, step)); values land on their valid times. No index file is written."""
    path = tmp_path / "era5_2001.grib"
    write_grib(path, first="2001-01-01T00", last="2001-01-04T23")
    dates = days("2001-01-01", "2001-01-03")
    inputs, daily = read([path], dates)
    # the 4th lacks its 24 UTC step: cfgrib's hypercube has the cell (18 UTC + 6 h), no message holds it
    np.testing.assert_array_equal(inputs.complete_dates(), days("2001-01-01", "2001-01-03"))
    assert_expected(daily, dates, rtol=1e-4)  # 24-bit GRIB packing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["era5_2001.grib"]


def test_new_cds_split_layout_finds_each_variable_in_its_file(tmp_path):
    times = hourly("2001-01-01T00", "2001-01-03T00")
    instant = write_netcdf(tmp_path / "data_stream-oper_stepType-instant.nc",
                           era5_dataset(times, ["t2m", "msl"]))
    accum = write_netcdf(tmp_path / "data_stream-oper_stepType-accum.nc", era5_dataset(times, ["tp", "e"]))
    dates = days("2001-01-01", "2001-01-02")
    _, daily = read([accum, instant], dates)
    assert_expected(daily, dates)
    with pytest.raises(HpcdiffError, match=r"missing variable 'u10' or '10u'.*in all 2 ERA5 inputs.*"
                                           r"they hold: e, msl, t2m, tp"):
        scan_era5_inputs([accum, instant], [*SPECS, Era5Variable("u10", "m s-1")])


def test_expver_is_collapsed_era5_first(tmp_path):
    """ERA5 (expver 1) where it has values, ERA5T (expver 5) where ERA5 is missing."""
    times = hourly("2001-01-01T00", "2001-01-03T00")
    ds = era5_dataset(times, ["t2m"])
    era5 = ds["t2m"].values.copy()
    era5[30:] = np.nan  # ERA5 ends on 01-02 06 UTC
    era5t = np.where(np.isnan(era5), ds["t2m"].values, -999.0)
    ds["t2m"] = xr.DataArray(np.stack([era5, era5t], axis=1),
                             dims=("valid_time", "expver", "latitude", "longitude"), attrs={"units": "K"})
    ds = ds.assign_coords(expver=("expver", ["0001", "0005"]))
    path = write_netcdf(tmp_path / "mixed.nc", ds)
    dates = days("2001-01-01", "2001-01-02")
    _, daily = read([path], dates, SPECS[:1])
    assert_expected(daily, dates, SPECS[:1])


def test_scalar_time_daily_files(tmp_path):
    """One daily file per date, each with a scalar time (CDS's daily statistics, one request per day)."""
    paths = []
    for date in days("2001-01-01", "2001-01-03"):
        ds = era5_dataset(np.array([date.astype("datetime64[h]")]), ["t2m"], time_name="time").isel(time=0)
        paths.append(write_netcdf(tmp_path / f"t2m_{date}.nc", ds))
    inputs, daily = read(paths, days("2001-01-01", "2001-01-03"), SPECS[:1])
    assert inputs.series[0].step_s == 86400
    want = [era5_dataset(np.array([d.astype("datetime64[h]")]), ["t2m"])["t2m"].values[0]
            for d in days("2001-01-01", "2001-01-03")]
    np.testing.assert_allclose(daily[:, 0], want, rtol=1e-6)


def test_daily_files_keep_states_and_convert_accumulations(tmp_path):
    path = tmp_path / "daily.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        for dim, size in (("valid_time", 3), ("latitude", 2), ("longitude", 2)):
            ds.createDimension(dim, size)
        ds.createVariable("valid_time", "i8", ("valid_time",))[:] = np.array([0, 1, 2]) * 86400
        ds["valid_time"].units = "seconds since 2001-01-01"
        ds.createVariable("latitude", "f8", ("latitude",))[:] = [56, 55]
        ds.createVariable("longitude", "f8", ("longitude",))[:] = [369, 370]  # 0..360 beyond 360: wrapped
        for name, units, value in (("t2m", "degC", 7.0), ("tp", "mm", 4.0)):
            var = ds.createVariable(name, "f4", ("valid_time", "latitude", "longitude"))
            var.units = units
            var[:] = np.full((3, 2, 2), value) * np.arange(1, 4)[:, None, None]
    inputs, daily = read([path], days("2001-01-02", "2001-01-03"), SPECS[:2])
    np.testing.assert_array_equal(inputs.lon, [9.0, 10.0])
    assert inputs.series[0].step_s == 86400 and inputs.complete_dates().size == 3
    np.testing.assert_allclose(daily[:, 0, 0, 0], [14.0 + 273.15, 21.0 + 273.15], rtol=1e-6)  # degC -> K
    np.testing.assert_allclose(daily[:, 1, 0, 0], [8.0, 12.0], rtol=1e-6)  # mm -> m -> kg m-2


def test_units_through_pint():
    assert same_units("m s**-1", "m s-1") and same_units("m s-1", "m/s")
    assert same_units("meters", "m") and same_units("metres", "m")
    assert same_units("m of water equivalent", "m")
    assert same_units("kg m**-2", "kg m-2") and not same_units("mm", "m")
    assert conversion("mm", "m", where="x") == (0.001, 0.0)
    with pytest.raises(HpcdiffError, match="f.nc: 'parsecs of doom' is not a unit"):
        conversion("parsecs of doom", "m", where="f.nc")


def test_flux_to_daily_total(tmp_path):
    """A CORDEX-like daily precipitation flux (kg m-2 s-1) becomes a daily total in kg m-2."""
    ds = era5_dataset(hourly("2001-01-01T00", "2001-01-02T00")[[0, 24]], ["tp"])
    ds["pr"] = xr.full_like(ds["tp"], 1e-5).assign_attrs(units="kg m-2 s-1")
    path = write_netcdf(tmp_path / "pr_day.nc", ds.drop_vars("tp"))
    _, daily = read([path], days("2001-01-01", "2001-01-02"), [Era5Variable("tp", "kg m-2 s-1", kind="flux",
                                                                            source="pr")])
    np.testing.assert_allclose(daily, 0.864, rtol=1e-5)


def test_bad_values_name_file_variable_and_hour(tmp_path):
    path = tmp_path / "era5_2001.nc"
    write_era5(path, 2001, days=2, flavour="nc4")
    with netCDF4.Dataset(path, "a") as ds:
        ds["t2m"][30, 0, :3] = np.nan
    inputs = scan_era5_inputs([path], SPECS[:1])
    message = rf"{path}: variable 't2m' has 3 fill/missing or NaN values, first at 2001-01-02T06:00:00 UTC"
    with pytest.raises(HpcdiffError, match=message), OpenInputs() as files:
        inputs.read_days(files, days("2001-01-01", "2001-01-02"))


def test_missing_hour_names_the_hour(tmp_path):
    times = np.delete(hourly("2001-01-01T00", "2001-01-03T00"), 30)
    path = write_netcdf(tmp_path / "gap.nc", era5_dataset(times, ["t2m"]))
    inputs = scan_era5_inputs([path], SPECS[:1])
    np.testing.assert_array_equal(inputs.complete_dates(), days("2001-01-01", "2001-01-01"))
    assert "has no value for 2001-01-02T06:00:00 UTC, needed for 2001-01-02" in inputs.missing(
        np.datetime64("2001-01-02"))


def test_a_step_in_two_files_is_an_error(tmp_path):
    a = write_netcdf(tmp_path / "a.nc", era5_dataset(hourly("2001-01-01T00", "2001-01-02T00"), ["t2m"]))
    b = write_netcdf(tmp_path / "b.nc", era5_dataset(hourly("2001-01-02T00", "2001-01-03T00"), ["t2m"]))
    with pytest.raises(HpcdiffError, match=r"'t2m' at 2001-01-02T00:00:00 UTC is also in"):
        scan_era5_inputs([a, b], SPECS[:1])


def test_not_netcdf_and_truncated(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_text("this is not NetCDF\n")
    with pytest.raises(HpcdiffError, match="not a readable NetCDF, GRIB or Zarr input"):
        scan_era5_inputs([junk], SPECS)
    for flavour in ("nc3", "nc4"):
        path = tmp_path / f"cut_{flavour}.nc"
        write_era5(path, 2001, days=2, flavour=flavour)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(HpcdiffError, match=str(path)):
            inputs = scan_era5_inputs([path], SPECS)
            with OpenInputs() as files:
                inputs.read_days(files, inputs.complete_dates())


def test_target_reader_cuts_the_window(tmp_path):
    path = tmp_path / "danra.nc"
    write_target(path, 2001, days=4)
    info = scan_target(path, variables={"t2m": "K", "tp": "kg m-2"})
    assert info.dates.size == 4
    grid = read_target_grid(path)
    assert grid.lat.shape == (grid.y.size, grid.x.size) and grid.mapping["grid_mapping_name"]
    with OpenInputs() as files:
        block = read_target_days(files, info, [TargetVariable("t2m", "K"), TargetVariable("tp", "kg m-2")],
                                 index=np.array([1, 2]), window=(slice(2, 5), slice(0, 4)))
    assert block.shape == (2, 2, 3, 4)
    with netCDF4.Dataset(path) as ds:
        np.testing.assert_allclose(block[:, 0], ds["t2m"][1:3, 2:5, 0:4], rtol=1e-6)


def test_danra_as_zarr_reads_like_netcdf(tmp_path):
    """A Zarr store (DANRA as distributed), chunked in time and space, gives the NetCDF file's values,
    grid and grid mapping; only the window's chunks are read."""
    nc = tmp_path / "danra.nc"
    write_target(nc, 2001, days=4)
    store = tmp_path / "danra.zarr"
    with xr.open_dataset(nc, decode_times=False) as ds:
        ds.chunk({"time": 1, "y": 4, "x": 4}).to_zarr(store, zarr_format=2, consolidated=True)
    specs = [TargetVariable("t2m", "K"), TargetVariable("tp", "kg m-2")]
    window = (slice(2, 5), slice(1, 9))
    with OpenInputs() as files:
        got = read_target_days(files, scan_target(store, variables={"t2m": "K", "tp": "kg m-2"}), specs,
                               index=np.array([1, 2, 3]), window=window)
        want = read_target_days(files, scan_target(nc, variables={"t2m": "K", "tp": "kg m-2"}), specs,
                                index=np.array([1, 2, 3]), window=window)
    np.testing.assert_array_equal(got, want)
    zgrid, ngrid = read_target_grid(store), read_target_grid(nc)
    np.testing.assert_array_equal(zgrid.lat, ngrid.lat)
    assert zgrid.mapping == ngrid.mapping and zgrid.mapping_name == ngrid.mapping_name
    np.testing.assert_array_equal(zgrid.x, ngrid.x)


def test_static_fields_from_zarr(tmp_path):
    from mini_world import land_mask, write_static
    nc = tmp_path / "static.nc"
    write_static(nc)
    store = tmp_path / "static.zarr"
    with xr.open_dataset(nc) as ds:
        ds.to_zarr(store, zarr_format=2)
    np.testing.assert_array_equal(read_static_field(store, "lsm", units=None), land_mask())
    np.testing.assert_allclose(read_static_field(store, "orography", units="km"),
                               read_static_field(nc, "orography", units="m") / 1000.0)


def test_target_without_lat_lon(tmp_path):
    path = tmp_path / "danra.nc"
    write_target(path, 2001, days=2)
    with netCDF4.Dataset(path, "a") as ds:
        ds.renameVariable("lat", "latitude_2d")
    with pytest.raises(HpcdiffError, match="no 2-D 'lat'"):
        read_target_grid(path)


def test_new_cds_zip_is_read_in_place(tmp_path):
    """The new CDS's download: a zip holding one NetCDF per step type, read without extracting."""
    import zipfile

    times = hourly("2001-01-01T00", "2001-01-03T00")
    instant = write_netcdf(tmp_path / "i.nc", era5_dataset(times, ["t2m", "msl"]))
    accum = write_netcdf(tmp_path / "a.nc", era5_dataset(times, ["tp", "e"]))
    download = tmp_path / "download" / "era5_2001_01.zip"
    download.parent.mkdir()
    with zipfile.ZipFile(download, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(instant, "data_stream-oper_stepType-instant.nc")
        z.write(accum, "data_stream-oper_stepType-accum.nc")
    dates = days("2001-01-01", "2001-01-02")
    _, daily = read([download], dates)
    assert_expected(daily, dates)
    assert [p.name for p in download.parent.iterdir()] == ["era5_2001_01.zip"]


def test_cfgrib_forecast_layout_saved_as_netcdf(tmp_path):
    """A GRIB download opened with cfgrib and saved with xarray keeps accumulations as (time, step) with a
    2-D valid_time; the steps the request did not include are NaN cells, not missing values."""
    import cfgrib

    grib = tmp_path / "era5.grib"
    write_grib(grib, first="2001-01-01T00", last="2001-01-03T23", names=("tp",))
    (ds,) = cfgrib.open_datasets(str(grib), backend_kwargs={"indexpath": ""})
    assert ds["tp"].dims == ("time", "step", "latitude", "longitude") and np.isnan(ds["tp"].values).any()
    path = write_netcdf(tmp_path / "era5_from_cfgrib.nc", ds)
    dates = days("2001-01-01", "2001-01-02")
    inputs, daily = read([path], dates, SPECS[1:2])
    np.testing.assert_array_equal(inputs.complete_dates(), dates)
    assert_expected(daily, dates, SPECS[1:2], rtol=1e-4)


def test_static_units_spelled_meters(tmp_path):
    from mini_world import write_static
    path = tmp_path / "static.nc"
    write_static(path)
    with netCDF4.Dataset(path, "a") as ds:
        ds["orography"].units = "meters"
    np.testing.assert_array_equal(read_static_field(path, "orography", units="m"),
                                  read_static_field(path, "orography", units="metres"))
