"""Full-domain sampling in overlapping tiles: the network sees windows of the size it was trained on.

At every step of the sampler the tiled model evaluates the network on overlapping ``h x w`` windows of
``x_t`` (and of the conditions) and blends their outputs with weights that ramp linearly over the
overlap (``1 .. overlap + 1`` from a tile's edge, normalized by their sum at each pixel), so neighbouring
tiles agree smoothly and no pixel depends on one tile's border alone. Tiles are placed every
``h - overlap`` rows (``w - overlap`` columns), the last flush with the grid's edge. Every network call
has the same shape (the batch's rows times one tile), so a member stays the same whatever the batching.

A large-scale ``context [N, Cx, Hx, Wx]`` is on its own grid and goes whole to every tile call; the
tile's position in it comes with the coordinate channels of ``cond``, cropped with the tile like every
condition.

The alternative, the whole grid in one call per step, needs no blending; ``docs/performance_memory.md``
and the README's full-domain section compare the two.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hpcdiff.errors import HpcdiffError

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """First rows (or columns) of tiles of ``tile`` covering ``0 .. size`` with at least ``overlap`` shared
    between neighbours; the last tile ends at ``size``."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def ramp(tile: int, overlap: int) -> torch.Tensor:
    """Blending weights ``[tile]`` along one side: ``(i + 1) / (overlap + 1)`` within ``overlap`` of an
    edge, 1 inside; positive everywhere, so every covered pixel has a weight."""
    i = torch.arange(tile, dtype=torch.float64)
    nearest_edge = torch.minimum(i + 1, tile - i)
    return (nearest_edge.clamp(max=overlap + 1.0) / (overlap + 1)).float()


def check_tiling(tile: tuple[int, int], overlap: int, *, where: str) -> None:
    if overlap < 0 or overlap >= min(tile):
        raise HpcdiffError(f"{where}: sample.tile_overlap must be in [0, {min(tile) - 1}] for tiles of "
                           f"{tile[0]} x {tile[1]}, got {overlap}")


class TiledModel:
    """``(x_t [N, C, H, W], t [N]) -> [N, C', H, W]``: ``model(x_t, t, cond, doy)`` on overlapping tiles,
    blended. ``cond [N, Cc, H, W]``, ``doy [N]`` and the optional ``context [N, Cx, Hx, Wx]`` (passed
    uncropped to every call as ``context=``) are bound at construction."""

    def __init__(self, model: Callable[..., torch.Tensor], cond: torch.Tensor, doy: torch.Tensor, *,
                 tile: tuple[int, int], overlap: int, context: torch.Tensor | None = None) -> None:
        self.model, self.cond, self.doy = model, cond, doy
        self.extra = {} if context is None else {"context": context}
        height, width = cond.shape[-2:]
        self.tile = (min(tile[0], height), min(tile[1], width))
        self.rows = tile_starts(height, self.tile[0], overlap)
        self.cols = tile_starts(width, self.tile[1], overlap)
        weight = ramp(self.tile[0], overlap)[:, None] * ramp(self.tile[1], overlap)[None, :]
        self.weight = weight.to(cond.device)
        total = torch.zeros(height, width, device=cond.device)
        for r in self.rows:
            for c in self.cols:
                total[r:r + self.tile[0], c:c + self.tile[1]] += self.weight
        self.inverse_total = 1.0 / total

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, w = self.tile
        out = None
        for r in self.rows:
            for c in self.cols:
                part = self.model(x_t[..., r:r + h, c:c + w].contiguous(), t,
                                  self.cond[..., r:r + h, c:c + w].contiguous(), self.doy, **self.extra)
                if out is None:
                    out = part.new_zeros((*part.shape[:2], *x_t.shape[-2:]))
                out[..., r:r + h, c:c + w] += part * self.weight
        assert out is not None
        return out * self.inverse_total
