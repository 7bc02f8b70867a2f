"""v-prediction (Salimans & Ho 2022), owned by the denoiser wrapper: the conversion to ε, the training
target, the loss weight that makes the ε error the v error, and that the exact v-model of Gaussian data
samples exactly what the exact ε-model samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hpcdiff.diffusion.analytic import gaussian_eps_model
from hpcdiff.diffusion.gaussian import GaussianDiffusion
from hpcdiff.diffusion.samplers import sample
from hpcdiff.diffusion.schedules import make_betas
from hpcdiff.models.denoiser import Denoiser

MEAN = torch.tensor([1.0, -0.5]).view(2, 1, 1)
STD = torch.tensor([0.5, 0.05]).view(2, 1, 1)
T = 200
NONE = torch.zeros(1)  # the exact models take no conditions


class Exact(nn.Module):
    """A backbone that outputs a given function of ``(x_t, t)``; one dummy parameter sets the dtype."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn, self.dtype_anchor = fn, nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t, cond, doy):
        return self.fn(x_t, t)


def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(make_betas("cosine", T), loss_type="simple", var_type="fixed_small")


def v_of(diff: GaussianDiffusion, eps_fn):
    """The exact v-model: v = sqrt(ab) eps - sqrt(1 - ab) x_0, with x_0 from the exact eps."""
    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x_t, t)
        x0 = diff.predict_x0(x_t, t, eps)
        return diff.coef("sqrt_alpha_bar", t, x_t) * eps - diff.coef("sqrt_one_minus_alpha_bar", t, x_t) * x0
    return fn


def denoiser(fn, prediction: str) -> Denoiser:
    return Denoiser(Exact(fn), prediction=prediction, alpha_bar=diffusion().alpha_bar)


def test_target_and_conversion_are_inverse():
    diff, wrap = diffusion(), denoiser(lambda x, t: x, "v")
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 2, 8, 8, generator=gen), torch.randn(6, 2, 8, 8, generator=gen)
    t = torch.tensor([0, 1, 50, 100, 198, 199])
    x_t = diff.q_sample(x0, t, noise=noise)
    v = wrap.target(x0, noise, t)
    torch.testing.assert_close(wrap.to_eps(v, x_t, t), noise, rtol=0, atol=2e-5)
    ab = torch.tensor(np.cumprod(1.0 - make_betas("cosine", T))[t.numpy()]).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(v, ab.sqrt() * noise - (1 - ab).sqrt() * x0)
    torch.testing.assert_close(v[5:], -x0[5:], rtol=0, atol=1e-3)  # at the last step v is almost -x_0


def test_simple_loss_is_the_v_mse():
    diff = diffusion()
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 2, 8, 8, generator=gen), torch.randn(4, 2, 8, 8, generator=gen)
    t = torch.tensor([3, 60, 120, 190])
    out = torch.randn(4, 2, 8, 8, generator=gen)
    wrap = denoiser(lambda x, s: out, "v")
    losses = diff.training_losses(wrap.bind(NONE, NONE), x0, t, noise=noise, mse_weight=wrap.mse_weight(t))
    want = ((wrap.target(x0, noise, t) - out) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(losses["mse"], want, rtol=1e-4, atol=1e-6)
    exact = denoiser(lambda x, s: wrap.target(x0, noise, t), "v")
    perfect = diff.training_losses(exact.bind(NONE, NONE), x0, t, noise=noise, mse_weight=exact.mse_weight(t))
    assert float(perfect["mse"].max()) < 1e-8
    assert denoiser(lambda x, s: out, "eps").mse_weight(t) is None


def test_backbone_runs_in_its_precision_and_the_conversion_in_float32():
    wrap = denoiser(lambda x, t: x, "v").to(torch.bfloat16)
    x_t = torch.randn(2, 2, 4, 4) * 3
    t = torch.tensor([T - 1, T - 1])
    out = wrap(x_t, t, NONE, NONE)
    assert out.dtype == torch.float32
    expected = wrap.to_eps(x_t.to(torch.bfloat16).float(), x_t, t)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 25), ("dpmpp_2m", 20), ("ddpm", None)])
def test_exact_v_model_samples_like_the_exact_eps_model(sampler, steps):
    diff = diffusion()
    eps_fn = gaussian_eps_model(diff, MEAN, STD)
    gens = lambda: [torch.Generator().manual_seed(7 + i) for i in range(3)]  # noqa: E731
    shape = (3, 2, 16, 16)
    a = sample(denoiser(eps_fn, "eps").bind(NONE, NONE), diff, shape, sampler=sampler, steps=steps,
               generators=gens())
    b = sample(denoiser(v_of(diff, eps_fn), "v").bind(NONE, NONE), diff, shape, sampler=sampler, steps=steps,
               generators=gens())
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert float(a.std()) > 0.01  # the samples are not trivially equal
