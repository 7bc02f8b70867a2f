"""All-reduce bandwidth as nccl-tests reports it, and the latency-bandwidth (α–β) fit.

nccl-tests (``doc/PERFORMANCE.md``): for a message of ``S`` bytes that takes ``t`` seconds,
``algbw = S / t`` and, for all-reduce on ``n`` ranks, ``busbw = algbw x 2 (n - 1) / n``: the bus
bandwidth is what each rank's link carries in a ring all-reduce, comparable across rank counts.

The fit is the Hockney model ``t(S) = α + β S`` (α: latency, s; β: time per byte, s/B), by least
squares on the *relative* error (each equation divided by the measured time), because the sizes span
five orders of magnitude and an unweighted fit would ignore every small message; both are kept
non-negative (``scipy.optimize.nnls``), since noisy latency-bound sizes alone can tilt β below zero.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import nnls


def algbw(size_bytes: float, seconds: float) -> float:
    """Algorithm bandwidth, bytes/s."""
    return size_bytes / seconds


def busbw(size_bytes: float, seconds: float, ranks: int) -> float:
    """Bus bandwidth of an all-reduce over ``ranks``, bytes/s (nccl-tests' factor 2 (n - 1) / n)."""
    return algbw(size_bytes, seconds) * (2.0 * (ranks - 1) / ranks if ranks > 1 else 1.0)


@dataclasses.dataclass(frozen=True)
class AlphaBeta:
    """``t(S) = alpha_s + beta_s_per_byte x S`` for an all-reduce on ``ranks``; ``residual`` is the root
    mean square of the relative errors of the fit."""

    alpha_s: float
    beta_s_per_byte: float
    residual: float
    ranks: int

    def time_s(self, size_bytes: float) -> float:
        return self.alpha_s + self.beta_s_per_byte * size_bytes

    def per_hop(self) -> tuple[float, float]:
        """The ring model's parameters behind the fit: latency of one of the ``2 (n - 1)`` ring steps
        (s) and time per byte on a link (s/B), from ``t = 2 (n-1) a + 2 (n-1)/n S b``."""
        n = self.ranks
        if n < 2:
            raise ValueError("a single rank has no ring to fit")
        return self.alpha_s / (2 * (n - 1)), self.beta_s_per_byte / (2.0 * (n - 1) / n)

    @property
    def bandwidth_gb_per_s(self) -> float:
        """``1 / β`` in GB/s (1e9 bytes/s); infinite when the fit found no per-byte cost."""
        return 1.0 / self.beta_s_per_byte / 1e9 if self.beta_s_per_byte > 0 else float("inf")


def fit_alpha_beta(sizes_bytes: list[float], seconds: list[float], *, ranks: int) -> AlphaBeta:
    """Least-squares α and β from measured all-reduce times (relative-error weighting)."""
    size = np.asarray(sizes_bytes, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    if size.shape != t.shape or size.size < 2:
        raise ValueError("need at least two (size, time) pairs of equal length")
    if not (np.all(t > 0) and np.all(size > 0)):
        raise ValueError("sizes and times must be positive")
    design = np.stack([np.ones_like(size), size], axis=1) / t[:, None]
    (alpha, beta), _ = nnls(design, np.ones_like(t))
    rel = (alpha + beta * size - t) / t
    return AlphaBeta(alpha_s=float(alpha), beta_s_per_byte=float(beta),
                     residual=float(np.sqrt(np.mean(rel**2))), ranks=ranks)


def sweep_sizes(min_bytes: int, max_bytes: int) -> list[int]:
    """Powers of two from ``min_bytes`` to ``max_bytes`` (inclusive), e.g. 1 KiB ... 256 MiB."""
    if min_bytes < 4 or max_bytes < min_bytes:
        raise ValueError(f"need 4 <= min_bytes <= max_bytes, got {min_bytes}, {max_bytes}")
    sizes, s = [], 1 << (int(min_bytes) - 1).bit_length()
    while s <= max_bytes:
        sizes.append(s)
        s *= 2
    return sizes
