"""The large-scale driver: a term of the fine law that only context carries (yesterday's ERA5 t2m
anomaly upstream), on a small written world with a driver, against an independent recomputation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hpcdiff.data.regrid import apply_bilinear, plan_bilinear
from hpcdiff.data.synth import World, coarse_daily, load_world, write_world
from hpcdiff.data.synth.geometry import build_world, check_upstream, era5_axes
from hpcdiff.data.synth.law import Driver, Law, Preset, get_preset, law_from_dict
from hpcdiff.data.synth.meta import SEED_EPOCH, TARGET_VARS
from hpcdiff.data.synth.truth import conditional_params, driver_field, truth
from hpcdiff.data.synth.weather import latent_anchors
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import to_days

DRIVER = Driver(t2m_k=2.0, tp_latent=0.4, shift_deg=2.0, lag_days=1)
# two years (nc4 1995, nc3 1996) of 24-day blocks, daily ERA5, a box reaching 3 deg west
DRIFT = Preset("drift", shape=(16, 16), years=(1995, 1996), days_per_year=24, era5_freq="1D",
               margin_deg=(3.0, 1.0, 1.0, 1.0), law=Law(driver=DRIVER))


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = write_world(tmp_path_factory.mktemp("drift") / "world", preset=DRIFT, seed=3, progress=False)
    return load_world(root)


def without_driver(world: World) -> World:
    """The same world (same files) under the law without the driver."""
    return dataclasses.replace(world, law=dataclasses.replace(world.law, driver=Driver()))


def all_dates(world: World) -> np.ndarray:
    return np.concatenate([world.dates[y] for y in world.years])


def recomputed_driver(world: World, dates: np.ndarray) -> np.ndarray:
    """``D`` ``[T, H, W]`` from the definition: yesterday's daily t2m read from the files, interpolated
    2 deg west of each target point, minus its climate (doy 1 on 1 January), over t2m_anomaly_k."""
    cw, peak = world.law.coarse, world.law.fine.season_peak_doy
    out = np.zeros((dates.size, *world.shape))
    for i, date in enumerate(dates):
        before = date - np.timedelta64(1, "D")
        if not any(np.isin(before, days) for days in world.dates.values()):
            continue
        t2m = coarse_daily(world, [before])["t2m"][0]
        plan = plan_bilinear(world.era5_lat, world.era5_lon, world.lat, world.lon - 2.0)
        doy = (before - before.astype("datetime64[Y]")).astype(int) + 1
        climate = (cw.t2m_mean_k + cw.t2m_season_k * np.cos(2 * np.pi * (doy - peak) / 365.25)
                   + cw.t2m_lat_k_per_deg * (world.lat - 56.0))
        out[i] = (apply_bilinear(plan, t2m) - climate) / cw.t2m_anomaly_k
    return out


def test_driver_adds_its_strength_times_yesterdays_upstream_anomaly(drift: World) -> None:
    dates = all_dates(drift)[[1, 2, 10, 30, 47]]  # both years, both ERA5 layouts
    with_d, plain = conditional_params(drift, dates), conditional_params(without_driver(drift), dates)
    d = recomputed_driver(drift, dates)
    assert np.all(np.abs(d).max(axis=(1, 2)) > 0.01)
    np.testing.assert_allclose(with_d["t2m"] - plain["t2m"], 2.0 * d, rtol=0, atol=1e-9)
    np.testing.assert_allclose(with_d["tp_latent"] - plain["tp_latent"], 0.4 * d, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(with_d["e"], plain["e"])
    np.testing.assert_allclose(driver_field(drift, dates), d, rtol=0, atol=1e-10)


def test_first_day_of_a_block_has_no_driver(drift: World) -> None:
    firsts = np.array([drift.dates[y][0] for y in drift.years])
    assert not drift.holds(firsts - np.timedelta64(1, "D")).any()
    np.testing.assert_array_equal(driver_field(drift, firsts), 0.0)
    with_d, plain = conditional_params(drift, firsts), conditional_params(without_driver(drift), firsts)
    for name in ("t2m", "tp_latent", "e"):
        np.testing.assert_array_equal(with_d[name], plain[name], err_msg=name)


def test_world_json_keeps_the_driver_and_old_files_load_without_one(drift: World) -> None:
    assert drift.law == DRIFT.law and drift.law.driver == DRIVER
    meta = json.loads((drift.root / "world.json").read_text())
    assert meta["law"]["driver"] == dataclasses.asdict(DRIVER)
    assert meta["era5_grid"]["lon_west"] <= float(drift.lon.min()) - 3.0
    old = dataclasses.asdict(Law())
    del old["driver"]
    assert law_from_dict(json.loads(json.dumps(old))) == Law()
    assert not law_from_dict(old).driver.active
    with pytest.raises(HpcdiffError, match="lag_days"):
        Driver(lag_days=-1)


def test_truth_is_centred_on_the_law_with_the_driver(drift: World) -> None:
    dates = drift.dates[1996]
    with xr.open_dataset(drift.danra_path(1996)) as ds:
        stored = {name: ds[name].values for name in TARGET_VARS}
    again = truth(drift, dates)
    for name in TARGET_VARS:
        np.testing.assert_array_equal(stored[name], again[name].astype(np.float32), err_msg=name)
    std = drift.law.fine.t2m_noise.std
    residual = stored["t2m"] - conditional_params(drift, dates)["t2m"]
    daily = residual.mean(axis=(1, 2))  # pixels are correlated, days independent
    assert abs(daily.mean()) < 4 * daily.std(ddof=1) / np.sqrt(dates.size), daily
    assert abs(residual.std() / std - 1) < 0.15, residual.std()
    # without the driver in the location, the residual carries 2 K x D besides the noise
    blind = stored["t2m"] - conditional_params(without_driver(drift), dates)["t2m"]
    assert blind.std() > 2 * std, blind.std()


def test_driver_is_yesterdays_upstream_latent_temperature(drift: World) -> None:
    """With daily ERA5, ``D`` is the unit-variance latent T of the day before at the upstream points, up
    to int16 packing (1996, nc3) or float32 rounding (1995, nc4)."""
    dates = all_dates(drift)
    held = drift.holds(dates - np.timedelta64(1, "D"))
    days = to_days(dates[held] - np.timedelta64(1, "D"), epoch=SEED_EPOCH)
    latent = apply_bilinear(drift.upstream_plan, latent_anchors(drift, days)[:, 0])
    d = driver_field(drift, dates[held])
    assert np.abs(d - latent).max() < 2e-4
    assert 0.5 < d.std() < 1.5, d.std()


def test_margins_per_side_and_upstream_points_inside_the_box(tmp_path: Path) -> None:
    lat, lon = np.array([[55.1, 55.9]]), np.array([[10.1, 10.9]])
    era5_lat, era5_lon = era5_axes(lat, lon, margin_deg=(3.0, 1.0, 0.5, 2.0))
    assert (era5_lat[0], era5_lat[-1], era5_lon[0], era5_lon[-1]) == (58.0, 54.5, 7.0, 12.0)
    for one, four in ((1.0, (1.0,) * 4), (0.3, (0.3,) * 4)):
        same = zip(era5_axes(lat, lon, margin_deg=one), era5_axes(lat, lon, margin_deg=four), strict=True)
        for a, b in same:
            np.testing.assert_array_equal(a, b)
    with pytest.raises(HpcdiffError, match="west, east, south, north"):
        era5_axes(lat, lon, margin_deg=(1.0, 1.0, 1.0))
    check_upstream(Law(), lon, era5_axes(lat, lon, margin_deg=1.0)[1])  # no strength, nothing to check
    check_upstream(Law(driver=DRIVER), lon, era5_lon)
    with pytest.raises(HpcdiffError, match="upstream.*widen margin_deg"):
        check_upstream(Law(driver=dataclasses.replace(DRIVER, shift_deg=3.5)), lon, era5_lon)
    with pytest.raises(HpcdiffError, match="upstream.*widen margin_deg"):
        build_world(tmp_path, dataclasses.replace(DRIFT, margin_deg=1.0), seed=0)


def test_context_preset_box_reaches_upstream(tmp_path: Path) -> None:
    spec = get_preset("context")
    assert spec.law is not None and spec.law.driver == DRIVER
    assert (spec.shape, spec.days_per_year, spec.era5_freq) == ((64, 64), 60, "1D")
    world = build_world(tmp_path, spec, seed=0)
    assert world.law == spec.law
    box = (world.era5_lat[0], world.era5_lat[-1], world.era5_lon[0], world.era5_lon[-1])
    assert box == (58.75, 53.0, 3.0, 14.0) and world.era5_lat.size == 24 and world.era5_lon.size == 45
    assert world.lon.min() - 2.0 - world.era5_lon[0] > 3.5  # the upstream points lie well inside
