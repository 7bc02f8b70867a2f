"""The large-scale context input of the U-Net: no context is the network as before, every injection mode
trains and responds to the context, features are sampled where the coordinate channels say and only
there, and the denoiser and the tiled model pass the context on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hpcdiff.diffusion import make_betas
from hpcdiff.models import UNET_PRESETS, UNet, build_backbone
from hpcdiff.models.denoiser import Denoiser
from hpcdiff.models.unet import ContextEncoder, sample_at
from hpcdiff.sample.tiles import TiledModel

MODES = ("embedding", "features", "both")
CONTEXT_CHANNELS = 3


def randomized(model: UNet) -> UNet:
    """``model`` with its zero-initialized layers drawn, so its output depends on every input."""
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.normal_(0.0, 0.05)
    return model


def tiny(inject: str | None, *, seed: int = 0, randomize: bool = False) -> UNet:
    """The tiny preset with 2 targets and 3 conditions (the last two the box coordinates), with context
    injected as ``inject`` (``None``: built without the context arguments); ``randomize``: see
    :func:`randomized`."""
    torch.manual_seed(seed)
    if inject is None:
        model = UNet(target_channels=2, cond_channels=3, learn_sigma=True,
                     **dataclasses.asdict(UNET_PRESETS["tiny"]))
    else:
        model = build_backbone("unet", "tiny", target_channels=2, cond_channels=3, learn_sigma=True,
                               context_channels=CONTEXT_CHANNELS, context_inject=inject)
    return randomized(model) if randomize else model


def box_coords(n: int, h: int, w: int, *, rows: tuple[float, float] = (-1.0, 1.0),
               cols: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Coordinate channels ``[N, 2, H, W]`` (row, column) of an ``h x w`` grid spanning ``rows`` and
    ``cols`` of the box, north to south and west to east."""
    y = torch.linspace(*rows, h)[:, None].expand(h, w)
    x = torch.linspace(*cols, w)[None, :].expand(h, w)
    return torch.stack([y, x])[None].expand(n, -1, -1, -1).clone()


def inputs(h: int = 20, w: int = 27, *, context_hw: tuple[int, int] = (9, 13), n: int = 2, seed: int = 1,
           **coords) -> tuple[torch.Tensor, ...]:
    """``x_t, t, cond, doy, context`` with ``cond`` = one random field and the box coordinates."""
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n, 2, h, w, generator=gen)
    t = torch.randint(1000, (n,), generator=gen)
    cond = torch.cat([torch.randn(n, 1, h, w, generator=gen), box_coords(n, h, w, **coords)], dim=1)
    doy = torch.rand(n, generator=gen) * 365 + 1
    context = torch.randn(n, CONTEXT_CHANNELS, *context_hw, generator=gen)
    return x_t, t, cond, doy, context


