"""A convolutional KL-regularized autoencoder (the first stage of latent diffusion, Rombach et al. 2022).

The encoder maps normalized targets ``x [N, Ct, H, W]`` to a diagonal Gaussian over latents
``[N, Cl, h, w]`` (``mean``, ``logvar``) on a grid ``f`` times coarser per axis, ``h = ceil(H / f)``,
``f = 2 ** (len(channel_mult) - 1)``; the decoder maps a latent back to ``[N, Ct, H, W]``. Any grid size:
the input is padded by reflection to multiples of ``f`` (:func:`~hpcdiff.models.unet.pad_to_multiple`)
and the decoder's output is cropped back to ``H x W``.

Blocks are GroupNorm-SiLU-conv residual blocks without a time embedding (no normalization outside them:
a field's amplitude is information); stride-2 convolutions go down, nearest-neighbour upsampling and a
convolution go up (:class:`~hpcdiff.models.unet.Downsample`, :class:`~hpcdiff.models.unet.Upsample`).
The training objective (:func:`autoencoder_losses`) is the weighted reconstruction error plus a small KL
term towards ``N(0, 1)`` and an optional spectral term; all tensor code, no files and no config objects.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hpcdiff.diffusion.gaussian import pixel_weights, weighted_mean
from hpcdiff.models.unet import Downsample, Upsample, grid_padding, group_norm, pad_to_multiple, zero_module

LOGVAR_RANGE = (-30.0, 20.0)  # clamped: exp(logvar / 2) stays finite and above ~3e-7
SPECTRAL_FLOOR = 1e-3  # amplitude added (in quadrature) before the log: smooth gradients at zero amplitude


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of one size preset: ``channels`` of the first level, times ``channel_mult[i]`` at level
    ``i`` (each level after the first halves the grid), ``num_res_blocks`` per level, ``latent_channels``."""

    channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    latent_channels: int

    def __post_init__(self) -> None:
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be positive ints, at least one, got {self.channel_mult}")
        for name in ("channels", "num_res_blocks", "latent_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def factor(self) -> int:
        """Downsampling factor per axis of the latent grid: ``2 ** (len(channel_mult) - 1)``."""
        return 2 ** (len(self.channel_mult) - 1)


def latent_shape(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    """The latent grid ``(ceil(H / f), ceil(W / f))`` of a field of ``shape`` ``(H, W)``."""
    return -(-shape[0] // factor), -(-shape[1] // factor)


class ResBlock(nn.Module):
    """``skip(x) + conv(SiLU(GN(conv(SiLU(GN(x))))))``, the second conv zero-initialized (the block starts
    as its skip path). ``[N, Cin, H, W] -> [N, Cout, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            group_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1),
            group_norm(out_channels), nn.SiLU(),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.layers(x)


def encoder_layers(in_channels: int, out_channels: int, config: AutoencoderConfig) -> nn.Sequential:
    """``[N, in_channels, H, W] -> [N, out_channels, H / f, W / f]`` (``H``, ``W`` multiples of ``f``)."""
    ch = config.channels * config.channel_mult[0]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
    for level, mult in enumerate(config.channel_mult):
        for _ in range(config.num_res_blocks):
            layers.append(ResBlock(ch, config.channels * mult))
            ch = config.channels * mult
        if level != len(config.channel_mult) - 1:
            layers.append(Downsample(ch))
    # no GroupNorm before the output conv (encoder and decoder): it would normalize away each field's
    # amplitude, which is information here (normalized anomalies); with it the tiny preset reconstructs the
    # smooth test fields 4x worse after the same training
    layers += [ResBlock(ch, ch), nn.Conv2d(ch, out_channels, 3, padding=1)]
    return nn.Sequential(*layers)


def decoder_layers(in_channels: int, out_channels: int, config: AutoencoderConfig) -> nn.Sequential:
    """``[N, in_channels, h, w] -> [N, out_channels, h · f, w · f]``: the encoder's levels in reverse."""
    ch = config.channels * config.channel_mult[-1]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1), ResBlock(ch, ch)]
    for level, mult in reversed(list(enumerate(config.channel_mult))):
        for _ in range(config.num_res_blocks):
            layers.append(ResBlock(ch, config.channels * mult))
            ch = config.channels * mult
        if level:
            layers.append(Upsample(ch))
    layers.append(nn.Conv2d(ch, out_channels, 3, padding=1))  # no GroupNorm: see encoder_layers
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """``x [N, Ct, H, W]`` (normalized targets) <-> latents ``z [N, Cl, ceil(H / f), ceil(W / f)]``.

    Runs in its parameters' dtype (bf16 / fp16 under DeepSpeed); inputs and outputs are float32."""

    def __init__(self, *, target_channels: int, channels: int, channel_mult: tuple[int, ...],
                 num_res_blocks: int, latent_channels: int) -> None:
        super().__init__()
        config = AutoencoderConfig(channels=channels, channel_mult=tuple(channel_mult),
                                   num_res_blocks=num_res_blocks, latent_channels=latent_channels)
        self.target_channels, self.latent_channels = target_channels, latent_channels
        self.factor = config.factor
        self.encoder = encoder_layers(target_channels, 2 * latent_channels, config)
        self.decoder = decoder_layers(latent_channels, target_channels, config)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)``, each ``[N, Cl, h, w]`` float32; ``logvar`` clamped to :data:`LOGVAR_RANGE`."""
        assert x.ndim == 4 and x.shape[1] == self.target_channels, \
            f"x must be [N, {self.target_channels}, H, W], got {tuple(x.shape)}"
        padded, _ = pad_to_multiple(x.to(self._dtype()), self.factor)
        mean, logvar = self.encoder(padded).float().chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Latents ``z [N, Cl, h, w]`` -> ``[N, Ct, H, W]`` float32 for the field grid ``shape = (H, W)``."""
        assert z.ndim == 4 and z.shape[1] == self.latent_channels, \
            f"z must be [N, {self.latent_channels}, h, w], got {tuple(z.shape)}"
        assert tuple(z.shape[-2:]) == latent_shape(shape, self.factor), \
            f"latent grid {tuple(z.shape[-2:])} is not that of a {tuple(shape)} field (factor {self.factor})"
        out = self.decoder(z.to(self._dtype())).float()
        (top, _), (left, _) = grid_padding(shape[0], self.factor), grid_padding(shape[1], self.factor)
        return out[..., top:top + shape[0], left:left + shape[1]]

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(recon [N, Ct, H, W], mean, logvar [N, Cl, h, w])`` with ``z = mean + exp(logvar / 2) · noise``;
        ``noise [N, Cl, h, w]`` comes from the caller (zeros: ``z = mean``)."""
        mean, logvar = self.encode(x)
        assert noise.shape == mean.shape, f"noise {tuple(noise.shape)}, latents {tuple(mean.shape)}"
        z = mean + torch.exp(0.5 * logvar) * noise.to(mean.dtype)
        return self.decode(z, tuple(x.shape[-2:])), mean, logvar


# -- the objective ---------------------------------------------------------------------------------------


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, 1))`` averaged over each sample's latent elements (nats per
    element): ``[N, Cl, h, w] -> [N]``."""
    kl = 0.5 * (mean.float() ** 2 + torch.exp(logvar.float()) - 1.0 - logvar.float())
    return kl.mean(dim=tuple(range(1, kl.ndim)))


