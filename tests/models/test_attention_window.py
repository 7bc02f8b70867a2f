"""Windowed self-attention: the window split, equality with global attention where a window covers the
grid, equality with attention computed window by window, odd grid sizes, and the presets at the demo's
64 x 64."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hpcdiff.models import UNET_PRESETS, UNet
from hpcdiff.models.unet import AttentionBlock, window_segments


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` in eval mode with its zero-initialized layers drawn at random, so every branch counts."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if torch.all(p == 0):
                p.normal_(0.0, 0.2)
    return module.eval()


def block(channels: int = 16, head_channels: int = 8, window: int | None = None) -> AttentionBlock:
    torch.manual_seed(0)
    return randomized(AttentionBlock(channels, head_channels=head_channels, window=window))


@pytest.mark.parametrize("size, window", [(8, 8), (8, 16), (20, 6), (27, 6), (74, 16), (99, 16), (5, 1),
                                          (789, 16)])
def test_window_segments_split_evenly(size: int, window: int) -> None:
    runs = window_segments(size, window)
    lengths = [length for _, count, length in runs for _ in range(count)]
    assert sum(lengths) == size
    assert len(lengths) == math.ceil(size / window)
    assert max(lengths) <= window and max(lengths) - min(lengths) <= 1
    starts = [start for start, _, _ in runs]
    assert starts == [sum(c * n for _, c, n in runs[:i]) for i in range(len(runs))]


@pytest.mark.parametrize("shape", [(8, 8), (7, 11), (12, 5)])
def test_window_covering_the_grid_is_global_attention(shape: tuple[int, int]) -> None:
    x = torch.randn(2, 16, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = block(window=None)(x)
        assert torch.equal(block(window=max(shape))(x), reference)
        assert torch.equal(block(window=64)(x), reference)
        # a smaller window really is another computation
        assert not torch.allclose(block(window=min(shape) - 1)(x), reference, atol=1e-3)


def attention_by_hand(blk: AttentionBlock, x: torch.Tensor, window: int) -> torch.Tensor:
    """The block's output computed one window at a time with an explicit softmax(q kᵀ / √d) v."""
    n, c, h, w = x.shape
    qkv = blk.qkv(blk.norm(x)).reshape(n, 3, blk.heads, c // blk.heads, h, w)
    out = torch.zeros(n, blk.heads, c // blk.heads, h, w)
    bounds = {axis: [(s + i * length, length) for s, count, length in window_segments(size, window)
                     for i in range(count)] for axis, size in (("h", h), ("w", w))}
    for r0, rl in bounds["h"]:
        for c0, cl in bounds["w"]:
            rows, cols = slice(r0, r0 + rl), slice(c0, c0 + cl)
            q, k, v = (qkv[:, i, :, :, rows, cols].flatten(-2).transpose(-1, -2) for i in range(3))
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            out[..., rows, cols] = (weights @ v).transpose(-1, -2).reshape(n, blk.heads, -1, rl, cl)
    return x + blk.proj(out.reshape(n, c, h, w))


@pytest.mark.parametrize("shape, window", [((20, 27), 6), ((13, 9), 4), ((16, 16), 5), ((9, 30), 30)])
def test_uneven_windows_match_attention_window_by_window(shape: tuple[int, int], window: int) -> None:
    blk = block(window=window)
    x = torch.randn(2, 16, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(blk(x), attention_by_hand(blk, x, window), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(20, 27), (589, 789)])
def test_windowed_block_at_odd_token_grids(shape: tuple[int, int]) -> None:
    """Token grids of odd sizes, up to DANRA's full 589 x 789 at a few channels: shape kept, every token
    touched (finite, and changed by the residual branch)."""
    blk = block(channels=8, head_channels=4, window=16)
    x = torch.randn(1, 8, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = blk(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert ((y - x).abs().flatten(2).amin(-1) > 0).all()


def test_windowed_unet_at_an_odd_grid_trains() -> None:
    """A U-Net with windows smaller than its token grid, at an odd grid (37 x 53 pixels: 19 x 27 tokens at
    attention's 1/2): output shape, and gradients reach every parameter."""
    config = dataclasses.replace(UNET_PRESETS["tiny"], attention_window=4)
    torch.manual_seed(0)
    model = UNet(target_channels=2, cond_channels=3, learn_sigma=True, **dataclasses.asdict(config))
    model = randomized(model)
    gen = torch.Generator().manual_seed(4)
    x, cond = torch.randn(2, 2, 37, 53, generator=gen), torch.randn(2, 3, 37, 53, generator=gen)
    out = model(x, torch.tensor([3, 700]), cond, torch.tensor([10.0, 200.0]))
    assert out.shape == (2, 4, 37, 53)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_presets_at_the_demo_grid_keep_global_attention(preset: str) -> None:
    """The demo trains ``small`` at 64 x 64 (8 x 8 tokens at 1/8): whatever window the preset carries,
    its forward pass there equals the one with global attention, bit for bit."""
    config = UNET_PRESETS[preset]
    models = []
    for window in (config.attention_window, None):
        torch.manual_seed(0)
        fields = dataclasses.asdict(dataclasses.replace(config, attention_window=window))
        models.append(randomized(UNet(target_channels=3, cond_channels=9, learn_sigma=True, **fields)))
    gen = torch.Generator().manual_seed(5)
    x, cond = torch.randn(2, 3, 64, 64, generator=gen), torch.randn(2, 9, 64, 64, generator=gen)
    t, doy = torch.tensor([3, 700]), torch.tensor([10.0, 200.0])
    with torch.no_grad():
        assert torch.equal(models[0](x, t, cond, doy), models[1](x, t, cond, doy))