def train(model: UNet, batch: tuple[torch.Tensor, ...], *, steps: int = 5) -> UNet:
    """A few Adam steps towards a random target: past the zero-initialized layers' first steps."""
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(batch[0].shape[0], model.out_channels, *batch[0].shape[-2:], generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = (model(*batch) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_without_context_the_network_is_unchanged():
    plain = tiny(None, randomize=True)
    torch.manual_seed(0)
    zero = randomized(build_backbone("unet", "tiny", target_channels=2, cond_channels=3, learn_sigma=True,
                                     context_channels=0, context_inject="both"))
    assert list(zero.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(zero.state_dict().values(), plain.state_dict().values(),
                                                 strict=True))
    x_t, t, cond, doy, _ = inputs()
    with torch.no_grad():
        assert torch.equal(zero(x_t, t, cond, doy), plain(x_t, t, cond, doy))
    assert not any("context" in k for k in zero.state_dict())


@pytest.mark.parametrize("inject", MODES)
def test_each_mode_shapes_trains_and_responds_to_the_context(inject):
    model = tiny(inject)
    batch = inputs(20, 27, context_hw=(9, 13))
    assert model(*batch).shape == (2, 4, 20, 27)
    for hw in ((1, 1), (2, 80)):  # any context grid
        assert model(*inputs(context_hw=hw)).shape == (2, 4, 20, 27)
    train(model, batch)
    x_t, t, cond, doy, context = batch
    context = context.clone().requires_grad_(True)
    model(x_t, t, cond, doy, context).square().mean().backward()
    assert torch.isfinite(context.grad).all() and context.grad.abs().max() > 0
    with torch.no_grad():
        base = model(*batch)
        assert torch.isfinite(base).all()
        assert not torch.allclose(model(x_t, t, cond, doy, context + 0.5), base, atol=1e-5)


def test_the_registry_builds_each_injection():
    for inject, embed, extra in (("embedding", True, 0), ("features", False, 32), ("both", True, 32)):
        model = build_backbone("unet", "tiny", target_channels=2, cond_channels=3, learn_sigma=False,
                               context_channels=6, context_inject=inject)
        assert isinstance(model.context_encoder, ContextEncoder)
        assert model.context_encoder.receptive_field == 33
        assert hasattr(model, "context_embed") == embed
        assert model.down[0][0].in_channels == 2 + 3 + extra


def test_sampling_follows_the_coordinate_convention():
    """Row ``y = cond[:, -2]``, column ``x = cond[:, -1]``; -1 the first, +1 the last row / column of the
    context array, linear between, clamped to the edge beyond."""
    hx, wx = 5, 8
    rows = torch.arange(hx, dtype=torch.float32)[:, None].expand(hx, wx)
    cols = torch.arange(wx, dtype=torch.float32)[None, :].expand(hx, wx)
    features = torch.stack([rows, cols])[None]  # [1, 2, Hx, Wx]: each cell's own row and column
    coords = torch.tensor([[-1.0, 1.0, 0.0, -1.0, 1.02], [-1.0, 1.0, 0.0, 1.0, -1.0]]).reshape(1, 2, 1, 5)
    got = sample_at(features, coords)[0, :, 0]
    expected = torch.tensor([[0.0, hx - 1, (hx - 1) / 2, 0.0, hx - 1],
                             [0.0, wx - 1, (wx - 1) / 2, wx - 1, 0.0]])
    torch.testing.assert_close(got, expected)


def test_a_pixel_sees_the_context_where_it_sits_and_no_further_than_the_receptive_field():
    """Pixels in columns 0..9 of an 80-column box: the encoder's 33-cell receptive field (16 each way)
    reaches column 25 at most, so perturbing columns 30 or 79 changes nothing, column 20 does. Pixels in
    columns 60..69 see column 65 and not column 5."""
    model = tiny("features", randomize=True)
    west = inputs(12, 10, context_hw=(9, 80), cols=(-1.0, -1.0 + 2 * 9 / 79))
    east = inputs(12, 10, context_hw=(9, 80), cols=(-1.0 + 2 * 60 / 79, -1.0 + 2 * 69 / 79))

    def changed(batch: tuple[torch.Tensor, ...], column: int) -> bool:
        x_t, t, cond, doy, context = batch
        perturbed = context.clone()
        perturbed[..., column] += 3.0
        with torch.no_grad():
            return not torch.equal(model(x_t, t, cond, doy, perturbed), model(*batch))

    assert changed(west, 5) and changed(west, 20)
    assert not changed(west, 30) and not changed(west, 79)
    assert changed(east, 65) and not changed(east, 5)


def test_moving_the_coordinates_moves_what_is_sampled():
    model = tiny("features", randomize=True)
    x_t, t, cond, doy, context = inputs()
    moved = cond.clone()
    moved[:, -1] = moved[:, -1] * 0.5 + 0.4  # same grid, shifted east within the box
    with torch.no_grad():
        base = model(x_t, t, cond, doy, context)
        assert not torch.allclose(model(x_t, t, moved, doy, context), base, atol=1e-5)
    # the sampled features themselves move: same coordinates on another context -> another sample
    encoder = model.context_encoder
    with torch.no_grad():
        features = encoder(context)
    assert not torch.allclose(sample_at(features, moved[:, -2:]), sample_at(features, cond[:, -2:]))


def test_the_denoiser_passes_the_context():
    backbone = tiny("both", randomize=True)
    alpha_bar = np.cumprod(1.0 - make_betas("cosine", 1000))
    denoiser = Denoiser(backbone, prediction="eps", alpha_bar=alpha_bar)
    x_t, t, cond, doy, context = inputs()
    with torch.no_grad():
        direct = backbone(x_t, t, cond, doy, context)
        torch.testing.assert_close(denoiser(x_t, t, cond, doy, context), direct, rtol=0, atol=0)
        torch.testing.assert_close(denoiser.bind(cond, doy, context)(x_t, t), direct, rtol=0, atol=0)
        with pytest.raises(AssertionError, match="needs context"):
            denoiser(x_t, t, cond, doy)
        half = Denoiser(tiny("both", randomize=True).to(torch.bfloat16), prediction="eps",
                        alpha_bar=alpha_bar)
        low = half(x_t, t, cond, doy, context)  # context cast to bf16 like cond
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, direct, rtol=0, atol=0.05 * float(direct.abs().max()))


def test_tiles_get_the_whole_context_and_their_own_coordinates():
    model = tiny("features", randomize=True)
    x_t, t, cond, doy, context = inputs(20, 27)
    calls = []

    def recording(x, s, c, d, **kwargs):
        calls.append((c, kwargs["context"]))
        return model(x, s, c, d, **kwargs)

    tiled = TiledModel(recording, cond, doy, tile=(12, 16), overlap=4, context=context)
    with torch.no_grad():
        out = tiled(x_t, t)
        expected = torch.zeros_like(out)
        h, w = tiled.tile
        for r in tiled.rows:
            for c in tiled.cols:
                part = model(x_t[..., r:r + h, c:c + w], t, cond[..., r:r + h, c:c + w], doy, context)
                expected[..., r:r + h, c:c + w] += part * tiled.weight
    torch.testing.assert_close(out, expected * tiled.inverse_total, rtol=1e-6, atol=1e-6)
    assert len(calls) == tiled.count > 1 and all(ctx is context for _, ctx in calls)
    assert {float(c[0, -1, 0, 0]) for c, _ in calls} != {float(calls[0][0][0, -1, 0, 0])}  # cropped coords


def test_checks_say_what_is_wrong():
    model = tiny("features")
    x_t, t, cond, doy, context = inputs()
    with pytest.raises(AssertionError, match="needs context"):
        model(x_t, t, cond, doy)
    with pytest.raises(AssertionError, match="context .* expected"):
        model(x_t, t, cond, doy, context[:, :2])
    with pytest.raises(AssertionError, match="context .* expected"):
        model(x_t, t, cond, doy, context[:1])
    with pytest.raises(AssertionError, match="context .* expected"):
        model(x_t, t, cond, doy, context[0])
    with pytest.raises(AssertionError, match="without context"):
        tiny(None)(x_t, t, cond, doy, context)
    with pytest.raises(ValueError, match="unknown context_inject 'pixels'"):
        build_backbone("unet", "tiny", target_channels=2, cond_channels=3, learn_sigma=False,
                       context_channels=3, context_inject="pixels")
    with pytest.raises(AssertionError, match="last two of 1 cond channels"):
        build_backbone("unet", "tiny", target_channels=2, cond_channels=1, learn_sigma=False,
                       context_channels=3, context_inject="features")
