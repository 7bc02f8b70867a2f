"""The autoencoder: latent grids of any field size for every preset, the KL term and the
reparameterization, the spectral term, precision, and that a briefly trained tiny autoencoder
reconstructs smooth fields it has not seen."""

from __future__ import annotations

import math

import pytest
import torch

from hpcdiff.errors import HpcdiffError
from hpcdiff.models import AUTOENCODER_PRESETS, autoencoder_config, build_autoencoder
from hpcdiff.models.autoencoder import (
    LOGVAR_RANGE,
    autoencoder_losses,
    kl_divergence,
    latent_shape,
    spectral_distance,
)


@pytest.mark.parametrize("preset", sorted(AUTOENCODER_PRESETS))
@pytest.mark.parametrize("shape", [(20, 27), (31, 33), (16, 16)])
def test_latent_grid_of_any_field_size(preset, shape):
    config = AUTOENCODER_PRESETS[preset]
    model = build_autoencoder(config, target_channels=3)
    x = torch.randn(2, 3, *shape)
    mean, logvar = model.encode(x)
    h, w = math.ceil(shape[0] / config.factor), math.ceil(shape[1] / config.factor)
    assert mean.shape == logvar.shape == (2, config.latent_channels, h, w)
    assert latent_shape(shape, config.factor) == (h, w)
    assert model.decode(mean, shape).shape == (2, 3, *shape)
    recon, mean2, _ = model(x, torch.zeros_like(mean))
    assert recon.shape == x.shape and torch.equal(mean2, mean)
    with pytest.raises(AssertionError, match="latent grid"):
        model.decode(mean, (shape[0] + config.factor, shape[1]))


def test_presets_have_the_factors_and_latent_channels_they_promise():
    factors = {name: (c.factor, c.latent_channels) for name, c in AUTOENCODER_PRESETS.items()}
    assert factors == {"tiny": (2, 4), "small": (4, 4), "small8": (8, 8)}
    with pytest.raises(HpcdiffError, match="'huge' is not an autoencoder preset; valid: tiny, small, small8"):
        autoencoder_config("huge")


def test_kl_of_the_prior_is_zero_and_a_known_case_is_analytic():
    zeros = torch.zeros(3, 4, 5, 6)
    torch.testing.assert_close(kl_divergence(zeros, zeros), torch.zeros(3))
    # KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - 1 - log s^2) / 2: mu = 1, s^2 = 4 in every element
    mean, logvar = torch.ones(2, 4, 3, 3), torch.full((2, 4, 3, 3), math.log(4.0))
    expected = 0.5 * (1.0 + 4.0 - 1.0 - math.log(4.0))
    torch.testing.assert_close(kl_divergence(mean, logvar), torch.full((2,), expected))
    # averaged per element: half the elements at the prior halve it
    mean[:, :2], logvar[:, :2] = 0.0, 0.0
    torch.testing.assert_close(kl_divergence(mean, logvar), torch.full((2,), expected / 2))


def test_the_latent_is_the_mean_plus_the_scaled_noise():
    torch.manual_seed(0)
    model = build_autoencoder(AUTOENCODER_PRESETS["tiny"], target_channels=2)
    x = torch.randn(3, 2, 11, 14)
    mean, logvar = model.encode(x)
    noise = torch.randn_like(mean)
    recon, _, _ = model(x, noise)
    torch.testing.assert_close(recon, model.decode(mean + torch.exp(logvar / 2) * noise, (11, 14)))
    assert logvar.min() >= LOGVAR_RANGE[0] and logvar.max() <= LOGVAR_RANGE[1]


def test_the_loss_weights_pixels_and_adds_the_terms():
    target = torch.zeros(2, 1, 4, 4)
    recon = torch.zeros(2, 1, 4, 4)
    recon[..., :2] = 1.0  # wrong in the left half only
    mean, logvar = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)  # KL 0.5 per element
    weight = torch.zeros(1, 1, 4, 4)
    weight[..., 2:] = 1.0  # only the right half counts
    terms = autoencoder_losses(recon, target, mean, logvar, kl_weight=0.1, weight=weight)
    torch.testing.assert_close(terms["mse"], torch.zeros(2))
    torch.testing.assert_close(terms["loss"], torch.full((2,), 0.05))
    assert "spectral" not in terms
    terms = autoencoder_losses(recon, target, mean, logvar, kl_weight=0.0, spectral_weight=2.0)
    torch.testing.assert_close(terms["mse"], torch.full((2,), 0.5))
    torch.testing.assert_close(terms["loss"], terms["mse"] + 2.0 * terms["spectral"])


def test_the_spectral_term_sees_smoothing_and_has_finite_gradients_at_zero():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 32, 32, generator=gen)
    smooth = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert torch.all(spectral_distance(x, x) == 0)
    assert torch.all(spectral_distance(smooth, x) > 0.1)
    zeros = torch.zeros(1, 1, 8, 8, requires_grad=True)
    spectral_distance(zeros, torch.ones(1, 1, 8, 8)).sum().backward()
    assert torch.isfinite(zeros.grad).all()


def test_low_precision_parameters_give_float32_outputs():
    model = build_autoencoder(AUTOENCODER_PRESETS["tiny"], target_channels=2).to(torch.bfloat16)
    x = torch.randn(2, 2, 9, 10)
    recon, mean, logvar = model(x, torch.zeros(2, 4, 5, 5))
    assert recon.dtype == mean.dtype == logvar.dtype == torch.float32


def smooth_fields(n: int, shape: tuple[int, int], gen: torch.Generator, *, channels: int = 2,
                  waves: int = 3) -> torch.Tensor:
    """``[n, channels, H, W]``: each field a sum of ``waves`` plane waves of random direction, phase and
    amplitude, at most 2 cycles across the field."""
    y = torch.linspace(0, 1, shape[0])[:, None]
    x = torch.linspace(0, 1, shape[1])[None]
    out = torch.zeros(n, channels, *shape)
    for _ in range(waves):
        k = torch.rand(n, channels, 2, 1, 1, generator=gen) * 2.0
        phase = torch.rand(n, channels, 1, 1, generator=gen) * 2 * math.pi
        amplitude = torch.randn(n, channels, 1, 1, generator=gen)
        out += amplitude * torch.sin(2 * math.pi * (k[:, :, 0] * y + k[:, :, 1] * x) + phase)
    return out


@pytest.mark.timeout(120)
def test_a_briefly_trained_tiny_autoencoder_reconstructs_new_smooth_fields():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    shape, steps = (20, 26), 250
    model = build_autoencoder(AUTOENCODER_PRESETS["tiny"], target_channels=2)
    latent = (8, model.latent_channels, *latent_shape(shape, model.factor))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        x = smooth_fields(8, shape, gen)
        recon, mean, logvar = model(x, torch.randn(latent, generator=gen))
        loss = autoencoder_losses(recon, x, mean, logvar, kl_weight=1e-6)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        x = smooth_fields(16, shape, torch.Generator().manual_seed(99))
        recon = model.decode(model.encode(x)[0], shape)
    assert float(((recon - x) ** 2).mean() / x.var()) < 0.05
