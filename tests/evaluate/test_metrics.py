"""Metrics against independent references: closed forms, brute force, known fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hpcdiff.evaluate import metrics


def brute_fair_crps(ens, obs):
    t, m = ens.shape[:2]
    total = 0.0
    for i in range(m):
        total += np.abs(ens[:, i] - obs).mean()
    pair = 0.0
    for i in range(m):
        for j in range(m):
            pair += np.abs(ens[:, i] - ens[:, j]).mean()
    return total / m - pair / (2 * m * (m - 1))


def test_fair_crps_equals_brute_force():
    rng = np.random.default_rng(0)
    ens, obs = rng.normal(size=(3, 5, 4, 6)), rng.normal(size=(3, 4, 6))
    assert metrics.crps_fair(ens, obs) == pytest.approx(brute_fair_crps(ens, obs), rel=1e-12)
    mask = rng.random((4, 6)) > 0.5
    sub = brute_fair_crps(ens[..., mask][..., None], obs[..., mask][..., None])
    assert metrics.crps_fair(ens, obs, mask) == pytest.approx(sub, rel=1e-12)


def test_fair_crps_matches_gaussian_closed_form():
    rng = np.random.default_rng(1)
    mu, sigma, y = 0.3, 1.7, 1.1
    ens = rng.normal(mu, sigma, size=(200, 4, 1, 50))  # small M: the fair estimator stays unbiased
    obs = np.full((200, 1, 50), y)
    z = (y - mu) / sigma
    closed = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert metrics.crps_fair(ens, obs) == pytest.approx(closed, rel=0.02)


def test_deterministic_crps_is_mae_and_basic_scores():
    obs = np.arange(12.0).reshape(1, 3, 4)
    pred = obs + np.array([1.0, -1.0, 3.0, 0.0]).reshape(1, 1, 4)
    assert metrics.mae_deterministic(pred, obs) == pytest.approx(1.25)
    assert metrics.bias(pred, obs) == pytest.approx(0.75)
    assert metrics.rmse(pred, obs) == pytest.approx(math.sqrt((1 + 1 + 9) / 4))
    mask = np.zeros((3, 4), bool)
    mask[:, 2] = True
    assert metrics.bias(pred, obs, mask) == pytest.approx(3.0)


def test_rank_histogram_counts_against_brute_force():
    rng = np.random.default_rng(2)
    ens = rng.integers(0, 5, size=(4, 3, 2, 5)).astype(float)
    obs = rng.integers(0, 5, size=(4, 2, 5)).astype(float)
    ens_nt, obs_nt = ens + rng.random(ens.shape) * 1e-3, obs + rng.random(obs.shape) * 1e-3  # no ties
    hist = metrics.rank_histogram(ens_nt, obs_nt)
    expected = np.zeros(4, int)
    for t in range(4):
        for p in np.ndindex(2, 5):
            expected[(ens_nt[t, :, p[0], p[1]] < obs_nt[t, p[0], p[1]]).sum()] += 1
    assert hist.tolist() == expected.tolist()
    assert metrics.rank_histogram(ens, obs).sum() == pytest.approx(4 * 10)  # ties are spread, never dropped


def test_rank_histogram_shares_a_tie_among_the_ranks_it_spans():
    """One case: members 1, 2, 2, 3 and the truth 2 may rank 1, 2 or 3: a third of the case each."""
    members = np.array([1.0, 2.0, 2.0, 3.0])[None, :, None, None]
    obs = np.full((1, 1, 1), 2.0)
    assert metrics.rank_histogram(members, obs) == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 0])


def test_crps_per_date_of_a_hand_computed_case():
    """Two members 0 and 2, truth 1 on date 0 (E|X-y| = 1, E|X-X'|/2 over distinct pairs = 1: CRPS 0)
    and truth 3 on date 1 (E|X-y| = 2, minus 1: CRPS 1)."""
    members = np.array([0.0, 2.0])[None, :, None, None].repeat(2, axis=0)
    obs = np.array([1.0, 3.0]).reshape(2, 1, 1)
    assert metrics.crps_per_date(members, obs).tolist() == pytest.approx([0.0, 1.0])
    assert metrics.crps_fair(members, obs) == pytest.approx(0.5)


def test_calibrated_ensemble_is_flat_and_spread_skill_one():
    rng = np.random.default_rng(3)
    centre = rng.normal(size=(300, 1, 8, 8))
    ens = centre + rng.normal(size=(300, 9, 8, 8))
    obs = centre[:, 0] + rng.normal(size=(300, 8, 8))
    hist = metrics.rank_histogram(ens, obs)
    assert hist.min() / hist.max() > 0.85
    assert metrics.spread_skill(ens, obs) == pytest.approx(1.0, abs=0.03)
    assert metrics.spread_skill(ens * 0.3 + centre * 0.7, obs) < 0.5  # under-dispersive


def test_psd_of_a_sine_peaks_at_its_wavenumber():
    n, dx, cycles = 64, 2.5, 8
    x = np.arange(n) * dx
    field = np.sin(2 * np.pi * cycles * x / (n * dx))[None, :].repeat(n, axis=0)
    k, psd = metrics.radial_psd(field, dx_km=dx)
    assert k[np.argmax(psd)] == pytest.approx(cycles / (n * dx))
    assert psd[np.argmax(psd)] > 100 * np.delete(psd, np.argmax(psd)).max()


def test_psd_total_power_and_high_ratio():
    rng = np.random.default_rng(4)
    white = rng.normal(size=(20, 32, 32))
    k, psd = metrics.radial_psd(white)
    assert np.allclose(psd, 1.0, rtol=0.25)  # white noise: flat spectrum at the variance
    smooth = (white + np.roll(white, 1, -1) + np.roll(white, 1, -2) + np.roll(white, (1, 1), (-2, -1))) / 4
    assert metrics.psd_high_ratio(white, white) == pytest.approx(1.0)
    assert metrics.psd_high_ratio(smooth, white) < 0.3  # a 2x2 box filter removes ~80% up there


def test_quantiles_and_wet_days():
    values = np.array([0.0, 0.5, 1.0, 2.0, 10.0]).reshape(1, 1, 5)
    assert metrics.wet_day_frequency(values) == pytest.approx(0.6)
    assert metrics.quantiles(values, np.array([0.0, 0.5, 1.0])).tolist() == [0.0, 1.0, 10.0]


@pytest.mark.parametrize("y", [-2.0, 0.4, 3.5])
def test_fair_crps_of_a_large_gaussian_ensemble_is_the_closed_form(y):
    rng = np.random.default_rng(5)
    mu, sigma, members = 0.4, 1.3, 400
    ens = rng.normal(mu, sigma, size=(4, members, 1, 25))
    z = (y - mu) / sigma
    closed = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert metrics.crps_fair(ens, np.full((4, 1, 25), y)) == pytest.approx(closed, rel=0.02)


def test_fair_crps_needs_two_members():
    with pytest.raises(ValueError, match="2 members"):
        metrics.crps_fair(np.zeros((1, 1, 2, 2)), np.zeros((1, 2, 2)))


def test_rank_histogram_of_a_constructed_case():
    members = np.arange(1.0, 4.0)[None, :, None, None] * np.ones((2, 3, 2, 3))  # members 1, 2, 3 everywhere
    obs = np.array([[0.5, 1.5, 2.5], [3.5, 3.5, 9.0]])[None].repeat(2, axis=0)  # ranks 0, 1, 2, 3, 3, 3
    assert metrics.rank_histogram(members, obs).tolist() == [2, 2, 2, 6]
    mask = np.array([[True, False, False], [False, False, False]])
    assert metrics.rank_histogram(members, obs, mask).tolist() == [2, 0, 0, 0]


def test_spectrum_of_a_diagonal_sine_peaks_at_its_radial_wavenumber():
    n, dx = 64, 2.5
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    field = np.cos(2 * np.pi * (6 * xx + 8 * yy) / n)  # |k| = 10 cycles per domain
    k, psd = metrics.radial_psd(field, dx_km=dx)
    assert k[np.argmax(psd)] == pytest.approx(10 / (n * dx))


def test_spread_skill_above_one_for_an_over_dispersive_ensemble():
    rng = np.random.default_rng(6)
    centre = rng.normal(size=(200, 1, 6, 6))
    obs = centre[:, 0] + rng.normal(size=(200, 6, 6))
    m = 8
    wide = centre + 2.0 * rng.normal(size=(200, m, 6, 6))
    # spread^2 = (M+1)/M * 4, error of the mean = 2 mean(eps) - eta: variance 4/M + 1
    assert metrics.spread_skill(wide, obs) == pytest.approx(math.sqrt(4 * (m + 1) / (m + 4)), rel=0.05)
