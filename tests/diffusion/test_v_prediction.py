"""v-prediction (Salimans & Ho 2022): the conversion to ε, the training target, and that the exact
v-model of Gaussian data samples exactly what the exact ε-model samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcdiff.diffusion.analytic import gaussian_eps_model
from hpcdiff.diffusion.gaussian import GaussianDiffusion
from hpcdiff.diffusion.samplers import sample
from hpcdiff.diffusion.schedules import make_betas

MEAN = torch.tensor([1.0, -0.5]).view(2, 1, 1)
STD = torch.tensor([0.5, 0.05]).view(2, 1, 1)


def pair(num_steps: int = 200) -> tuple[GaussianDiffusion, GaussianDiffusion]:
    betas = make_betas("cosine", num_steps)
    return (GaussianDiffusion(betas, loss_type="simple", var_type="fixed_small", prediction="eps"),
            GaussianDiffusion(betas, loss_type="simple", var_type="fixed_small", prediction="v"))


def as_v_model(diffusion: GaussianDiffusion, eps_fn):
    """The exact v-model: v = sqrt(ab) eps - sqrt(1 - ab) x_0, with x_0 from the exact eps."""
    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x_t, t)
        x0 = diffusion.predict_x0(x_t, t, eps)
        return diffusion.coef("sqrt_alpha_bar", t, x_t) * eps - diffusion.coef(
            "sqrt_one_minus_alpha_bar", t, x_t) * x0
    return fn


def test_target_and_conversion_are_inverse():
    _, vdiff = pair()
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 2, 8, 8, generator=gen), torch.randn(6, 2, 8, 8, generator=gen)
    t = torch.tensor([0, 1, 50, 100, 198, 199])
    x_t = vdiff.q_sample(x0, t, noise=noise)
    v = vdiff.prediction_target(x0, noise, t)
    torch.testing.assert_close(vdiff.eps_from_prediction(v, x_t, t), noise, rtol=0, atol=2e-5)
    ab = torch.tensor(np.cumprod(1.0 - make_betas("cosine", 200))[t.numpy()]).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(v, ab.sqrt() * noise - (1 - ab).sqrt() * x0)
    torch.testing.assert_close(v[5:], -x0[5:], rtol=0, atol=1e-3)  # at the last step v is almost -x_0


def test_simple_loss_is_the_v_mse():
    _, vdiff = pair()
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 2, 8, 8, generator=gen), torch.randn(4, 2, 8, 8, generator=gen)
    t = torch.tensor([3, 60, 120, 190])
    out = torch.randn(4, 2, 8, 8, generator=gen)
    losses = vdiff.training_losses(lambda x, s: out, x0, t, noise=noise)
    want = ((vdiff.prediction_target(x0, noise, t) - out) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(losses["mse"], want)
    exact = vdiff.training_losses(lambda x, s: vdiff.prediction_target(x0, noise, t), x0, t, noise=noise)
    assert float(exact["mse"].max()) < 1e-10


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 25), ("dpmpp_2m", 20), ("ddpm", None)])
def test_exact_v_model_samples_like_the_exact_eps_model(sampler, steps):
    ediff, vdiff = pair()
    eps_fn = gaussian_eps_model(ediff, MEAN, STD)
    gens = lambda: [torch.Generator().manual_seed(7 + i) for i in range(3)]  # noqa: E731
    shape = (3, 2, 16, 16)
    a = sample(eps_fn, ediff, shape, sampler=sampler, steps=steps, generators=gens())
    b = sample(as_v_model(vdiff, eps_fn), vdiff, shape, sampler=sampler, steps=steps, generators=gens())
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert float(a.std()) > 0.01  # the samples are not trivially equal