def log_amplitude(x: torch.Tensor) -> torch.Tensor:
    """``log sqrt(|FFT2(x)|^2 + floor^2)`` of ``x [N, C, H, W]`` (orthonormal FFT, so white noise of unit
    variance has unit amplitude; :data:`SPECTRAL_FLOOR` keeps the gradient finite at zero amplitude):
    ``[N, C, H, W // 2 + 1]``."""
    f = torch.fft.rfft2(x.float(), norm="ortho")
    return 0.5 * torch.log(f.real ** 2 + f.imag ** 2 + SPECTRAL_FLOOR ** 2)


def spectral_distance(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the log amplitude spectra (:func:`log_amplitude`) over channels and
    wavenumbers: ``[N, C, H, W] -> [N]``. Penalizes a reconstruction that is too smooth (too little
    power at high wavenumbers) as much as one that is too noisy, whatever the phases."""
    diff = (log_amplitude(recon) - log_amplitude(target)) ** 2
    return diff.mean(dim=(1, 2, 3))


def autoencoder_losses(recon: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, *,
                       kl_weight: float, spectral_weight: float = 0.0,
                       weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample losses ``[N]``: ``mse`` (the ``weight``-weighted mean squared error of ``recon`` against
    ``target``, both ``[N, Ct, H, W]``; ``weight`` ``[N or 1, 1, H, W]``), ``kl`` (:func:`kl_divergence`),
    with ``spectral_weight > 0`` ``spectral`` (:func:`spectral_distance`), and their weighted sum
    ``loss = mse + kl_weight · kl [+ spectral_weight · spectral]``."""
    assert recon.shape == target.shape, f"recon {tuple(recon.shape)}, target {tuple(target.shape)}"
    terms = {"mse": weighted_mean((recon.float() - target.float()) ** 2, pixel_weights(target, weight, None)),
             "kl": kl_divergence(mean, logvar)}
    terms["loss"] = terms["mse"] + kl_weight * terms["kl"]
    if spectral_weight > 0.0:
        terms["spectral"] = spectral_distance(recon, target)
        terms["loss"] = terms["loss"] + spectral_weight * terms["spectral"]
    return terms
