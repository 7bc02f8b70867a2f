"""Noise schedules against their closed forms, and respacing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcdiff.diffusion.schedules import (
    logsnr_timesteps,
    make_betas,
    respace_betas,
    respaced_timesteps,
    space_timesteps,
)


def test_cosine_alpha_bar_matches_closed_form():
    num_steps, s = 1000, 0.008
    betas = make_betas("cosine", num_steps)
    assert betas.dtype == np.float64 and betas.shape == (num_steps,)
    f = [math.cos((u / num_steps + s) / (1 + s) * math.pi / 2) ** 2 for u in range(num_steps + 1)]
    closed = np.array(f[1:]) / f[0]  # alpha_bar_t = f((t+1)/T) / f(0) (improved DDPM eq. 17)
    alpha_bar = np.cumprod(1.0 - betas)
    assert np.max(np.abs(alpha_bar[:-1] - closed[:-1])) < 1e-12
    assert betas[-1] == pytest.approx(0.999)  # only the singular last step is clipped
    assert np.all(betas[:-1] < 0.999) and np.all(np.diff(betas) > 0)


def test_linear_schedule_endpoints_and_rescaling():
    betas = make_betas("linear", 1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    short = make_betas("linear", 100)
    assert short[0] == pytest.approx(1e-3) and short[-1] == pytest.approx(0.2)
    assert np.all(np.diff(betas) > 0)


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match="cosine, linear"):
        make_betas("sigmoid", 10)
    with pytest.raises(ValueError):
        make_betas("cosine", 0)


def test_uniform_spacing_keeps_both_ends():
    steps = space_timesteps(1000, 10)
    assert steps[0] == 0 and steps[-1] == 999 and len(steps) == 10
    assert np.all(np.diff(steps) > 0)
    assert space_timesteps(7, 7) == list(range(7))
    for bad in (1, 1001):
        with pytest.raises(ValueError):
            space_timesteps(1000, bad)


def test_logsnr_spacing_is_even_in_log_snr_and_distinct():
    alpha_bar = np.cumprod(1.0 - make_betas("cosine", 1000))
    lam = 0.5 * np.log(alpha_bar / (1.0 - alpha_bar))
    steps = logsnr_timesteps(alpha_bar, 25)
    assert len(steps) == 25 and steps[0] == 0 and steps[-1] == 999 and np.all(np.diff(steps) > 0)
    gaps = -np.diff(lam[steps[:-1]])
    target = (lam[0] + math.log(80.0)) / 23
    mid = gaps[3:-3]  # away from t = 0, where steps round to a coarser grid
    assert np.all(np.abs(mid - target) < 0.25 * target), gaps
    for count in (2, 3, 500, 999, 1000):
        s = logsnr_timesteps(alpha_bar, count)
        assert len(s) == count and s[0] == 0 and s[-1] == 999 and np.all(np.diff(s) > 0)
    with pytest.raises(ValueError, match="logsnr, uniform"):
        respaced_timesteps(alpha_bar, 10, spacing="quadratic")


def test_respaced_betas_keep_alpha_bar_of_kept_steps():
    betas = make_betas("linear", 200)
    alpha_bar = np.cumprod(1.0 - betas)
    steps = [0, 3, 50, 120, 199]
    new = respace_betas(alpha_bar, steps)
    assert np.allclose(np.cumprod(1.0 - new), alpha_bar[steps], rtol=1e-13, atol=0)
    with pytest.raises(AssertionError):
        respace_betas(alpha_bar, [5, 3])
