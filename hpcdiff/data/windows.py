"""Patch training's windows and position channels.

A training sample's window is placed by its own generator, seeded from ``(seed, PATCH, epoch, global
sample index)`` (:mod:`hpcdiff.seeding`): like its diffusion step and noise, it does not depend on the
rank, the micro-batch or the accumulation step it lands in, so two ranks still train exactly like one
rank accumulating two micro-batches, and a resumed run repeats the uninterrupted one.

Position channels tell the network where a window lies: the row and column of each pixel, scaled to
``[-1, 1]`` over the dataset's whole grid (on a regular projected grid such as DANRA's Lambert grid, a
linear function of the projection coordinates). They are two more static channels, cropped with the
window like the others, and are computed, not stored.
"""

from __future__ import annotations

import numpy as np

from hpcdiff.errors import HpcdiffError
from hpcdiff.seeding import PATCH, mix_seed

POSITION_CHANNELS = ("pos_y", "pos_x")


def check_patch(patch: tuple[int, int], grid: tuple[int, int], *, where: str) -> None:
    """A one-line error when the window ``patch`` does not fit in the grid ``grid``."""
    if patch[0] > grid[0] or patch[1] > grid[1]:
        raise HpcdiffError(f"{where}: data.patch_size {patch[0]} x {patch[1]} is larger than the dataset's "
                           f"grid {grid[0]} x {grid[1]}; use a smaller patch or null (whole fields)")


def window_origins(index: np.ndarray, *, seed: int, epoch: int, grid: tuple[int, int],
                   patch: tuple[int, int]) -> np.ndarray:
    """Top-left corners ``[B, 2]`` int64 (row, column) of the windows of the samples with global indices
    ``index [B]``, uniform over every position where the window fits, one generator per sample."""
    rows, cols = grid[0] - patch[0] + 1, grid[1] - patch[1] + 1
    out = np.empty((len(index), 2), np.int64)
    for k, i in enumerate(np.asarray(index).tolist()):
        rng = np.random.default_rng(mix_seed(seed, PATCH, epoch, i))
        out[k] = rng.integers(rows), rng.integers(cols)
    return out


def position_fields(grid: tuple[int, int]) -> np.ndarray:
    """``[2, H, W]`` float32: row and column scaled to ``[-1, 1]`` (0 for a side of one pixel)."""
    h, w = grid
    y = np.linspace(-1.0, 1.0, h) if h > 1 else np.zeros(1)
    x = np.linspace(-1.0, 1.0, w) if w > 1 else np.zeros(1)
    return np.stack(np.broadcast_arrays(y[:, None], x[None, :])).astype(np.float32)
