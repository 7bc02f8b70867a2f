"""Every sampler against the exact ε-model of Gaussian data N(m, s²), whose moments are known.

Stochastic samplers are checked on empirical moments (32k values per channel: standard errors of
0.6 % of s for the mean and 0.8 % for the variance). Deterministic samplers are checked without
sampling noise: for Gaussian data they are affine maps x_0 = A x_T + b per element, compared with the
exact probability flow (then the final denoising at t = 0, which every sampler ends with: it keeps
alpha_bar_0 s² / (alpha_bar_0 s² + 1 - alpha_bar_0) of the variance, 98.4 % for s = 0.05).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpcdiff.diffusion.analytic import gaussian_eps_model
from hpcdiff.diffusion.gaussian import GaussianDiffusion
from hpcdiff.diffusion.samplers import DEFAULT_STEPS, SAMPLERS, randn_per_sample, sample
from hpcdiff.diffusion.schedules import make_betas

MEAN = torch.tensor([1.0, -0.5, 0.3, 2.0]).view(4, 1, 1)
STD = torch.tensor([0.5, 0.2, 0.9, 0.05]).view(4, 1, 1)
SHAPE = (2, 4, 128, 128)


def make(var_type: str = "learned_range", num_steps: int = 1000) -> tuple[GaussianDiffusion, object]:
    loss = "hybrid" if var_type == "learned_range" else "simple"
    diff = GaussianDiffusion(make_betas("cosine", num_steps), var_type=var_type, loss_type=loss)
    return diff, gaussian_eps_model(diff, MEAN, STD, learn_sigma=var_type == "learned_range")


def generators(n: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(1000 + offset + i) for i in range(n)]


def empirical_errors(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: mean error in units of s, relative variance error."""
    z = (x - MEAN) / STD
    return z.mean(dim=(0, 2, 3)).numpy(), z.var(dim=(0, 2, 3)).numpy() - 1.0


