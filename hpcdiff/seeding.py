"""Seeds derived from tuples of integers, so that a random draw depends on *what* it is for (a sample,
a date and member, a rank and step) and never on batching, chunking or the number of ranks.

Every stream is seeded from ``(seed, purpose, ...)`` with a :class:`Purpose` tag, so no two uses can
draw the same numbers: without the tag, dropout seeded by ``(seed, rank 0, micro-step 5)`` and the noise
of sample 5 seeded by ``(seed, epoch 0, index 5)`` would be one and the same stream.
"""

from __future__ import annotations

import enum

import numpy as np
import torch


class Purpose(enum.IntEnum):
    """What a random stream is for: the second element of every seed tuple."""

    INIT = 1  # network initialization (rank 0's is broadcast)
    DROPOUT = 2  # dropout masks: (rank, micro-step)
    NOISE = 3  # a training sample's time step and noise: (epoch, global sample index)
    SHUFFLE = 4  # an epoch's batch order: (epoch)
    MEMBER = 5  # an ensemble member's sampling noise: (day number, member)
    SYNTHETIC = 6  # a profiling run's synthetic batch: (rank)
    PATCH = 7  # where a training sample's window lies: (epoch, global sample index)
    LATENT = 8  # an autoencoder training sample's latent (reparameterization) noise: (epoch, global index)


INIT, DROPOUT, NOISE, SHUFFLE, MEMBER, SYNTHETIC, PATCH, LATENT = (int(p) for p in Purpose)


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def generator(*parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded from ``parts``."""
    return torch.Generator(device=device).manual_seed(mix_seed(*parts))
