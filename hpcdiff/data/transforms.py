"""Per-variable transforms with exact inverses, and their statistics.

Every transform is ``y = (g(x / scale) - mean) / std``: a fixed, invertible shape function ``g`` from
:data:`TRANSFORMS`, then a z-score whose ``mean``/``std`` are fitted on the *training split only*
(targets over land pixels, so the land mean of transformed training data is 0). Shapes:

- ``zscore``: ``g(u) = u`` (temperature, pressure, wind);
- ``log1p``: ``g(u) = log1p(u)``, inverse ``expm1``: zeros map to 0, defined for ``x > -scale``
  (precipitation, kg m-2; ERA5's tiny negative packing noise is fine);
- ``asinh``: ``g(u) = asinh(u)``, inverse ``sinh``: odd, log-like for large ``|x|``, handles zeros
  and negatives (evaporation, negative = evaporation).

The fit streams: :class:`RunningStats` accumulates count / mean / M2 per channel in float64 and merges
(Chan et al.) across blocks and ranks, so memory does not grow with the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hpcdiff.errors import HpcdiffError
from hpcdiff.variables import count_outside

Shape = Callable[[np.ndarray], np.ndarray]
TRANSFORMS: dict[str, tuple[Shape, Shape]] = {
    "zscore": (lambda u: u, lambda g: g),
    "log1p": (np.log1p, np.expm1),
    "asinh": (np.arcsinh, np.sinh),
}


def shape_forward(x: np.ndarray, *, kind: str, scale: float) -> np.ndarray:
    """``g(x / scale)`` in float64 (the un-normalized transformed space)."""
    return TRANSFORMS[kind][0](np.asarray(x, np.float64) / scale)


@dataclasses.dataclass(frozen=True)
class ChannelStats:
    """The transform of one channel: shape ``transform`` with ``scale``, then ``(g - mean) / std``."""

    transform: str
    scale: float
    mean: float
    std: float
    count: int | None = None  # training values the statistics were fitted on

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}; valid: {', '.join(TRANSFORMS)}")
        if not (self.scale > 0 and self.std > 0):
            raise ValueError(f"scale and std must be positive, got {self.scale}, {self.std}")

    @classmethod
    def of(cls, stats: ChannelStats | Mapping[str, Any]) -> ChannelStats:
        """``stats`` itself, or built from a manifest entry (a mapping with the same keys)."""
        if isinstance(stats, ChannelStats):
            return stats
        count = stats.get("count")
        return cls(transform=str(stats["transform"]), scale=float(stats["scale"]), mean=float(stats["mean"]),
                   std=float(stats["std"]), count=None if count is None else int(count))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return out if self.count is not None else {k: v for k, v in out.items() if k != "count"}

    def normalization(self) -> tuple[str, float, float, float]:
        """What fixes the map from physical to normalized values (not how many values fitted it)."""
        return self.transform, self.scale, self.mean, self.std


def forward(x: np.ndarray, stats: ChannelStats | Mapping[str, Any]) -> np.ndarray:
    """Physical ``x`` (any shape) → normalized, float64, with one channel's ``stats``."""
    stats = ChannelStats.of(stats)
    g = shape_forward(x, kind=stats.transform, scale=stats.scale)
    return (g - stats.mean) / stats.std


def inverse(y: np.ndarray, stats: ChannelStats | Mapping[str, Any]) -> np.ndarray:
    """Normalized ``y`` → physical units, float64; the exact inverse of :func:`forward`."""
    stats = ChannelStats.of(stats)
    g = np.asarray(y, np.float64) * stats.std + stats.mean
    return TRANSFORMS[stats.transform][1](g) * stats.scale


Bounds = tuple[float | None, float | None]


def inverse_transform(channels: Sequence[tuple[ChannelStats, Bounds]], target: Any) -> np.ndarray:
    """Normalized targets ``[..., Ct, H, W]`` (numpy or torch) → physical units, float32 numpy, each
    channel clamped to its physical ``bounds`` (a generated value below a precipitation amount of 0 is
    a dry pixel, not a negative amount). ``channels``: ``(stats, (lower, upper))`` per target channel,
    e.g. :meth:`hpcdiff.data.manifest.Manifest.target_transforms`."""
    return inverse_transform_counted(channels, target)[0]


def inverse_transform_counted(channels: Sequence[tuple[ChannelStats, Bounds]],
                              target: Any) -> tuple[np.ndarray, list[int]]:
    """:func:`inverse_transform`, and per channel how many values lay outside the bounds (and were
    clamped)."""
    array = target.detach().cpu().numpy() if hasattr(target, "detach") else np.asarray(target)
    assert array.ndim >= 3 and array.shape[-3] == len(channels), (array.shape, len(channels))
    out = np.empty(array.shape, np.float32)
    clamped = []
    for c, (stats, (lower, upper)) in enumerate(channels):
        physical = inverse(array[..., c, :, :], stats)
        clamped.append(count_outside(physical, (lower, upper)))
        out[..., c, :, :] = np.clip(physical, lower, upper) if clamped[-1] else physical
    return out, clamped


@dataclasses.dataclass
class RunningStats:
    """Streaming count / mean / sum of squared deviations per channel (float64 ``[C]`` each)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> RunningStats:
        return cls(np.zeros(channels), np.zeros(channels), np.zeros(channels))

    def update(self, values: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add ``values`` ``[N, C, H, W]`` (only pixels where ``mask`` ``[H, W]`` is true). One channel at
        a time in float64 (pairwise sums), so the temporary is one channel of the block."""
        assert values.ndim == 4 and values.shape[1] == self.count.size, values.shape
        keep = None if mask is None else np.asarray(mask, bool).ravel()
        block = RunningStats.empty(values.shape[1])
        for c in range(values.shape[1]):
            x = values[:, c].reshape(values.shape[0], -1)
            x = x if keep is None else x[:, keep]
            if x.size == 0:
                continue
            block.count[c], block.mean[c] = x.size, x.mean(dtype=np.float64)
            deviation = np.subtract(x, block.mean[c], dtype=np.float64)
            block.m2[c] = np.square(deviation, out=deviation).sum()
        self.merge(block)

    def merge(self, other: RunningStats) -> None:
        """Chan et al.'s pairwise combination, in place."""
        total = self.count + other.count
        delta = other.mean - self.mean
        safe = np.where(total > 0, total, 1.0)
        self.mean = self.mean + delta * other.count / safe
        self.m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / safe
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.count, 1.0))


def merged(parts: Sequence[RunningStats]) -> RunningStats:
    """Merge per-rank statistics in a fixed (rank) order."""
    out = RunningStats.empty(parts[0].count.size)
    for part in parts:
        out.merge(part)
    return out


def channel_stats(stats: RunningStats, *, kinds: Sequence[str], scales: Sequence[float],
                  names: Sequence[str]) -> list[dict[str, Any]]:
    """JSON-able per-channel statistics for the manifest (:class:`ChannelStats` fields); a constant
    channel is an error."""
    out = []
    for c, name in enumerate(names):
        std = float(stats.std[c])
        if stats.count[c] == 0 or not std > 0:
            raise HpcdiffError(f"channel {name!r} is constant or empty on the training split (std {std})")
        out.append({"transform": kinds[c], "scale": float(scales[c]), "mean": float(stats.mean[c]),
                    "std": std, "count": int(stats.count[c])})
    return out
