"""Backbones: an explicit registry of model classes, size presets, and the conditioning wrapper that
turns a conditional network into the ``(x_t, t) -> output`` function the diffusion code calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from hpcdiff.models.unet import UNet, UNetConfig

MODELS: dict[str, type[nn.Module]] = {"unet": UNet}

UNET_PRESETS: dict[str, UNetConfig] = {
    # unit tests: ~0.1M parameters, any H, W divisible by 2
    "tiny": UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
                       head_channels=16, dropout=0.0),
    # CPU demo at 64 x 64: ~1.7M parameters, attention at 8 x 8
    "small": UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, attention_ds=(8,),
                        head_channels=32, dropout=0.1),
    # GPU: ~60M parameters, 5 levels (256 x 256 -> 16 x 16), attention at 32 x 32 and 16 x 16 for 256
    "base": UNetConfig(model_channels=128, channel_mult=(1, 1, 2, 2, 3), num_res_blocks=2,
                       attention_ds=(8, 16), head_channels=64, dropout=0.1),
}


def build_model(preset: str, *, target_channels: int, cond_channels: int, learn_sigma: bool,
                dropout: float | None = None, model: str = "unet") -> nn.Module:
    """A ``model`` from :data:`MODELS` with the size ``preset`` from :data:`UNET_PRESETS`; ``dropout``
    overrides the preset's."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; valid: {', '.join(UNET_PRESETS)}")
    config = UNET_PRESETS[preset]
    if dropout is not None:
        config = dataclasses.replace(config, dropout=dropout)
    return MODELS[model](target_channels=target_channels, cond_channels=cond_channels,
                         learn_sigma=learn_sigma, **dataclasses.asdict(config))


def eps_model_fn(model: nn.Module, cond: torch.Tensor,
                 doy: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Bind the conditions: ``(x_t [N, Ct, H, W], t [N]) -> model(x_t, t, cond, doy)``, so the diffusion
    code stays model-agnostic. ``cond [N, Cc, H, W]``, ``doy [N]``."""

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x_t, t, cond, doy)

    return fn


__all__ = ["MODELS", "UNET_PRESETS", "UNet", "UNetConfig", "build_model", "eps_model_fn"]
