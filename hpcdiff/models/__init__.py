"""Networks: an explicit registry of diffusion backbones with their size presets, and the autoencoder's
presets.

A backbone maps ``(x_t [N, Ct, H, W], t [N], cond [N, Cc, H, W], doy [N])`` to ``[N, Ct or 2 Ct, H, W]``,
with an optional large-scale ``context [N, Cx, Hx, Wx]`` on its own grid; the parameterization around it
(residual targets, ε / v) is the :class:`~hpcdiff.models.denoiser.Denoiser`'s. A job names its backbone
(``model.backbone``) and preset (``model.preset``); the run spec (:mod:`hpcdiff.runspec`) builds it
through :func:`build_backbone`. An autoencoder run (``model.kind: autoencoder``) names a preset of
:data:`AUTOENCODER_PRESETS` in ``model.preset`` instead; its spec builds it through
:func:`build_autoencoder`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from hpcdiff.config import from_dict
from hpcdiff.errors import HpcdiffError
from hpcdiff.models.autoencoder import Autoencoder, AutoencoderConfig
from hpcdiff.models.unet import UNet, UNetConfig

UNET_PRESETS: dict[str, UNetConfig] = {
    # unit tests: ~0.1M parameters, any H, W divisible by 2
    "tiny": UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
                       head_channels=16, dropout=0.0),
    # CPU demo at 64 x 64: ~1.7M parameters, attention at 8 x 8 (global there: the window covers it); on
    # larger grids within windows of 16 x 16 tokens at 1/8, the extent a 128 x 128 training patch sees,
    # which keeps the cost per pixel flat up to DANRA's 589 x 789 (docs/performance_unet.md)
    "small": UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, attention_ds=(8,),
                        head_channels=32, dropout=0.1, attention_window=16),
    # GPU: ~60M parameters, 5 levels (256 x 256 -> 16 x 16), attention at 1/8 and 1/16 within windows of
    # 16 x 16 tokens (global up to 128 x 128 pixels at 1/8 and 256 x 256 at 1/16)
    "base": UNetConfig(model_channels=128, channel_mult=(1, 1, 2, 2, 3), num_res_blocks=2,
                       attention_ds=(8, 16), head_channels=64, dropout=0.1, attention_window=16),
}


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A network class and its named size presets (dataclasses of the class's keyword arguments)."""

    cls: type[nn.Module]
    presets: dict[str, Any]


BACKBONES: dict[str, Backbone] = {"unet": Backbone(UNet, UNET_PRESETS)}


def preset_config(name: str, preset: str) -> Any:
    """The size preset ``preset`` of backbone ``name``; a one-line error naming the valid ones."""
    if name not in BACKBONES:
        raise HpcdiffError(f"model.backbone {name!r} is not a backbone; valid: {', '.join(BACKBONES)}")
    backbone = BACKBONES[name]
    if preset not in backbone.presets:
        raise HpcdiffError(f"model.preset {preset!r} is not a preset of {name}; valid: "
                           f"{', '.join(backbone.presets)}")
    return backbone.presets[preset]


# What a preset was before a run spec recorded its resolved architecture: presets since changed only in
# these fields (``small`` and ``base`` gained windowed attention), so older checkpoints keep their network.
UNRECORDED_ARCHITECTURE: dict[str, dict[str, Any]] = {"unet": {"attention_window": None}}


def architecture_of(name: str, preset: str, *, recorded: Mapping[str, Any] | None) -> Any:
    """The size config of a trained run: the one its spec recorded, or for a run that recorded none, the
    preset as it was then (:data:`UNRECORDED_ARCHITECTURE`)."""
    config = preset_config(name, preset)
    if recorded is None:
        return dataclasses.replace(config, **UNRECORDED_ARCHITECTURE.get(name, {}))
    return from_dict(type(config), dict(recorded), where=f"run spec architecture of {name}/{preset}")


def build_backbone(name: str, preset: str, *, target_channels: int, cond_channels: int, learn_sigma: bool,
                   dropout: float | None = None, config: Any = None, context_channels: int = 0,
                   context_inject: str = "features") -> nn.Module:
    """Backbone ``name`` of :data:`BACKBONES` in size ``preset`` (or the size ``config`` given, e.g. a run
    spec's recorded one); ``dropout`` overrides its dropout. ``context_channels`` (0: none) and
    ``context_inject`` describe the data, not the size, so they are no part of a preset."""
    config = preset_config(name, preset) if config is None else config
    if dropout is not None:
        config = dataclasses.replace(config, dropout=dropout)
    return BACKBONES[name].cls(target_channels=target_channels, cond_channels=cond_channels,
                               learn_sigma=learn_sigma, context_channels=context_channels,
                               context_inject=context_inject, **dataclasses.asdict(config))


# Autoencoders of normalized targets (hpcdiff.models.autoencoder): the latent grid is ``factor`` times
# coarser per axis, ``latent_channels`` deep.
AUTOENCODER_PRESETS: dict[str, AutoencoderConfig] = {
    # unit tests: factor 2
    "tiny": AutoencoderConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, latent_channels=4),
    # factor 4: a 64 x 64 field of 3 targets (12288 values) -> 4 x 16 x 16 latents (1024)
    "small": AutoencoderConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, latent_channels=4),
    # factor 8 with twice the latent channels: DANRA's 589 x 789 -> 8 x 74 x 99 latents
    "small8": AutoencoderConfig(channels=32, channel_mult=(1, 2, 2, 4), num_res_blocks=1, latent_channels=8),
}


def autoencoder_config(preset: str) -> AutoencoderConfig:
    """The size preset ``preset`` of :data:`AUTOENCODER_PRESETS`; a one-line error naming the valid ones."""
    if preset not in AUTOENCODER_PRESETS:
        raise HpcdiffError(f"model.preset {preset!r} is not an autoencoder preset; valid: "
                           f"{', '.join(AUTOENCODER_PRESETS)}")
    return AUTOENCODER_PRESETS[preset]


def build_autoencoder(config: AutoencoderConfig, *, target_channels: int) -> Autoencoder:
    """The autoencoder of size ``config`` (a preset, or a run spec's recorded architecture) for
    ``target_channels`` target channels."""
    return Autoencoder(target_channels=target_channels, **dataclasses.asdict(config))


__all__ = ["AUTOENCODER_PRESETS", "BACKBONES", "UNET_PRESETS", "UNRECORDED_ARCHITECTURE", "Autoencoder",
           "AutoencoderConfig", "Backbone", "UNet", "UNetConfig", "architecture_of", "autoencoder_config",
           "build_autoencoder", "build_backbone", "preset_config"]
