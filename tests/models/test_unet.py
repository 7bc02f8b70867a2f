"""The conditional U-Net: shapes, presets, precision and memory formats, batch independence, overfitting."""

from __future__ import annotations

import pytest
import torch

from hpcdiff.diffusion import GaussianDiffusion, make_betas, sample
from hpcdiff.errors import HpcdiffError
from hpcdiff.models import UNET_PRESETS, build_backbone


def tiny(learn_sigma: bool = True, *, seed: int = 0, randomize: bool = True) -> torch.nn.Module:
    """The tiny preset; ``randomize`` replaces the zero-initialized output layers, so outputs depend on
    every input."""
    torch.manual_seed(seed)
    model = build_backbone("unet", "tiny", target_channels=2, cond_channels=3, learn_sigma=learn_sigma)
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                if torch.all(p == 0):
                    p.normal_(0.0, 0.05)
    return model.eval()


def inputs(n: int = 3, size: int = 16, seed: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n, 2, size, size, generator=gen)
    t = torch.randint(1000, (n,), generator=gen)
    cond = torch.randn(n, 3, size, size, generator=gen)
    doy = torch.rand(n, generator=gen) * 365 + 1
    return x_t, t, cond, doy


def test_output_shapes_and_learned_sigma_channels():
    x_t, t, cond, doy = inputs()
    assert tiny(True)(x_t, t, cond, doy).shape == (3, 4, 16, 16)
    assert tiny(False)(x_t, t, cond, doy).shape == (3, 2, 16, 16)
    assert tiny(randomize=False)(x_t, t, cond, doy).abs().max() == 0  # zero-initialized output layer
    out = tiny()(x_t, t.float() + 0.5, cond, doy)  # fractional steps are fine
    assert torch.isfinite(out).all()


def test_every_input_matters():
    model = tiny()
    x_t, t, cond, doy = inputs()
    base = model(x_t, t, cond, doy)
    for changed in ((x_t + 0.1, t, cond, doy), (x_t, t + 100, cond, doy), (x_t, t, cond + 0.1, doy),
                    (x_t, t, cond, doy + 90)):
        assert not torch.allclose(model(*changed), base, atol=1e-5)


def test_shape_checks_say_what_is_wrong():
    model = tiny()
    x_t, t, cond, doy = inputs(size=16)
    with pytest.raises(AssertionError, match="cond"):
        model(x_t, t, cond[:, :2], doy)
    with pytest.raises(AssertionError, match="doy"):
        model(x_t, t, cond, doy[:2])


def test_any_grid_is_padded_inside_and_cropped_back():
    """Odd sides, sides the levels do not divide, DANRA's 589 x 789: the output has the input's grid.
    The padding is by reflection, so a grid equal to a padded one's interior gives the same output
    there only up to the edge's receptive field: checked through the padding helper itself."""
    from hpcdiff.models.unet import grid_padding, pad_to_multiple

    assert grid_padding(589, 8) == (1, 2) and grid_padding(789, 8) == (1, 2) and grid_padding(64, 8) == (0, 0)
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    padded, (rows, cols) = pad_to_multiple(x, 4)
    assert padded.shape == (1, 2, 8, 8) and torch.equal(padded[..., rows, cols], x)
    assert torch.equal(padded[..., 0, cols], x[..., 1, :])  # reflection: row 1 mirrored above row 0
    torch.manual_seed(0)
    small = build_backbone("unet", "small", target_channels=2, cond_channels=3, learn_sigma=True).eval()
    with torch.no_grad():
        for p in small.parameters():
            if torch.all(p == 0):  # the zero-initialized output layers: outputs would not depend on inputs
                p.normal_(0.0, 0.05)
    for h, w in ((20, 20), (15, 22), (9, 13)):
        x_t, t, cond, doy = torch.randn(2, 2, h, w), torch.tensor([3.0, 700.0]), torch.randn(2, 3, h, w), \
            torch.tensor([10.0, 200.0])
        out = small(x_t, t, cond, doy)
        assert out.shape == (2, 4, h, w) and torch.isfinite(out).all()
        # every output pixel depends on the input, including the last row and column
        x_t.requires_grad_(True)
        small(x_t, t, cond, doy)[:, :, -1, -1].sum().backward()
        assert x_t.grad[:, :, -1, -1].abs().sum() > 0
    # DANRA's grid, on a network without attention (full-resolution attention over 464 721 pixels is a
    # memory question of its own)
    from hpcdiff.models.unet import UNet
    danra = UNet(target_channels=1, cond_channels=1, learn_sigma=False, model_channels=8,
                 channel_mult=(1, 2, 2, 2), num_res_blocks=1, attention_ds=(), head_channels=8, dropout=0.0)
    with torch.no_grad():
        out = danra(torch.zeros(1, 1, 589, 789), torch.zeros(1), torch.zeros(1, 1, 589, 789), torch.ones(1))
    assert out.shape == (1, 1, 589, 789)


