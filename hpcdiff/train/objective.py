"""What a run minimizes, and how its validation is scored: one objective per kind of run.

The trainer (:mod:`hpcdiff.train.loop`) owns the engine, the batches, the optimizer steps, the checkpoints
and the logs; an objective turns a batch into per-sample losses ``[B]`` through a network (the DeepSpeed
engine in training, the EMA copy in validation) and tallies a validation:

- :class:`DiffusionObjective`: the diffusion loss of the run's denoiser
  (:meth:`~hpcdiff.diffusion.gaussian.GaussianDiffusion.training_losses`);
- :class:`AutoencoderObjective`: the autoencoder's loss (:func:`~hpcdiff.models.autoencoder.
  autoencoder_losses`); its validation also scores the reconstructions in physical units
  (:mod:`hpcdiff.evaluate.reconstruction`).

Determinism by construction: every random draw of a sample's loss (the diffusion time step and noise, the
autoencoder's latent noise) comes from a generator seeded by ``(seed, purpose, epoch, global sample
index)`` (:mod:`hpcdiff.seeding`), so a sample's loss does not depend on which rank or micro-batch it lands
in. Validation draws the diffusion noise of epoch 0, and decodes the autoencoder's latent mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from hpcdiff.data.transforms import Bounds, ChannelStats, inverse_transform
from hpcdiff.evaluate.reconstruction import ReconstructionTally, metric_names
from hpcdiff.evaluate.truth import LAND_THRESHOLD
from hpcdiff.models.autoencoder import autoencoder_losses, latent_shape
from hpcdiff.runspec import AutoencoderSpec, RunSpec
from hpcdiff.seeding import LATENT, NOISE, generator
from hpcdiff.train.metrics_log import train_columns, val_columns

Network = Callable[..., Any]  # the engine, or a module with the same call
Batch = dict[str, torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]  # the sum of a CPU float64 tensor over ranks


def per_sample_noise(index: torch.Tensor, *, seed: int, epoch: int, num_steps: int,
                     shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Time steps ``[B]`` and noise ``[B, *shape]`` from one generator per sample (independent of
    batching). ``index`` are global sample indices ``[B]``."""
    steps, noise = [], []
    for i in index.tolist():
        gen = generator(seed, NOISE, epoch, i)
        steps.append(torch.randint(num_steps, (1,), generator=gen))
        noise.append(torch.randn(shape, generator=gen))
    return torch.cat(steps), torch.stack(noise)


def latent_noise(index: torch.Tensor, *, seed: int, epoch: int, shape: tuple[int, ...]) -> torch.Tensor:
    """An autoencoder's reparameterization noise ``[B, *shape]`` (``shape``: one sample's latents
    ``(Cl, h, w)``), one generator per sample of global index ``index [B]``."""
    return torch.stack([torch.randn(shape, generator=generator(seed, LATENT, epoch, i))
                        for i in index.tolist()])


def windows_of(field: torch.Tensor | None, batch: Batch, hw: tuple[int, int]) -> torch.Tensor | None:
    """A per-pixel field of the whole grid ``[1, C, H, W]`` (loss weights, land) as a batch of fields of
    ``hw`` sees it: the field itself for whole fields, else each sample's window ``[B, C, h, w]``."""
    if field is None or tuple(field.shape[-2:]) == hw:
        return field
    return torch.cat([field[..., r:r + hw[0], c:c + hw[1]] for r, c in batch["window"].tolist()])


