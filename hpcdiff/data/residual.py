"""Residual targets: diffuse what the coarse field does not already say.

With ``diffusion.residual: true`` the model learns ``x = (target - baseline(cond)) / scale`` per target
channel instead of the normalized target itself. ``baseline`` is the target's own ERA5 condition channel
(bilinearly regridded by the preprocessing), mapped from the condition's normalization into the
target's. Both use the same shape transform (``log1p``, ``asinh`` or none, same ``scale``), so the map is
exactly affine: ``baseline_k = a_k · cond[:, i_k] + b_k`` with ``a = std_c / std_t``,
``b = (mean_c - mean_t) / std_t``. ``scale`` is the residual's RMS on the whole training split, fitted by
the preprocessing (:func:`residual_pairs` says which channels pair up; in the transformed space the
residual is simply ``(g_t - g_c) / std_t``) and stored in the manifest, so the diffused field has unit
variance as the noise schedule assumes. Decoding is the exact inverse; a target without
a condition of the same name and transform is an error, not a silent zero baseline (as in ResDiff /
CorrDiff, where a diffusion model samples the residual of a mean estimate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch

from hpcdiff.data.manifest import Manifest
from hpcdiff.errors import HpcdiffError


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
        if target.shape[1] != len(self.index):
            raise ValueError(f"target has {target.shape[1]} channels, the residual map {len(self.index)}")
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


def residual_pairs(targets: Sequence[tuple[str, str, float]],
                   conditions: Sequence[tuple[str, str, float]]) -> list[tuple[int, int]]:
    """``(target index, condition index)`` of every target whose condition of the same name has the same
    transform and scale (``(name, transform, scale)`` per channel): the pairs a residual can use."""
    conds = {name: (i, kind, scale) for i, (name, kind, scale) in enumerate(conditions)}
    pairs = []
    for k, (name, kind, scale) in enumerate(targets):
        if name in conds and conds[name][1:] == (kind, float(scale)):
            pairs.append((k, conds[name][0]))
    return pairs


def residual_from_manifest(manifest: Manifest) -> Residual:
    """The residual map of a dataset: the affine baseline from the statistics, the scale fitted by the
    preprocessing. A target without a usable condition is an error naming it."""
    conds = {c.name: (i, c.stats) for i, c in enumerate(manifest.conditions)}
    index, a, b, scale = [], [], [], []
    for target in manifest.targets:
        name, ts = target.name, target.stats
        if name not in conds:
            raise HpcdiffError(f"diffusion.residual: target {name!r} has no condition channel of that name "
                               f"(conditions: {', '.join(conds)})")
        i, cs = conds[name]
        if (cs.transform, cs.scale) != (ts.transform, ts.scale):
            raise HpcdiffError(f"diffusion.residual: target {name!r} uses transform {ts.transform} "
                               f"(scale {ts.scale}) but its condition uses {cs.transform} "
                               f"(scale {cs.scale}); give both the same transform in the recipe")
        if target.residual_rms is None:
            raise HpcdiffError(f"{manifest.root}: the manifest has no residual scale for {name!r}; "
                               "preprocess the dataset again")
        index.append(i)
        a.append(cs.std / ts.std)
        b.append((cs.mean - ts.mean) / ts.std)
        scale.append(max(target.residual_rms, 1e-6))
    return Residual(index=tuple(index), a=tuple(a), b=tuple(b), scale=tuple(scale))
