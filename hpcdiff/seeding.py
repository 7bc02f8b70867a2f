"""Seeds derived from tuples of integers, so that a random draw depends on *what* it is for (a sample,
a date and member, a rank and step) and never on batching, chunking or the number of ranks."""

from __future__ import annotations

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def generator(*parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded from ``parts``."""
    return torch.Generator(device=device).manual_seed(mix_seed(*parts))