class LossTally:
    """Sums of the per-sample loss ``terms`` over validation batches on this rank, and their means over all
    ranks (a term a batch does not give counts 0)."""

    def __init__(self, terms: Sequence[str], reduce: Reduce) -> None:
        self.terms, self.reduce = tuple(terms), reduce
        self.totals = torch.zeros(len(self.terms) + 1, dtype=torch.float64)  # the terms, then the samples

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        count = next(iter(losses.values())).numel()
        sums = [float(losses[t].sum()) if t in losses else 0.0 for t in self.terms]
        self.totals += torch.tensor([*sums, count], dtype=torch.float64)

    def result(self) -> dict[str, Any] | None:
        """``val_<term>`` means and ``val_samples`` over all ranks (every rank calls it); ``None`` when no
        rank validated a sample."""
        totals = self.reduce(self.totals)
        if totals[-1] == 0:
            return None
        means = {f"val_{t}": float(totals[i] / totals[-1]) for i, t in enumerate(self.terms)}
        return {**means, "val_samples": int(totals[-1])}


class DiffusionObjective:
    """The diffusion loss of ``denoiser`` (the engine's module: it encodes targets and weights the ``eps``
    error by the parameterization) with the run's diffusion; ``weight``: per-pixel loss weights
    ``[1, 1, H, W]`` (``None``: uniform)."""

    terms = ("loss", "mse", "vlb")

    def __init__(self, spec: RunSpec, denoiser: torch.nn.Module, *, seed: int, weight: torch.Tensor | None,
                 device: torch.device) -> None:
        self.denoiser, self.seed, self.weight, self.device = denoiser, seed, weight, device
        self.diffusion = spec.build_diffusion()

    def columns(self) -> dict[str, tuple[str, ...]]:
        return {"train": train_columns(self.terms), "val": val_columns(self.terms)}

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """``(x0, cond, doy, context)`` on the device (``context`` ``None`` without a spatial context); ``x0``
        is what is diffused (the denoiser's encoding)."""
        target, cond, doy = (batch[k].to(self.device) for k in ("target", "cond", "doy"))
        context = batch["context"].to(self.device) if "context" in batch else None
        return self.denoiser.encode(target, cond), cond, doy, context

    def losses(self, model: Network, batch: Batch, *, epoch: int) -> dict[str, torch.Tensor]:
        """Per-sample losses ``[B]`` with each sample's own time step and noise."""
        x0, cond, doy, context = self.inputs(batch)
        t, noise = per_sample_noise(batch["index"], seed=self.seed, epoch=epoch,
                                    num_steps=self.diffusion.num_steps, shape=tuple(x0.shape[1:]))
        t = t.to(self.device)
        return self.diffusion.training_losses(lambda x_t, tt: model(x_t, tt, cond, doy, context), x0, t,
                                              noise=noise.to(self.device),
                                              weight=windows_of(self.weight, batch, tuple(x0.shape[-2:])),
                                              mse_weight=self.denoiser.mse_weight(t))

    def tally(self, *, reduce: Reduce, samples: int) -> DiffusionTally:
        return DiffusionTally(self, reduce)


class DiffusionTally:
    """A diffusion run's validation: the loss terms with the fixed noise of epoch 0."""

    def __init__(self, objective: DiffusionObjective, reduce: Reduce) -> None:
        self.objective, self.losses = objective, LossTally(objective.terms, reduce)

    def add(self, model: Network, batch: Batch) -> None:
        self.losses.add(self.objective.losses(model, batch, epoch=0))

    def result(self) -> dict[str, Any] | None:
        return self.losses.result()


