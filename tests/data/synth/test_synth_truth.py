"""The conditional law on a written world: the truth in the target files, the oracle ensemble and the
bilinear baseline against the law's definition."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import xarray as xr

from hpcdiff.data.regrid import apply_bilinear
from hpcdiff.data.synth import World
from hpcdiff.data.synth.era5 import coarse_daily
from hpcdiff.data.synth.fields import noise_covariance
from hpcdiff.data.synth.law import NoiseSpec
from hpcdiff.data.synth.meta import TARGET_VARS
from hpcdiff.data.synth.truth import (
    bilinear_baseline,
    conditional_mean,
    conditional_params,
    oracle_ensemble,
    season,
    truth,
)
from hpcdiff.errors import HpcdiffError


def all_dates(world: World) -> np.ndarray:
    return np.concatenate([world.dates[y] for y in world.years])


def test_truth_is_the_law_reproduced_from_the_files(world: World) -> None:
    dates = world.dates[2003]
    with xr.open_dataset(world.danra_path(2003)) as ds:
        stored = {name: ds[name].values for name in TARGET_VARS}
    again = truth(world, dates)
    for name in TARGET_VARS:
        np.testing.assert_array_equal(stored[name], again[name].astype(np.float32), err_msg=name)


def domain_mean_sd(world: World, spec: NoiseSpec) -> float:
    """Exact standard deviation of the domain mean of one noise field (pixels are correlated)."""
    cov = noise_covariance(world.noise_shape, spec=spec, dx_km=world.grid.dx_m / 1000)
    height, width = world.shape
    dy, dx = np.meshgrid(np.arange(1 - height, height), np.arange(1 - width, width), indexing="ij")
    pairs = (height - np.abs(dy)) * (width - np.abs(dx))
    return float(np.sqrt((cov[dy, dx] * pairs).sum()) / (height * width))


def test_truth_is_a_draw_from_the_law(world: World) -> None:
    dates = all_dates(world)
    fine = world.law.fine
    params = conditional_params(world, dates)
    files = {name: [] for name in TARGET_VARS}
    for year in world.years:
        with xr.open_dataset(world.danra_path(year)) as ds:
            for name in TARGET_VARS:
                files[name].append(ds[name].values.astype(np.float64))
    stored = {k: np.concatenate(v) for k, v in files.items()}
    for name, spec in (("t2m", fine.t2m_noise), ("e", fine.e_noise)):
        z = (stored[name] - params[name]) / spec.std
        se = domain_mean_sd(world, spec) / spec.std / np.sqrt(dates.size)  # days are independent
        assert abs(z.mean()) < 4 * se and abs(z.std() - 1) < 0.1, (name, z.mean(), se, z.std())
    a, sd = params["tp_latent"], fine.tp_noise.std
    dry_expected = scipy.special.ndtr(-a / sd).mean()
    assert abs((stored["tp"] == 0).mean() - dry_expected) < 0.05
    mean_tp = conditional_mean(world, dates)["tp"]
    assert abs(stored["tp"].mean() / mean_tp.mean() - 1) < 0.1


def test_oracle_matches_the_law(world: World) -> None:
    dates = np.array([world.dates[1994][2], world.dates[2001][3]])
    members = 200
    ens = oracle_ensemble(world, dates, members=members, seed=7)
    assert ens["t2m"].dims == ("time", "member", "y", "x") and ens.sizes["member"] == members
    mean = conditional_mean(world, dates)
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


def test_oracle_does_not_depend_on_batching(world: World) -> None:
    dates = all_dates(world)[[3, 40]]
    both = oracle_ensemble(world, dates, members=3, seed=5)
    alone = oracle_ensemble(world, dates[1:], members=2, seed=5)
    for name in TARGET_VARS:
        np.testing.assert_array_equal(both[name].values[1, :2], alone[name].values[0])
    other = oracle_ensemble(world, dates[1:], members=1, seed=6)
    assert not np.array_equal(other["t2m"].values[0, 0], alone["t2m"].values[0, 0])


def test_bilinear_baseline_differs_from_the_mean_by_the_geography(world: World) -> None:
    dates = world.dates[1999][:2]
    base = bilinear_baseline(world, dates)
    assert base["t2m"].dims == ("time", "y", "x") and base["t2m"].attrs["units"] == "K"
    daily = coarse_daily(world, dates)
    np.testing.assert_allclose(base["tp"].values, apply_bilinear(world.plan, daily["tp"]), rtol=1e-6)
    fine = world.law.fine
    s = season(world, dates)[:, None, None]
    geography = -fine.lapse_rate_k_per_m * world.orography + fine.land_sea_k * s * (world.lsm - 0.5)
    mean = conditional_mean(world, dates)
    np.testing.assert_allclose(mean["t2m"] - base["t2m"].values, geography, atol=1e-4)


def test_dates_outside_the_world_are_refused(world: World) -> None:
    with pytest.raises(HpcdiffError, match="1990-06-01"):
        conditional_mean(world, ["1990-06-01"])
