"""The synthetic world (tiny preset): file formats of both CDS flavours, the target grid, and the law
(oracle, truth, spectrum) against its definition."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import scipy.special
import scipy.stats
import xarray as xr

from hpcdiff.data import synthetic as syn
from hpcdiff.data.lambert import LambertConformal
from hpcdiff.data.recipe import Era5Variable
from hpcdiff.data.regrid import apply_bilinear
from hpcdiff.data.sources import OpenFiles, read_era5_days, scan_era5
from hpcdiff.errors import HpcdiffError

NC3_YEAR, NC4_YEAR = 1992, 1991


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> syn.World:
    root = syn.write_world(tmp_path_factory.mktemp("synth") / "world", preset="tiny", seed=0, progress=False)
    return syn.load_world(root)


def all_dates(world: syn.World) -> np.ndarray:
    return np.concatenate([world.dates[y] for y in world.years])


def test_folder_layout_and_world_json(world: syn.World) -> None:
    meta = json.loads((world.root / "world.json").read_text())
    assert {"preset", "seed", "years", "era5_freq", "law", "target_grid", "format_version"} <= set(meta)
    assert meta["preset"] == "tiny" and meta["years"] == list(range(1991, 2006)) and meta["era5_freq"] == "1h"
    assert meta["target_grid"]["shape"] == [32, 32]
    for year in world.years:
        assert world.era5_path(year).is_file() and world.danra_path(year).is_file()
        assert world.flavours[year] == ("nc3" if year % 2 == 0 else "nc4")
    assert world.static_path.is_file()
    assert [p.name for p in world.root.iterdir() if p.name.startswith(".")] == []


def quantum_tolerance(scale: float, values: np.ndarray) -> float:
    """Half a packing quantum, plus float32 rounding in case a decoder unpacks to float32."""
    return 0.5 * scale * (1 + 1e-9) + 2 * float(np.spacing(np.float32(np.abs(values).max())))


@pytest.mark.parametrize("engine", ["netcdf4", "scipy"])
def test_nc3_flavour_decodes_to_intended_values(world: syn.World, engine: str) -> None:
    times, intended = syn.era5_fields(world, NC3_YEAR)
    path = world.era5_path(NC3_YEAR)
    with netCDF4.Dataset(path) as raw:
        assert raw.data_model == "NETCDF3_64BIT_OFFSET"
        assert raw["time"].dtype == np.int32 and raw["time"].units.startswith("hours since 1900-01-01")
        scales = {}
        for name in syn.ERA5_VARS:
            var = raw[name]
            assert var.dimensions == ("time", "latitude", "longitude") and var.dtype == np.int16
            assert var._FillValue == -32767 and var.missing_value == -32767
            scales[name] = float(var.scale_factor)
    with xr.open_dataset(path, engine=engine) as ds:
        assert np.all(np.diff(ds["latitude"].values) < 0)
        assert ds["longitude"].values.min() >= 0 and ds["longitude"].values.max() <= 360
        np.testing.assert_array_equal(ds["time"].values.astype("datetime64[s]"), times)
        for name in syn.ERA5_VARS:
            error = np.abs(ds[name].values.astype(np.float64) - intended[name]).max()
            assert error <= quantum_tolerance(scales[name], intended[name]), name
        assert ds["t2m"].attrs["units"] == "K" and 255 < float(ds["t2m"].min()) < float(ds["t2m"].max()) < 300
        assert float(ds["tp"].min()) >= 0.0 and float(ds["e"].median()) < 0


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
def test_nc4_flavour_decodes_to_intended_values(world: syn.World, engine: str) -> None:
    times, intended = syn.era5_fields(world, NC4_YEAR)
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
        for name in syn.ERA5_VARS:
            np.testing.assert_array_equal(ds[name].values, intended[name].astype(np.float32))
            assert ds[name].attrs["units"] == syn.ERA5_META[name][0]


def test_pack_int16_zero_decodes_to_exact_zero() -> None:
    values = np.array([0.0, 1e-5, 3.7e-3, 0.0])
    packed, scale, offset = syn.pack_int16(values, nonnegative=True)
    decoded = packed * scale + offset
    assert packed.min() == -syn.PACK_HALF_RANGE and decoded[0] == 0.0 and decoded.min() >= 0.0
    assert np.abs(decoded - values).max() <= 0.5 * scale * (1 + 1e-9)


def test_coarse_daily_is_what_preprocessing_reads(world: syn.World) -> None:
    for year in (NC3_YEAR, NC4_YEAR):
        dates = world.dates[year]
        ours = syn.coarse_daily(world, dates)
        units = {name: syn.ERA5_META[name][0] for name in syn.ERA5_VARS}
        info = scan_era5(world.era5_path(year), frequency="auto", variables=units)
        specs = [Era5Variable(name=n, units=u, kind="accumulation" if n in syn.ACCUMULATIONS else "state")
                 for n, u in units.items()]
        with OpenFiles() as files:
            theirs = read_era5_days(files, info, specs, index=info.day_index(dates))
        for c, name in enumerate(syn.ERA5_VARS):
            np.testing.assert_array_equal(ours[name], theirs[:, c], err_msg=name)
        _, intended = syn.era5_fields(world, year)
        hourly = intended["t2m"].reshape(dates.size, 24, *intended["t2m"].shape[1:])
        np.testing.assert_allclose(ours["t2m"], hourly.mean(axis=1), atol=1e-3)


def test_target_grid_and_statics(world: syn.World) -> None:
    with xr.open_dataset(world.static_path) as st, xr.open_dataset(world.danra_path(1995)) as dn:
        for ds in (st, dn):
            for axis in ("x", "y"):
                np.testing.assert_array_equal(np.diff(ds[axis].values), 2500.0)
            assert ds["lambert_conformal_conic"].attrs["grid_mapping_name"] == "lambert_conformal_conic"
        proj = LambertConformal.from_cf(st["lambert_conformal_conic"].attrs)
        lat, lon = proj.inverse(*np.meshgrid(st["x"].values, st["y"].values))
        np.testing.assert_allclose(st["lat"].values, lat, atol=1e-9)
        np.testing.assert_allclose(st["lon"].values, lon, atol=1e-9)
        assert abs(float(st["lat"].mean()) - 56.0) < 0.05 and abs(float(st["lon"].mean()) - 10.5) < 0.05
        lsm, oro = st["lsm"].values, st["orography"].values
        assert 0.05 < lsm.mean() < 0.95 and set(np.unique(lsm)) == {0.0, 1.0}
        assert np.all(oro[lsm == 0] == 0) and 20 < oro.max() < 400 and oro.min() >= 0
        assert dn["t2m"].dims == ("time", "y", "x")
        assert dn["t2m"].attrs["grid_mapping"] == "lambert_conformal_conic"
        assert dn["tp"].attrs["units"] == "kg m-2" and float(dn["tp"].min()) >= 0
        times = dn["time"].values
        np.testing.assert_array_equal(times, world.dates[1995].astype("datetime64[ns]"))


@pytest.mark.parametrize("parallels", [(56.7, 56.7), (50.0, 60.0)])
def test_lambert_round_trip(parallels: tuple[float, float]) -> None:
    proj = LambertConformal(standard_parallels=parallels, central_meridian=8.0, origin_lat=56.7)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(50, 62, 500), rng.uniform(-5, 25, 500)
    x, y = proj.forward(lat, lon)
    back_lat, back_lon = proj.inverse(x, y)
    np.testing.assert_allclose(back_lat, lat, atol=1e-10)
    np.testing.assert_allclose(back_lon, lon, atol=1e-10)
    origin = proj.forward(np.array(56.7), np.array(8.0))
    np.testing.assert_allclose(origin, (0.0, 0.0), atol=1e-6)
    # conformal: the scale factor is 1 on the standard parallels (distances of a 1 m east step)
    for phi in set(parallels):
        x0, y0 = proj.forward(np.array(phi), np.array(8.0))
        x1, y1 = proj.forward(np.array(phi), np.array(8.0 + 1e-4))
        along = np.deg2rad(1e-4) * proj.earth_radius_m * np.cos(np.deg2rad(phi))
        assert abs(float(np.hypot(x1 - x0, y1 - y0)) / along - 1) < 1e-6


def test_truth_is_the_law_reproduced_from_the_files(world: syn.World) -> None:
    dates = world.dates[2003]
    with xr.open_dataset(world.danra_path(2003)) as ds:
        stored = {name: ds[name].values for name in syn.TARGET_VARS}
    again = syn.truth(world, dates)
    for name in syn.TARGET_VARS:
        np.testing.assert_array_equal(stored[name], again[name].astype(np.float32), err_msg=name)


def domain_mean_sd(world: syn.World, spec: syn.NoiseSpec) -> float:
    """Exact standard deviation of the domain mean of one noise field (pixels are correlated)."""
    cov = syn.noise_covariance(world.noise_shape, spec=spec, dx_km=world.grid.dx_m / 1000)
    height, width = world.shape
    dy, dx = np.meshgrid(np.arange(1 - height, height), np.arange(1 - width, width), indexing="ij")
    pairs = (height - np.abs(dy)) * (width - np.abs(dx))
    return float(np.sqrt((cov[dy, dx] * pairs).sum()) / (height * width))


def test_truth_is_a_draw_from_the_law(world: syn.World) -> None:
    dates = all_dates(world)
    fine = world.law.fine
    params = syn.conditional_params(world, dates)
    truth = {name: [] for name in syn.TARGET_VARS}
    for year in world.years:
        with xr.open_dataset(world.danra_path(year)) as ds:
            for name in syn.TARGET_VARS:
                truth[name].append(ds[name].values.astype(np.float64))
    truth = {k: np.concatenate(v) for k, v in truth.items()}
    for name, spec in (("t2m", fine.t2m_noise), ("e", fine.e_noise)):
        z = (truth[name] - params[name]) / spec.std
        se = domain_mean_sd(world, spec) / spec.std / np.sqrt(dates.size)  # days are independent
        assert abs(z.mean()) < 4 * se and abs(z.std() - 1) < 0.1, (name, z.mean(), se, z.std())
    a, sd = params["tp_latent"], fine.tp_noise.std
    dry_expected = scipy.special.ndtr(-a / sd).mean()
    assert abs((truth["tp"] == 0).mean() - dry_expected) < 0.05
    mean_tp = syn.conditional_mean(world, dates)["tp"]
    assert abs(truth["tp"].mean() / mean_tp.mean() - 1) < 0.1


def test_oracle_matches_the_law(world: syn.World) -> None:
    dates = np.array([world.dates[1994][2], world.dates[2001][3]])
    members = 200
    ens = syn.oracle_ensemble(world, dates, members=members, seed=7)
    assert ens["t2m"].dims == ("time", "member", "y", "x") and ens.sizes["member"] == members
    mean = syn.conditional_mean(world, dates)
    fine = world.law.fine
    for name, spec in (("t2m", fine.t2m_noise), ("e", fine.e_noise)):
        values = ens[name].values.astype(np.float64)
        error = values.mean(axis=1) - mean[name]  # [T, H, W]
        assert np.abs(error).max() < 5.5 * spec.std / np.sqrt(members), name
        domain = np.abs(error.mean(axis=(1, 2))) / (domain_mean_sd(world, spec) / np.sqrt(members))
        assert np.all(domain < 4), (name, domain)
        assert abs(values.std(axis=1, ddof=1).mean() / spec.std - 1) < 0.05, name
    tp = ens["tp"].values.astype(np.float64)
    assert (tp == 0).any() and (tp > 0).any() and tp.min() >= 0
    assert scipy.stats.skew(tp.ravel()) > 0.5
    se = tp.std(axis=1).mean() / np.sqrt(members)
    assert abs(tp.mean(axis=1).mean() - mean["tp"].mean()) < 4 * se


def test_oracle_does_not_depend_on_batching(world: syn.World) -> None:
    dates = all_dates(world)[[3, 40]]
    both = syn.oracle_ensemble(world, dates, members=3, seed=5)
    alone = syn.oracle_ensemble(world, dates[1:], members=2, seed=5)
    for name in syn.TARGET_VARS:
        np.testing.assert_array_equal(both[name].values[1, :2], alone[name].values[0])
    other = syn.oracle_ensemble(world, dates[1:], members=1, seed=6)
    assert not np.array_equal(other["t2m"].values[0, 0], alone["t2m"].values[0, 0])


def test_bilinear_baseline_differs_from_the_mean_by_the_geography(world: syn.World) -> None:
    dates = world.dates[1999][:2]
    base = syn.bilinear_baseline(world, dates)
    assert base["t2m"].dims == ("time", "y", "x") and base["t2m"].attrs["units"] == "K"
    daily = syn.coarse_daily(world, dates)
    np.testing.assert_allclose(base["tp"].values, apply_bilinear(world.plan, daily["tp"]), rtol=1e-6)
    fine = world.law.fine
    s = syn.season(world, dates)[:, None, None]
    geography = -fine.lapse_rate_k_per_m * world.orography + fine.land_sea_k * s * (world.lsm - 0.5)
    mean = syn.conditional_mean(world, dates)
    np.testing.assert_allclose(mean["t2m"] - base["t2m"].values, geography, atol=1e-4)


def radial_psd(fields: np.ndarray, dx_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged periodogram of periodic fields ``[N, H, H]``: angular wavenumbers, power."""
    n = fields.shape[-1]
    power = (np.abs(np.fft.fft2(fields)) ** 2).mean(axis=0)
    k = np.fft.fftfreq(n)
    ring = np.rint(np.hypot(k[:, None], k[None, :]) * n).astype(int)
    bins = np.arange(1, n // 2)
    psd = np.array([power[ring == b].mean() for b in bins])
    return 2 * np.pi * bins / (n * dx_km), psd


def test_noise_has_the_known_spectrum_and_std() -> None:
    spec = syn.NoiseSpec(std=0.6, corr_km=15.0, beta=3.0)
    rng = np.random.default_rng(0)
    fields = np.stack([syn.gaussian_field(rng, (64, 64), spec=spec, dx_km=2.5) for _ in range(40)])
    assert abs(fields.std() / spec.std - 1) < 0.03
    kappa, psd = radial_psd(fields, 2.5)
    model = syn.noise_psd(kappa, spec)
    ratio = np.log(psd / model)
    assert np.abs(ratio - np.median(ratio)).max() < 0.3
    high = kappa > 4 / spec.corr_km
    slope = np.polyfit(np.log(kappa[high]), np.log(psd[high]), 1)[0]
    model_slope = np.polyfit(np.log(kappa[high]), np.log(model[high]), 1)[0]
    assert abs(slope - model_slope) < 0.25 and model_slope < -0.9 * spec.beta


def test_same_seed_same_bytes_other_seed_other_bytes(world: syn.World, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    again = syn.write_world(tmp_path / "again", preset="tiny", seed=0, progress=True)
    assert "synth tiny" in capsys.readouterr().err
    files = sorted(p.relative_to(world.root) for p in world.root.rglob("*") if p.is_file())
    assert sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (world.root / rel).read_bytes() == (again / rel).read_bytes(), rel
    syn.write_world(again, preset="tiny", seed=0, progress=False)  # rerun replaces, identically
    for rel in files:
        assert (world.root / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = syn.write_world(tmp_path / "other", preset="tiny", seed=1, progress=False)
    for rel in (Path("era5/era5_1992.nc"), Path("era5/era5_1993.nc"), Path("danra/danra_1995.nc")):
        assert (world.root / rel).read_bytes() != (other / rel).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_unknown_preset_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(HpcdiffError, match="'huge'.*tiny, demo, bench"):
        syn.write_world(tmp_path / "w", preset="huge")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_a_one_line_error_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HpcdiffError) as err:
        syn.write_world(blocker / "w", preset="tiny", progress=False)
    assert "\n" not in str(err.value) and str(blocker) in str(err.value)
    assert list(tmp_path.iterdir()) == [blocker]


def test_dates_outside_the_world_are_refused(world: syn.World) -> None:
    with pytest.raises(HpcdiffError, match="1990-06-01"):
        syn.conditional_mean(world, ["1990-06-01"])


def test_load_world_of_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(HpcdiffError, match="world.json"):
        syn.load_world(tmp_path / "nowhere")
