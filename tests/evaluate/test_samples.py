"""Reading SAMPLES.nc: the contract of hpcdiff merge, and a one-line error for each way to break it."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
from samples_file import dataset_grid, write_samples

from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate.samples import read_samples, replace_non_finite

UNITS = {"t2m": "K", "tp": "kg m-2", "e": "kg m-2"}
DATES = np.array(["2001-01-02", "2003-07-04"], "datetime64[D]")


def fields(members=3, shape=(32, 32), seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=(DATES.size, members, *shape)).astype(np.float32) for name in UNITS}


def read(path, dataset, **kwargs):
    grid = dataset_grid(dataset)
    return read_samples(path, variables=kwargs.pop("variables", UNITS), shape=kwargs.pop("shape", (32, 32)),
                        x=grid["x"], y=grid["y"], **kwargs)


def test_reads_fields_dates_and_attributes(tiny, tmp_path):
    values = fields()
    path = write_samples(tmp_path / "s.nc", values, dates=DATES, dataset=tiny[1])
    samples = read(path, tiny[1])
    assert samples.dates.tolist() == DATES.tolist() and samples.members == 3
    for name in UNITS:
        assert samples.fields[name].dtype == np.float32
        np.testing.assert_array_equal(samples.fields[name], values[name])
    assert samples.attrs["hpcdiff_sampler"] == "ddim" and samples.attrs["hpcdiff_members"] == 3


def test_reads_by_dimension_name(tiny, tmp_path):
    values = fields(members=2)
    path = write_samples(tmp_path / "s.nc", values, dates=DATES, dataset=tiny[1])
    with netCDF4.Dataset(path, "a") as ds:  # the same field stored (member, time, y, x)
        var = ds.createVariable("t2m_swapped", "f4", ("member", "time", "y", "x"))
        var[:] = values["t2m"].transpose(1, 0, 2, 3)
        ds.renameVariable("t2m", "t2m_old")
        ds.renameVariable("t2m_swapped", "t2m")
    np.testing.assert_array_equal(read(path, tiny[1]).fields["t2m"], values["t2m"])


def test_missing_file_and_not_netcdf(tiny, tmp_path):
    with pytest.raises(HpcdiffError, match="no such file"):
        read(tmp_path / "absent.nc", tiny[1])
    junk = tmp_path / "junk.nc"
    junk.write_text("this is not NetCDF\n")
    with pytest.raises(HpcdiffError, match=r"junk\.nc: not a readable NetCDF file"):
        read(junk, tiny[1])


def test_missing_variable_and_wrong_units(tiny, tmp_path):
    values = fields()
    del values["tp"]
    path = write_samples(tmp_path / "s.nc", values, dates=DATES, dataset=tiny[1])
    with pytest.raises(HpcdiffError, match="variable 'tp' is missing"):
        read(path, tiny[1])
    path = write_samples(tmp_path / "u.nc", fields(), dates=DATES, dataset=tiny[1],
                         units={**UNITS, "t2m": "degC"})
    with pytest.raises(HpcdiffError, match="'t2m' is in 'degC'"):
        read(path, tiny[1])


def test_grid_shape_mismatch(tiny, tmp_path):
    path = write_samples(tmp_path / "s.nc", fields(shape=(32, 30)), dates=DATES, dataset=tiny[1])
    with pytest.raises(HpcdiffError, match=r"s\.nc: grid is 32 x 30 .* dataset's is 32 x 32"):
        read(path, tiny[1])


def test_shifted_grid_and_missing_dimension(tiny, tmp_path):
    path = write_samples(tmp_path / "s.nc", fields(), dates=DATES, dataset=tiny[1])
    with netCDF4.Dataset(path, "a") as ds:
        ds["x"][:] = ds["x"][:] + 2500.0
    with pytest.raises(HpcdiffError, match="coordinate 'x' differs"):
        read(path, tiny[1])
    flat = tmp_path / "flat.nc"
    with netCDF4.Dataset(flat, "w") as ds:
        for dim, size in (("time", 2), ("y", 32), ("x", 32)):
            ds.createDimension(dim, size)
        ds.createVariable("t2m", "f4", ("time", "y", "x"))
    with pytest.raises(HpcdiffError, match="missing dimension.*member"):
        read(flat, tiny[1])


def test_non_finite_values_are_counted_and_replaced(tiny, tmp_path):
    values = fields()
    values["e"][1, 0, 3, 3] = np.nan
    values["e"][0, 2, 1, 1] = np.inf
    values["e"][0, 1, 0, 0] = -np.inf
    path = write_samples(tmp_path / "s.nc", values, dates=DATES, dataset=tiny[1])
    samples = read(path, tiny[1])
    assert samples.non_finite == {"t2m": 0, "tp": 0, "e": 3}
    truth = np.array([-4.0, 0.5, 2.0])
    fixed = replace_non_finite(samples.fields["e"], truth)
    assert (fixed[1, 0, 3, 3], fixed[0, 2, 1, 1], fixed[0, 1, 0, 0]) == (2.0, 2.0, -4.0)
    assert np.isfinite(fixed).all() and np.isnan(samples.fields["e"][1, 0, 3, 3])
    assert replace_non_finite(samples.fields["t2m"], truth) is samples.fields["t2m"]


def test_repeated_dates(tiny, tmp_path):
    path = write_samples(tmp_path / "d.nc", fields(), dates=DATES[[0, 0]], dataset=tiny[1])
    with pytest.raises(HpcdiffError, match="lists a date twice"):
        read(path, tiny[1])