def test_presets_and_parameter_counts():
    counts = {}
    for name in UNET_PRESETS:
        with torch.device("meta"):
            model = build_backbone("unet", name, target_channels=3, cond_channels=6, learn_sigma=True)
        counts[name] = sum(p.numel() for p in model.parameters())
    assert counts["tiny"] < 0.5e6 and 1e6 < counts["small"] < 3e6 and 50e6 < counts["base"] < 70e6, counts
    with pytest.raises(HpcdiffError, match="model.preset 'huge' is not a preset of unet; valid: tiny, small"):
        build_backbone("unet", "huge", target_channels=1, cond_channels=1, learn_sigma=False)
    with pytest.raises(HpcdiffError, match="model.backbone 'vit' is not a backbone; valid: unet"):
        build_backbone("vit", "tiny", target_channels=1, cond_channels=1, learn_sigma=False)
    dropped = build_backbone("unet", "tiny", target_channels=1, cond_channels=1, learn_sigma=False,
                             dropout=0.3)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in dropped.modules())


def test_a_sample_does_not_depend_on_its_batch():
    model = tiny()
    x_t, t, cond, doy = inputs(n=4)
    batch = model(x_t, t, cond, doy)
    alone = model(x_t[2:3], t[2:3], cond[2:3], doy[2:3])
    assert torch.allclose(batch[2:3], alone, atol=1e-5)
    diff = GaussianDiffusion(make_betas("cosine", 100), var_type="learned_range")
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    with torch.no_grad():
        xs = sample(lambda x, s: model(x, s, cond, doy), diff, (4, 2, 16, 16), sampler="dpmpp_2m", steps=5,
                    generators=gens)
        x2 = sample(lambda x, s: model(x, s, cond[2:3], doy[2:3]), diff, (1, 2, 16, 16), sampler="dpmpp_2m",
                    steps=5, generators=[torch.Generator().manual_seed(2)])
    assert torch.allclose(xs[2:3], x2, rtol=1e-4, atol=1e-3)  # a random net: |x| ~ 1e3


def test_bf16_autocast_channels_last_and_bf16_weights():
    model = tiny()
    x_t, t, cond, doy = inputs()
    with torch.no_grad():
        ref = model(x_t, t, cond, doy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x_t, t, cond, doy)
    assert torch.isfinite(low).all() and torch.allclose(low.float(), ref, atol=0.05 * float(ref.abs().max()))
    cl = model.to(memory_format=torch.channels_last)
    out = cl(x_t.to(memory_format=torch.channels_last), t, cond.to(memory_format=torch.channels_last), doy)
    assert torch.allclose(out, ref, atol=1e-5)
    out.square().mean().backward()
    assert all(p.grad is not None for p in cl.parameters())
    half = tiny().to(torch.bfloat16)  # as DeepSpeed bf16 runs it: bf16 weights and inputs, fp32 doy, int t
    out = half(x_t.bfloat16(), t, cond.bfloat16(), doy)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, atol=0.05 * float(ref.abs().max()))


def test_tiny_unet_overfits_one_conditioned_sample():
    torch.manual_seed(0)
    model = build_backbone("unet", "tiny", target_channels=2, cond_channels=3, learn_sigma=True).train()
    diff = GaussianDiffusion(make_betas("cosine", 100), var_type="learned_range", loss_type="hybrid")
    gen = torch.Generator().manual_seed(0)
    x0, cond = torch.randn(1, 2, 16, 16, generator=gen), torch.randn(1, 3, 16, 16, generator=gen)
    x0, cond, doy = x0.expand(4, -1, -1, -1), cond.expand(4, -1, -1, -1), torch.full((4,), 100.0)
    t, noise = torch.tensor([5, 30, 60, 95]), torch.randn(4, 2, 16, 16, generator=gen)
    model_fn = lambda x, s: model(x, s, cond, doy)  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        terms = diff.training_losses(model_fn, x0, t, noise=noise)
        opt.zero_grad()
        terms["loss"].mean().backward()
        opt.step()
        history.append({k: float(v.detach().mean()) for k, v in terms.items()})
    assert history[-1]["mse"] < 0.01 * history[0]["mse"], (history[0], history[-1])
    assert history[-1]["vlb"] < 0.1 * history[0]["vlb"], (history[0], history[-1])


@pytest.mark.parametrize("window", [None, 16, 5])
def test_attention_takes_the_fused_kernel(window):
    """q, k and v reach scaled_dot_product_attention contiguous, so PyTorch runs its fused kernel, not the
    unfused `math` fallback it takes for transposed views (6x slower at the small U-Net's 1/8 level of
    584 x 784 on CPU: docs/performance_sample.md): globally, and for windows (5: uneven windows of 5 and 4
    tokens over 18 x 14, four SDPA calls). The kernel names are CPU's."""
    from torch.profiler import ProfilerActivity, profile

    from hpcdiff.models.unet import AttentionBlock

    block = AttentionBlock(64, head_channels=32, window=window).eval()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        block(torch.randn(1, 64, 18, 14))
    counts = {e.key: e.count for e in prof.key_averages() if "scaled_dot_product" in e.key}
    fused = counts.get("aten::_scaled_dot_product_flash_attention_for_cpu")
    assert fused == (4 if window == 5 else 1), counts
    assert not any("math" in k for k in counts), counts
