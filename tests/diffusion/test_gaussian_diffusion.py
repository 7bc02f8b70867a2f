"""Gaussian diffusion: forward process, posterior and losses against closed forms and Bayes' rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpcdiff.diffusion.analytic import gaussian_eps_model
from hpcdiff.diffusion.gaussian import GaussianDiffusion, gaussian_nll, normal_kl
from hpcdiff.diffusion.schedules import make_betas


def diffusion(num_steps: int = 100, **kwargs) -> GaussianDiffusion:
    kwargs = {"var_type": "learned_range", "loss_type": "hybrid", **kwargs}
    return GaussianDiffusion(make_betas("cosine", num_steps), **kwargs)


def test_q_sample_moments():
    diff = diffusion(1000)
    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 10, 500, 999])
    x0 = torch.tensor([1.5, -2.0, 0.7, 3.0]).view(4, 1, 1, 1).expand(4, 1, 256, 256)
    noise = torch.randn(x0.shape, generator=gen)
    x_t = diff.q_sample(x0, t, noise=noise)
    alpha_bar = np.cumprod(1.0 - make_betas("cosine", 1000))[t.numpy()]
    mean, var = x_t.mean(dim=(1, 2, 3)).numpy(), x_t.var(dim=(1, 2, 3)).numpy()
    se = np.sqrt((1 - alpha_bar) / x0[0].numel())
    assert np.all(np.abs(mean - np.sqrt(alpha_bar) * x0[:, 0, 0, 0].numpy()) < 5 * se + 1e-6)
    assert np.allclose(var, 1 - alpha_bar, rtol=0.02)
    m, v, log_v = diff.q_mean_variance(x0, t)
    assert torch.allclose(v.flatten(), torch.tensor(1 - alpha_bar, dtype=v.dtype))
    assert torch.allclose(log_v, torch.log(v))


def test_posterior_matches_bayes_rule():
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): precision and mean from Bayes."""
    diff = diffusion(50)
    t = torch.tensor([1, 7, 25, 49])
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64)
    x_t = torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64)
    betas = torch.tensor(make_betas("cosine", 50))
    alpha_bar = torch.cumprod(1 - betas, 0)
    b, ab_prev = betas[t].view(-1, 1, 1, 1), alpha_bar[t - 1].view(-1, 1, 1, 1)
    precision = 1 / (1 - ab_prev) + (1 - b) / b
    mean = (torch.sqrt(ab_prev) * x0 / (1 - ab_prev) + torch.sqrt(1 - b) * x_t / b) / precision
    got_mean, got_var, got_log_var = diff.q_posterior_mean_variance(x0, x_t, t)
    assert torch.allclose(got_mean, mean, rtol=1e-10, atol=1e-12)
    assert torch.allclose(got_var, 1 / precision, rtol=1e-10, atol=0)
    assert torch.allclose(got_log_var, torch.log(1 / precision), rtol=1e-10)
    # at t = 0 the posterior is a point mass at x_0; its log-variance is clipped to beta_tilde_1
    mean0, var0, log_var0 = diff.q_posterior_mean_variance(x0, x_t, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(mean0, x0) and torch.all(var0 == 0)
    assert torch.allclose(log_var0, torch.log(diff.coef("posterior_variance", torch.ones(4), x0)))


def test_normal_kl_and_nll_against_torch_distributions():
    mean = torch.tensor([0.0, 1.0, -2.0])
    log_var = torch.tensor([0.0, -1.0, 0.5])
    assert torch.allclose(normal_kl(mean, log_var, mean2=mean, logvar2=log_var), torch.zeros(3), atol=1e-7)
    other_mean = mean + torch.tensor([0.3, 0.0, -1.0])
    other_log_var = log_var + torch.tensor([0.0, 0.4, -0.2])
    kl = normal_kl(mean, log_var, mean2=other_mean, logvar2=other_log_var)
    p = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    q = torch.distributions.Normal(other_mean, torch.exp(0.5 * other_log_var))
    assert torch.all(kl > 0) and torch.allclose(kl, torch.distributions.kl_divergence(p, q), atol=1e-6)
    x = torch.tensor([0.1, 2.0, -1.5])
    assert torch.allclose(gaussian_nll(x, mean=mean, log_var=log_var), -p.log_prob(x), atol=1e-6)


def test_fixed_and_learned_variances():
    diff = diffusion(100)
    t = torch.tensor([0, 1, 50, 99])
    like = torch.zeros(4, 1, 2, 2, dtype=torch.float64)
    beta = diff.coef("log_betas", t, like).exp()
    beta_tilde_clipped = diff.coef("posterior_log_variance_clipped", t, like).exp()
    lo = diff.model_log_variance(t, like, -torch.ones_like(like))
    hi = diff.model_log_variance(t, like, torch.ones_like(like))
    assert torch.allclose(lo.exp(), beta_tilde_clipped.expand_as(lo))
    assert torch.allclose(hi.exp(), beta.expand_as(hi))
    small = GaussianDiffusion(diff.betas, var_type="fixed_small", loss_type="simple")
    large = GaussianDiffusion(diff.betas, var_type="fixed_large", loss_type="simple")
    assert torch.allclose(small.model_log_variance(t, like, None), torch.log(beta_tilde_clipped))
    assert torch.allclose(large.model_log_variance(t, like, None)[1:].exp(), beta[1:])
    with pytest.raises(ValueError, match="learned_range, fixed_small, fixed_large"):
        GaussianDiffusion(diff.betas, var_type="learned")
    with pytest.raises(ValueError, match="hybrid"):
        GaussianDiffusion(diff.betas, var_type="fixed_small", loss_type="hybrid")


def test_respaced_diffusion_calls_model_with_original_steps():
    base = diffusion(1000, var_type="fixed_small", loss_type="simple")
    spaced = base.respace([0, 10, 500, 999])
    assert spaced.num_steps == 4 and np.allclose(spaced.alpha_bar, base.alpha_bar[[0, 10, 500, 999]])
    seen = []

    def model(x_t, t):
        seen.append(t.tolist())
        return torch.zeros_like(x_t)

    spaced.p_mean_variance(model, torch.zeros(2, 1, 2, 2), torch.tensor([1, 3]))
    assert seen == [[10, 999]]
    twice = spaced.respace([0, 2, 3])
    twice.p_mean_variance(model, torch.zeros(1, 1, 2, 2), torch.tensor([1]))
    assert seen[-1] == [500]


def test_simple_loss_weight_and_mask():
    diff = diffusion(100, var_type="fixed_small", loss_type="simple")
    gen = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    t = torch.tensor([0, 40, 99])
    bias = torch.randn(3, 2, 4, 4, generator=gen)

    def model(x_t, _t):  # predicts noise + bias, so the per-pixel loss is bias²
        eps = (x_t - diff.coef("sqrt_alpha_bar", t, x0) * x0) / diff.coef("sqrt_one_minus_alpha_bar", t, x0)
        return eps + bias

    plain = diff.training_losses(model, x0, t, noise=noise)
    assert set(plain) == {"loss", "mse"} and plain["loss"].shape == (3,)
    assert torch.allclose(plain["mse"], (bias**2).mean(dim=(1, 2, 3)), atol=1e-5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, 1:] = 1
    weight = torch.rand(3, 1, 4, 4, generator=gen) + 0.5
    masked = diff.training_losses(model, x0, t, noise=noise, weight=weight, mask=mask)
    w = (weight * mask).expand(3, 2, 4, 4)
    expected = (w * bias**2).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))
    assert torch.allclose(masked["loss"], expected, atol=1e-5)
    ones = diff.training_losses(model, x0, t, noise=noise, weight=torch.ones(1, 1, 4, 4))
    assert torch.allclose(ones["loss"], plain["loss"])
    empty = diff.training_losses(model, x0, t, noise=noise, mask=torch.zeros(3, 1, 4, 4))
    assert torch.all(empty["loss"] == 0)
    with pytest.raises(AssertionError, match="weight"):
        diff.training_losses(model, x0, t, noise=noise, weight=torch.ones(1, 1, 3, 4))