class AutoencoderObjective:
    """The loss of an autoencoder run (:class:`~hpcdiff.runspec.AutoencoderSpec`): its networks map
    ``(target [B, Ct, h, w], noise [B, Cl, ...]) -> (recon, mean, logvar)``. ``weight``: per-pixel loss
    weights ``[1, 1, H, W]`` (``None``: uniform); ``lsm``: the land-sea fraction ``[1, 1, H, W]`` (land:
    above :data:`~hpcdiff.evaluate.truth.LAND_THRESHOLD`) and ``transforms`` the targets'
    :meth:`~hpcdiff.data.manifest.Manifest.target_transforms`, for the validation's physical metrics;
    ``rank`` of ``world_size`` merge them."""

    def __init__(self, spec: AutoencoderSpec, *, seed: int, weight: torch.Tensor | None, lsm: torch.Tensor,
                 transforms: Sequence[tuple[ChannelStats, Bounds]], device: torch.device, rank: int = 0,
                 world_size: int = 1) -> None:
        self.spec, self.seed, self.weight, self.device = spec, seed, weight, device
        self.lsm, self.transforms = lsm, list(transforms)
        self.rank, self.world_size = rank, world_size
        self.terms = ("loss", "mse", "kl", *(("spectral",) if spec.spectral_weight > 0 else ()))

    def columns(self) -> dict[str, tuple[str, ...]]:
        return {"train": train_columns(self.terms),
                "val": val_columns(self.terms, metric_names(self.spec.targets))}

    def field_shape(self) -> tuple[int, int]:
        """What one training or validation field is: the patch, or the whole grid."""
        return tuple(self.spec.patch or self.spec.image_shape)

    def forward(self, model: Network, batch: Batch,
                noise: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The per-sample losses ``[B]`` and the reconstruction ``[B, Ct, h, w]`` of the batch's normalized
        targets with the latent ``noise`` (``None``: none, ``z = mean``)."""
        target = batch["target"].to(self.device)
        if noise is None:
            hw = latent_shape(tuple(target.shape[-2:]), self.spec.factor)
            noise = torch.zeros(len(target), self.spec.latent_channels, *hw)
        recon, mean, logvar = model(target, noise.to(self.device))
        losses = autoencoder_losses(recon, target, mean, logvar, kl_weight=self.spec.kl_weight,
                                    spectral_weight=self.spec.spectral_weight,
                                    weight=windows_of(self.weight, batch, tuple(target.shape[-2:])))
        return losses, recon

    def losses(self, model: Network, batch: Batch, *, epoch: int) -> dict[str, torch.Tensor]:
        """Per-sample losses ``[B]``, each sample's latent noise from its own seed."""
        hw = latent_shape(tuple(batch["target"].shape[-2:]), self.spec.factor)
        noise = latent_noise(batch["index"], seed=self.seed, epoch=epoch,
                             shape=(self.spec.latent_channels, *hw))
        return self.forward(model, batch, noise)[0]

    def tally(self, *, reduce: Reduce, samples: int) -> AutoencoderTally:
        """The validation of at most ``samples`` fields over all ranks."""
        return AutoencoderTally(self, reduce, samples=samples)


class AutoencoderTally:
    """An autoencoder run's validation: the loss terms of the latent means' reconstructions, and the
    reconstructions' physical metrics (:class:`~hpcdiff.evaluate.reconstruction.ReconstructionTally`)."""

    def __init__(self, objective: AutoencoderObjective, reduce: Reduce, *, samples: int) -> None:
        self.objective, self.reduce = objective, reduce
        self.losses = LossTally(objective.terms, reduce)
        h, w = objective.field_shape()
        self.metrics = ReconstructionTally(objective.spec.targets, shape=(h, w), pixels=samples * h * w)

    def add(self, model: Network, batch: Batch) -> None:
        o = self.objective
        losses, recon = o.forward(model, batch, None)
        self.losses.add(losses)
        land = windows_of(o.lsm, batch, tuple(recon.shape[-2:])) > LAND_THRESHOLD
        land = land.expand(len(recon), 1, *recon.shape[-2:])[:, 0].cpu().numpy()
        recon, truth = (inverse_transform(o.transforms, x) for x in (recon, batch["target"]))
        self.metrics.add(recon, truth, land)

    def result(self) -> dict[str, Any] | None:
        out = self.losses.result()
        if out is None:  # every rank agrees (the count is reduced): none goes on to reduce the metrics
            return None
        o = self.objective
        metrics = self.metrics.result(lambda a: self.reduce(torch.from_numpy(a)).numpy(), rank=o.rank,
                                      world_size=o.world_size)
        return {**out, **metrics}


Objective = DiffusionObjective | AutoencoderObjective

