"""The training job config (``jobs/*.yaml``): typed sections, loaded by :func:`hpcdiff.config.load_config`.

The global batch is the fixed quantity (``train.global_batch``); the micro-batch per rank and the
gradient-accumulation steps are derived from it and the world size by :func:`batch_arithmetic`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from hpcdiff.config import sides
from hpcdiff.data.context import ContextSelection
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.slurm import SlurmSection


@dataclasses.dataclass(frozen=True)
class DataSection:
    dataset: Path
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = 1
    # Train on random windows: an int (square) or [h, w]; null: whole fields. Each sample's window is
    # placed by its own seed (hpcdiff.data.windows), so ranks, accumulation and resume stay exact.
    patch_size: int | tuple[int, int] | None = None
    # Two static channels with the grid position (rows and columns scaled to [-1, 1] over the whole
    # grid), cropped with each window, so the network knows where a window lies beyond what the statics
    # tell. Off by default: on the danra world they gave no gain (docs/performance_patches.md).
    position_channels: bool = False

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {self.num_workers}")
        sides(self.patch_size, name="patch_size")

    @property
    def patch(self) -> tuple[int, int] | None:
        """The window ``(h, w)``, or ``None`` for whole fields."""
        return sides(self.patch_size, name="patch_size")

    @property
    def positions(self) -> bool:
        """Whether the conditions carry the two position channels."""
        return self.position_channels


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """What is trained: ``kind`` ``diffusion`` (the backbone, a key of :data:`hpcdiff.models.BACKBONES`,
    in size ``preset``, with ``dropout``) or ``autoencoder`` (the preset of
    :data:`hpcdiff.models.AUTOENCODER_PRESETS` named by ``preset``; ``backbone`` and ``dropout`` are
    the diffusion backbone's)."""

    kind: Literal["diffusion", "autoencoder"] = "diffusion"
    backbone: str = "unet"
    preset: str = "small"
    dropout: float | None = None  # null: the preset's

    def __post_init__(self) -> None:
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass(frozen=True)
class ContextJobSection:
    """Which of the dataset's context the network reads (:mod:`hpcdiff.data.context`). ``temporal``: day
    offsets (of the recipe's ``context.days``, 0 excluded) whose conditions join as extra condition
    channels; ``spatial``: day offsets whose large-domain box the network's context encoder reads;
    ``inject``: how the encoder's output enters the U-Net: ``embedding`` (pooled, added to the time
    embedding), ``features`` (sampled at each pixel's place in the box, concatenated to the input) or
    ``both``. Both lists empty: no context (the default)."""

    temporal: list[int] = dataclasses.field(default_factory=list)
    spatial: list[int] = dataclasses.field(default_factory=list)
    inject: Literal["embedding", "features", "both"] = "features"

    def __post_init__(self) -> None:
        if 0 in self.temporal:
            raise ValueError("context.temporal lists neighbouring days; day 0 is always a condition")
        for name in ("temporal", "spatial"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"context.{name} lists an offset twice: {list(values)}")


@dataclasses.dataclass(frozen=True)
class WeightSection:
    """Per-pixel loss weights from the signed distance to the coast (km, positive on land)."""

    enabled: bool = True
    land_weight: float = 1.0
    sea_scale_km: float = 20.0
    floor: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.floor <= self.land_weight:
            raise ValueError(f"need 0 < floor <= land_weight, got floor {self.floor}, "
                             f"land_weight {self.land_weight}")
        if not self.sea_scale_km > 0.0:
            raise ValueError(f"sea_scale_km must be positive, got {self.sea_scale_km}")


@dataclasses.dataclass(frozen=True)
class DiffusionSection:
    schedule: Literal["cosine", "linear"] = "cosine"
    num_steps: int = 1000
    var_type: Literal["learned_range", "fixed_small", "fixed_large"] = "learned_range"
    prediction: Literal["eps", "v"] = "eps"  # what the network outputs (v: velocity, Salimans & Ho 2022)
    residual: bool = False  # diffuse target - its ERA5 condition, scaled (hpcdiff/data/residual.py)
    loss: Literal["hybrid", "simple", "vlb"] = "hybrid"
    vlb_weight: float = 0.001
    sdf_weights: WeightSection = WeightSection()

    def __post_init__(self) -> None:
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be at least 2, got {self.num_steps}")
        if not self.vlb_weight >= 0.0:
            raise ValueError(f"vlb_weight must be 0 or more, got {self.vlb_weight}")


@dataclasses.dataclass(frozen=True)
class AutoencoderSection:
    """The loss of an autoencoder run (:func:`hpcdiff.models.autoencoder.autoencoder_losses`): the
    ``sdf_weights``-weighted reconstruction MSE of the normalized targets, plus ``kl_weight`` x the KL
    divergence of the latents from N(0, 1) per latent element, plus ``spectral_weight`` x the mean squared
    difference of log amplitude spectra (0: off)."""

    kl_weight: float = 1.0e-6
    spectral_weight: float = 0.0
    sdf_weights: WeightSection = WeightSection()

    def __post_init__(self) -> None:
        for name in ("kl_weight", "spectral_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class OptimSection:
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        # ``not x > 0`` rather than ``x <= 0``: NaN fails every comparison and must be refused too.
        for name in ("lr", "eps", "grad_clip"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be 0 or more, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclasses.dataclass(frozen=True)
class TrainSection:
    max_steps: int = 1000
    global_batch: int = 16
    micro_batch: int | None = None
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    zero_stage: Literal[0, 1, 2] = 0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    val_batches: int | None = 8
    ckpt_every: int = 200
    keep_last: int = 3
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "global_batch", "log_every", "val_every", "ckpt_every", "keep_last"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainJob:
    data: DataSection
    model: ModelSection = ModelSection()
    diffusion: DiffusionSection = DiffusionSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
    context: ContextJobSection = ContextJobSection()
    autoencoder: AutoencoderSection = AutoencoderSection()
    deepspeed: dict[str, Any] = dataclasses.field(default_factory=dict)
    slurm: SlurmSection = SlurmSection()

    def __post_init__(self) -> None:
        # what only the other kind of run reads is refused, not ignored: a job trains what it says
        unused = unused_sections(self)
        if unused:
            raise ValueError(f"model.kind {self.model.kind} does not use {', '.join(unused)} (set in the "
                             f"job); remove {'them' if len(unused) > 1 else 'it'} or change model.kind")

    @property
    def loss_weights(self) -> WeightSection:
        """The per-pixel loss weights of the job's kind of run."""
        section = self.autoencoder if self.model.kind == "autoencoder" else self.diffusion
        return section.sdf_weights


def unused_sections(job: TrainJob) -> list[str]:
    """The settings of ``job`` that differ from their defaults but that its ``model.kind`` does not read:
    a diffusion run reads no ``autoencoder`` section; an autoencoder reads targets only (no ``diffusion``
    section, no conditions, context or position channels) and has no dropout."""
    if job.model.kind == "diffusion":
        return ["autoencoder"] if job.autoencoder != AutoencoderSection() else []
    unused = {"diffusion": job.diffusion != DiffusionSection(), "context": job.context != ContextJobSection(),
              "model.dropout": job.model.dropout is not None, "data.position_channels": job.data.positions}
    return [name for name, set_ in unused.items() if set_]


def context_selection(job: TrainJob) -> ContextSelection | None:
    """What the job's network reads of the dataset's context (``None``: nothing)."""
    c = job.context
    if not c.temporal and not c.spatial:
        return None
    return ContextSelection(temporal=tuple(c.temporal), spatial=tuple(c.spatial))


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    micro_batch: int
    accum_steps: int
    world_size: int

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = micro-batch {self.micro_batch} x accumulation "
                f"{self.accum_steps} x {self.world_size} rank{'s' if self.world_size > 1 else ''}")


def batch_arithmetic(train: TrainSection, world_size: int) -> BatchPlan:
    """Derive micro-batch and accumulation from the fixed global batch; error if it cannot divide."""
    per_rank, rest = divmod(train.global_batch, world_size)
    if rest or per_rank == 0:
        raise HpcdiffError(f"train.global_batch {train.global_batch} is not divisible by the world size "
                           f"{world_size}")
    micro = train.micro_batch if train.micro_batch is not None else per_rank
    if micro <= 0 or per_rank % micro:
        raise HpcdiffError(f"train.global_batch {train.global_batch} / {world_size} ranks = {per_rank} per "
                           f"rank is not a multiple of train.micro_batch {micro}")
    return BatchPlan(train.global_batch, micro, per_rank // micro, world_size)


# Restored from a checkpoint on resume, so a job cannot change them there: the optimizer's
# hyperparameters live in its restored state, and the batch plan, precision and ZeRO stage fix the
# engine state and the data order that a resumed run repeats.
RESTORED_ON_RESUME = ("optim", "train.global_batch", "train.micro_batch", "train.precision",
                      "train.zero_stage", "train.seed")


def resume_conflicts(saved: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """``key: checkpoint X, job Y`` for every :data:`RESTORED_ON_RESUME` value that ``job`` (a plain
    config dict) changes relative to the checkpoint's config ``saved``."""
    out = []
    for key in RESTORED_ON_RESUME:
        section, _, name = key.partition(".")
        old, new = saved.get(section, {}), job.get(section, {})
        if name:
            old, new = old.get(name), new.get(name)
            pairs = [(key, old, new)]
        else:
            pairs = [(f"{key}.{k}", old.get(k), v) for k, v in new.items()]
        out += [f"{k}: checkpoint {a!r}, job {b!r}" for k, a, b in pairs if a != b]
    return out