def output_param(diff: GaussianDiffusion, x0: torch.Tensor, t: torch.Tensor, gen: torch.Generator):
    """A leaf tensor as the 'model output' [N, 2C, H, W], to read gradients per channel block."""
    out = torch.randn(x0.shape[0], 2 * x0.shape[1], *x0.shape[2:], generator=gen) * 0.3
    return out.requires_grad_(True), (lambda _x, _t: out)


def test_hybrid_gradients_reach_variance_only_through_vlb():
    diff = diffusion(100)
    gen = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(4, 2, 3, 3, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)
    t = torch.tensor([0, 5, 50, 99])
    out, model = output_param(diff, x0, t, gen)
    terms = diff.training_losses(model, x0, t, noise=noise)
    (g_mse,) = torch.autograd.grad(terms["mse"].sum(), out, retain_graph=True)
    (g_vlb,) = torch.autograd.grad(terms["vlb"].sum(), out, retain_graph=True)
    (g_loss,) = torch.autograd.grad(terms["loss"].sum(), out)
    assert torch.all(g_mse[:, 2:] == 0) and g_mse[:, :2].abs().sum() > 0  # mse: eps channels only
    assert torch.all(g_vlb[:, :2] == 0) and g_vlb[:, 2:].abs().sum() > 0  # frozen mean: variance only
    assert torch.allclose(g_loss[:, 2:], diff.vlb_weight * g_vlb[:, 2:])
    assert torch.allclose(g_loss[:, :2], g_mse[:, :2])
    simple = diffusion(100, loss_type="simple")
    out2, model2 = output_param(simple, x0, t, gen)
    (g_simple,) = torch.autograd.grad(simple.training_losses(model2, x0, t, noise=noise)["loss"].sum(), out2)
    assert torch.all(g_simple[:, 2:] == 0)
    vlb = diffusion(100, loss_type="vlb")
    out3, model3 = output_param(vlb, x0, t, gen)
    (g_vlb_only,) = torch.autograd.grad(vlb.training_losses(model3, x0, t, noise=noise)["loss"].sum(), out3)
    assert g_vlb_only[:, :2].abs().sum() > 0  # the pure vlb loss does train the mean