def affine_errors(diff: GaussianDiffusion, x: torch.Tensor,
                  x_T: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, noise-free: (b - b*) / s and (A / A*)² - 1 of the fitted map x = A x_T + b, against
    the limit of the discrete chain: the exact flow from step T-1 to step 0, then x_0 = E[x_0 | x_{t=0}]
    (like every sampler here, the chain ends on the denoised mean at t = 0)."""
    xs, xt = x.transpose(0, 1).reshape(4, -1).double(), x_T.transpose(0, 1).reshape(4, -1).double()
    xt_c = xt - xt.mean(dim=1, keepdim=True)
    a = (xt_c * (xs - xs.mean(dim=1, keepdim=True))).sum(dim=1) / (xt_c**2).sum(dim=1)
    b = xs.mean(dim=1) - a * xt.mean(dim=1)
    residual = xs - a[:, None] * xt - b[:, None]
    m, s2 = MEAN.flatten().double(), STD.flatten().double() ** 2
    assert torch.all(residual.abs().max(dim=1).values < 1e-3 * s2.sqrt()), "deterministic: affine here"
    ab_T, ab_0 = float(diff.alpha_bar[-1]), float(diff.alpha_bar[0])
    var_0 = ab_0 * s2 + 1 - ab_0
    a_limit = math.sqrt(ab_0) * s2 / torch.sqrt(var_0 * (ab_T * s2 + 1 - ab_T))
    b_limit = m - a_limit * math.sqrt(ab_T) * m
    return ((b - b_limit) / s2.sqrt()).numpy(), ((a / a_limit) ** 2 - 1).numpy()


@pytest.mark.parametrize("var_type", ["learned_range", "fixed_large", "fixed_small"])
def test_ddpm_all_steps_recovers_mean_and_variance(var_type):
    diff, model = make(var_type)
    x = sample(model, diff, SHAPE, sampler="ddpm", generators=generators(2))
    mean_err, var_err = empirical_errors(x)
    assert np.all(np.abs(mean_err) < 0.03), mean_err
    # fixed_small (beta_tilde) misses c1² Var[x0 | x_t] at small t: too narrow for very narrow data
    wide = slice(None) if var_type != "fixed_small" else slice(0, 3)
    assert np.all(np.abs(var_err[wide]) < 0.03), var_err


def test_respaced_ddpm_uses_learned_variance_of_the_respaced_chain():
    diff, model = make("learned_range")
    x = sample(model, diff, SHAPE, sampler="ddpm", steps=100, generators=generators(2))
    mean_err, var_err = empirical_errors(x)
    assert np.all(np.abs(mean_err) < 0.03) and np.all(np.abs(var_err) < 0.05), (mean_err, var_err)
    fixed, fixed_model = make("fixed_small")  # the learned variance is what makes 100 steps enough
    _, fixed_var_err = empirical_errors(sample(fixed_model, fixed, SHAPE, sampler="ddpm", steps=100,
                                               generators=generators(2)))
    assert np.all(fixed_var_err < -0.05), fixed_var_err


@pytest.mark.parametrize(("sampler", "var_tol", "order"),
                         [("ddim", 0.07, 1), ("dpmpp_2m", 0.025, 2), ("dpmpp_3m", 0.02, 3)])
def test_ode_samplers_at_default_steps_and_their_order(sampler, var_tol, order):
    diff, model = make("learned_range")
    x_T = randn_per_sample(SHAPE, generators(2), device=torch.device("cpu"), dtype=torch.float32)
    steps = DEFAULT_STEPS[sampler]
    errors = []
    for k in (steps, 2 * steps):
        x = sample(model, diff, SHAPE, sampler=sampler, steps=k, generators=generators(2))
        mean_err, var_err = affine_errors(diff, x, x_T)
        assert np.all(np.abs(mean_err) < 0.005), mean_err
        errors.append(np.abs(var_err).max())
    assert errors[0] < var_tol, errors
    assert errors[1] < errors[0] / 2**order * 1.3, f"{sampler} is not order {order}: {errors}"


def test_ddim_eta_one_is_the_respaced_ancestral_step():
    diff, model = make("learned_range")
    a = sample(model, diff, (2, 4, 8, 8), sampler="ddim", steps=20, eta=1.0, generators=generators(2))
    b = sample(model, diff, (2, 4, 8, 8), sampler="ddpm", steps=20, generators=generators(2))
    assert torch.allclose(a, b, atol=1e-4 * float(STD.min()))


@pytest.mark.parametrize(("sampler", "eta"),
                         [("ddpm", 0.0), ("ddim", 0.5), ("dpmpp_2m", 0.0), ("dpmpp_3m", 0.0)])
def test_a_sample_does_not_depend_on_its_batch(sampler, eta):
    diff, model = make("learned_range", num_steps=200)
    batch = sample(model, diff, (4, 4, 8, 8), sampler=sampler, steps=10, eta=eta, generators=generators(4))
    alone = sample(model, diff, (1, 4, 8, 8), sampler=sampler, steps=10, eta=eta,
                   generators=generators(1, offset=2))
    assert torch.equal(batch[2:3], alone)
    assert not torch.equal(batch[1], batch[2])


def test_sample_rejects_bad_arguments(capsys):
    diff, model = make("fixed_small", num_steps=20)
    with pytest.raises(ValueError, match=", ".join(SAMPLERS)):
        sample(model, diff, (1, 4, 2, 2), sampler="euler", generators=generators(1))
    with pytest.raises(ValueError, match="DDIM"):
        sample(model, diff, (1, 4, 2, 2), sampler="dpmpp_2m", eta=0.5, generators=generators(1))
    with pytest.raises(AssertionError, match="generator"):
        sample(model, diff, (2, 4, 2, 2), sampler="ddim", steps=5, generators=generators(1))
    sample(model, diff, (1, 4, 2, 2), sampler="ddim", steps=5, generators=generators(1), progress=True)
    assert "ddim: step 5/5" in capsys.readouterr().err
