"""Residual targets: diffuse what the coarse field does not already say.

With ``diffusion.residual: true`` the model learns ``x = (target - baseline(cond)) / scale`` per target
channel instead of the normalized target itself. ``baseline`` is the target's own ERA5 condition channel
(bilinearly regridded by the preprocessing), mapped from the condition's normalization into the
target's. Both use the same shape transform (``log1p``, ``asinh`` or none, same ``scale``), so the map is
exactly affine: ``baseline_k = a_k · cond[:, i_k] + b_k`` with ``a = std_c / std_t``,
``b = (mean_c - mean_t) / std_t``. ``scale`` is the residual's RMS on the training split, so the diffused
field has unit variance as the noise schedule assumes. Decoding is the exact inverse; a target without
a condition of the same name and transform is an error, not a silent zero baseline (as in ResDiff /
CorrDiff, where a diffusion model samples the residual of a mean estimate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hpcdiff.errors import HpcdiffError

MAX_FIT_SAMPLES = 512


@dataclasses.dataclass(frozen=True)
class Residual:
    """``x = (target - (a · cond[:, index] + b)) / scale`` per target channel; tensors ``[N, C, H, W]``."""

    index: tuple[int, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    scale: tuple[float, ...]

    def _coefs(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.tensor(v, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
                     for v in (self.a, self.b, self.scale))

    def baseline(self, cond: torch.Tensor) -> torch.Tensor:
        """``[N, Ct, H, W]`` in the target's normalization, from ``cond [N, Cc, H, W]``."""
        a, b, _ = self._coefs(cond)
        return a * cond[:, list(self.index)] + b

    def encode(self, target: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        assert target.shape[1] == len(self.index), (tuple(target.shape), self.index)
        _, _, scale = self._coefs(target)
        return (target - self.baseline(cond).to(target.dtype)) / scale

    def decode(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        _, _, scale = self._coefs(x)
        return x * scale + self.baseline(cond).to(x.dtype)

    def to_state(self) -> dict[str, list]:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_state(cls, state: Mapping[str, Sequence]) -> Residual:
        return cls(index=tuple(int(i) for i in state["index"]), a=tuple(map(float, state["a"])),
                   b=tuple(map(float, state["b"])), scale=tuple(map(float, state["scale"])))


Coefs = tuple[float, ...]


def affine_baseline(manifest: Mapping[str, Any]) -> tuple[tuple[int, ...], Coefs, Coefs]:
    """``(index, a, b)`` mapping each target to its same-name condition channel (see the module doc)."""
    conds = {c["name"]: (i, c["stats"]) for i, c in enumerate(manifest["conditions"])}
    index, a, b = [], [], []
    for target in manifest["targets"]:
        name, ts = target["name"], target["stats"]
        if name not in conds:
            raise HpcdiffError(f"diffusion.residual: target {name!r} has no condition channel of that name "
                               f"(conditions: {', '.join(conds)})")
        i, cs = conds[name]
        if (cs["transform"], float(cs["scale"])) != (ts["transform"], float(ts["scale"])):
            raise HpcdiffError(f"diffusion.residual: target {name!r} uses transform {ts['transform']} "
                               f"(scale {ts['scale']}) but its condition uses {cs['transform']} "
                               f"(scale {cs['scale']}); give both the same transform in the recipe")
        index.append(i)
        a.append(float(cs["std"]) / float(ts["std"]))
        b.append((float(cs["mean"]) - float(ts["mean"])) / float(ts["std"]))
    return tuple(index), tuple(a), tuple(b)


def fit_residual(manifest: Mapping[str, Any], batches: Sequence[Mapping[str, torch.Tensor]]) -> Residual:
    """The residual map with ``scale`` = the residual's RMS over ``batches`` (dicts with ``target`` and
    ``cond``; the caller passes the first training batches, up to :data:`MAX_FIT_SAMPLES` samples)."""
    index, a, b = affine_baseline(manifest)
    unit = Residual(index=index, a=a, b=b, scale=(1.0,) * len(index))
    sums, count = np.zeros(len(index)), 0
    for batch in batches:
        r = unit.encode(batch["target"].double(), batch["cond"].double())
        sums += (r ** 2).sum(dim=(0, 2, 3)).numpy()
        count += r.shape[0] * r.shape[2] * r.shape[3]
    if count == 0:
        raise HpcdiffError("diffusion.residual: no training samples to fit the residual scale on")
    rms = np.sqrt(sums / count)
    return dataclasses.replace(unit, scale=tuple(float(max(v, 1e-6)) for v in rms))