def test_vlb_units_and_scale():
    bits = diffusion(100, loss_type="vlb", vlb_units="bits")
    nats = diffusion(100, loss_type="vlb", vlb_units="nats")
    gen = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(3, 1, 4, 4, generator=gen), torch.randn(3, 1, 4, 4, generator=gen)
    t = torch.tensor([0, 30, 99])
    out = torch.randn(3, 2, 4, 4, generator=gen)
    lb = bits.training_losses(lambda _x, _t: out, x0, t, noise=noise)
    ln = nats.training_losses(lambda _x, _t: out, x0, t, noise=noise)
    assert torch.allclose(lb["vlb"] * math.log(2), ln["vlb"])
    x_t = nats.q_sample(x0, t, noise=noise)
    per_pixel = nats.vlb_terms(x0, x_t, t, eps=out[:, :1], v=out[:, 1:])
    assert torch.allclose(ln["vlb"], 100 * per_pixel.mean(dim=(1, 2, 3)))
    p = nats.p_mean_variance(lambda _x, _t: out, x_t, t)  # t = 0: the continuous decoder NLL
    nll = gaussian_nll(x0[:1], mean=p["mean"][:1], log_var=p["log_variance"][:1])
    assert torch.allclose(per_pixel[:1], nll)


def test_exact_variance_minimizes_vlb_and_bound_is_near_entropy():
    """With the exact model of N(m, s²) data, the bound Σ_t L_t + L_prior is close to the data entropy
    0.5 log(2πe s²), and perturbing the (optimal) learned variance only increases each L_t."""
    num_steps, m, s = 100, torch.tensor(0.3), torch.tensor(0.5)
    diff = diffusion(num_steps, loss_type="vlb", vlb_units="nats")
    model = gaussian_eps_model(diff, m, s, learn_sigma=True)
    gen = torch.Generator().manual_seed(5)
    x0 = m + s * torch.randn(num_steps, 1, 1, 4000, generator=gen, dtype=torch.float64)
    t = torch.arange(num_steps)
    x_t = diff.q_sample(x0, t, noise=torch.randn(x0.shape, generator=gen, dtype=torch.float64))
    eps, v = diff.model_output(model, x_t, t)
    l_t = diff.vlb_terms(x0, x_t, t, eps=eps, v=v).mean(dim=(1, 2, 3))
    bound = float(l_t.sum() + diff.prior_kl(x0).mean())
    assert bound == pytest.approx(0.5 * math.log(2 * math.pi * math.e * s.item() ** 2), abs=0.04)
    for dv in (-0.2, 0.2):
        worse = diff.vlb_terms(x0, x_t, t, eps=eps, v=v + dv).mean(dim=(1, 2, 3))
        assert torch.all(worse[1:] > l_t[1:])
