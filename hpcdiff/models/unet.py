"""An ADM-style conditional U-Net (Dhariwal & Nichol 2021; improved-diffusion's ``UNetModel``).

Residual blocks with GroupNorm, SiLU and a scale-shift time embedding, self-attention at chosen
downsampling factors, dropout, zero-initialized output layers. Conditions (regridded coarse fields and
static geography, ``[N, Cc, H, W]``) are concatenated to the noisy target; the day of year enters as
sin/cos harmonics added to the time embedding. With a learned variance the output has ``2 · Ct``
channels: ``eps`` first, then the variance interpolation ``v``.

Optionally a large-scale **context** ``[N, Cx, Hx, Wx]`` (normalized ERA5 fields over a box much larger
than a patch or tile, on its own grid, never cropped) goes through a :class:`ContextEncoder` and enters
as a global embedding (pooled, added to the time embedding), as per-pixel features (the encoder output
sampled at each pixel's position in the box, given by the last two ``cond`` channels, and concatenated to
the network input), or both.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

DAYS_PER_YEAR = 365.25
CONTEXT_INJECTS = ("embedding", "features", "both")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of one size preset. ``attention_ds``: downsampling factors (1, 2, 4, ...) at which
    blocks get self-attention; ``head_channels``: channels per attention head; ``attention_window``:
    tokens per window side of windowed self-attention (:func:`window_segments`), ``None`` for global
    attention. A window at least as large as a level's token grid is global attention there."""

    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_ds: tuple[int, ...]
    head_channels: int
    dropout: float
    attention_window: int | None = None

    @property
    def grid_multiple(self) -> int:
        """What the network pads ``H`` and ``W`` to multiples of: each level but the last halves the
        grid."""
        return 2 ** (len(self.channel_mult) - 1)


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) steps ``t [N]``: ``[N, dim]`` float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def doy_features(doy: torch.Tensor, harmonics: int) -> torch.Tensor:
    """``sin, cos(2π k doy / 365.25)`` for ``k = 1 .. harmonics`` of day of year ``doy [N]`` (1..366):
    ``[N, 2 · harmonics]`` float32."""
    k = torch.arange(1, harmonics + 1, device=doy.device, dtype=torch.float32)
    angle = 2 * math.pi * doy.float()[:, None] * k[None] / DAYS_PER_YEAR
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or fewer for narrow layers (the largest divisor of 32 that fits)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters, so a residual branch starts as the identity (ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``x + f(x, emb)``: GN-SiLU-conv, then GN with ``(1 + scale, shift)`` from the embedding,
    SiLU-dropout-conv (zero-initialized). ``[N, Cin, H, W] -> [N, Cout, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int, *, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_channels), nn.SiLU(),
                                       nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = group_norm(out_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[..., None, None].to(h.dtype).chunk(2, dim=1)
        h = self.out_layers(self.out_norm(h) * (1 + scale) + shift)
        return self.skip(x) + h


def window_segments(size: int, window: int) -> list[tuple[int, int, int]]:
    """How windowed attention splits one side of ``size`` tokens into ``ceil(size / window)`` windows as
    equal as possible (``a`` or ``a + 1`` tokens, never more than ``window``; no padding tokens): the
    larger windows first, as at most two runs ``(start, count, length)`` of ``count`` windows of
    ``length`` tokens each, so every run is one reshape."""
    assert window >= 1, f"attention window {window} must be at least 1 token"
    n = -(-size // window)
    a, r = divmod(size, n)
    runs = [(0, r, a + 1), (r * (a + 1), n - r, a)]
    return [run for run in runs if run[1]]


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H · W`` positions, residual. ``[N, C, H, W]`` in and out.

    With ``window`` the token grid is split into windows of at most ``window x window`` tokens
    (:func:`window_segments` per axis) and each token attends within its window: cost linear in
    ``H · W`` instead of quadratic. The windows fall into at most four rectangles of equal windows, each
    one batched ``scaled_dot_product_attention`` call. A window covering the grid is global attention,
    the same computation as ``window=None``."""

    def __init__(self, channels: int, *, head_channels: int, window: int | None = None) -> None:
        super().__init__()
        assert channels % head_channels == 0, \
            f"{channels} channels do not split into heads of {head_channels}"
        self.heads = channels // head_channels
        self.window = window
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        qkv = self.qkv(self.norm(x))
        window = self.window
        if window is None or (h <= window and w <= window):
            out = self._attend(qkv, (1, h), (1, w))
        else:
            rows = [torch.cat([self._attend(qkv[..., r0:r0 + nr * lr, c0:c0 + nc * lc], (nr, lr), (nc, lc))
                               for c0, nc, lc in window_segments(w, window)], dim=-1)
                    for r0, nr, lr in window_segments(h, window)]
            out = torch.cat(rows, dim=-2)
        return x + self.proj(out)

    def _attend(self, qkv: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        """Attention within each of the ``rows[0] x cols[0]`` equal windows of ``rows[1] x cols[1]``
        tokens that tile ``qkv [N, 3C, H, W]``: ``[N, C, H, W]``."""
        (nr, lr), (nc, lc) = rows, cols
        n, c = qkv.shape[0], qkv.shape[1] // 3
        d = c // self.heads
        # [3, N · windows, heads, tokens per window, d], contiguous: with transposed views
        # scaled_dot_product_attention takes its unfused fallback (on CPU 6x slower at the small U-Net's
        # 1/8 level of 584 x 784, and more memory)
        qkv = qkv.reshape(n, 3, self.heads, d, nr, lr, nc, lc).permute(1, 0, 4, 6, 2, 5, 7, 3)
        q, k, v = qkv.reshape(3, n * nr * nc, self.heads, lr * lc, d).contiguous().unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.reshape(n, nr, nc, self.heads, lr, lc, d).permute(0, 3, 6, 1, 4, 2, 5)
        return out.reshape(n, c, nr * lr, nc * lc)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A sequence of layers; residual blocks also get the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def grid_padding(size: int, factor: int) -> tuple[int, int]:
    """Rows (or columns) added before and after a side of ``size`` to reach the next multiple of
    ``factor``: split evenly, the odd one after."""
    extra = -size % factor
    return extra // 2, extra - extra // 2


def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """``x [N, C, H, W]`` padded to sides that are multiples of ``factor`` by reflection (mirroring the
    rows and columns next to the edge, not repeating the edge; replication where a side is too short to
    mirror), and the ``(rows, columns)`` slices that crop the padded grid back to ``H x W``."""
    h, w = x.shape[-2:]
    (top, bottom), (left, right) = grid_padding(h, factor), grid_padding(w, factor)
    crop = (slice(top, top + h), slice(left, left + w))
    if not (top or bottom or left or right):
        return x, crop
    mode = "reflect" if max(top, bottom) < h and max(left, right) < w else "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode), crop


class DilatedBlock(nn.Module):
    """``x + conv(SiLU(x))`` with a dilated 3x3 conv, replicate-padded so the grid keeps its size:
    ``[N, C, Hx, Wx]`` in and out."""

    def __init__(self, channels: int, *, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation,
                              padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.silu(x))


class ContextEncoder(nn.Module):
    """Features of the large-scale context: ``[N, Cx, Hx, Wx] -> [N, width, Hx, Wx]`` for any ``Hx, Wx >= 1``.

    A 3x3 conv to ``width`` channels, then residual SiLU-conv blocks with dilations 1, 2, 4, 8: a feature
    sees :attr:`receptive_field` x :attr:`receptive_field` = 33 x 33 context cells (16 each way: an 8°
    window at 0.25°). Convolutions
    pad by replicating the edge (the fields continue past the box's edge, rather than falling to the
    normalized mean 0). No GroupNorm: its statistics over the whole box would make every feature depend on
    every context cell, and the inputs are normalized already."""

    def __init__(self, in_channels: int, width: int, *, dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, padding_mode="replicate")
        self.blocks = nn.Sequential(*(DilatedBlock(width, dilation=d) for d in dilations))
        self.receptive_field = 3 + 2 * sum(dilations)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(context))


def pooled(features: torch.Tensor) -> torch.Tensor:
    """Mean and max over the grid of ``features [N, C, Hx, Wx]``, concatenated: ``[N, 2C]``."""
    return torch.cat([features.mean(dim=(-2, -1)), features.amax(dim=(-2, -1))], dim=1)


def sample_at(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``features [N, C, Hx, Wx]`` interpolated bilinearly at ``coords [N, 2, H, W]`` (row ``y`` then column
    ``x``, each in [-1, 1]: -1 the first row / column of the context array, +1 the last; beyond, the edge
    value): ``[N, C, H, W]``, float32 (half-precision interpolation would be off by a fraction of a cell)."""
    grid = coords.flip(1).permute(0, 2, 3, 1).float()  # grid_sample's last dim is (x, y)
    return F.grid_sample(features.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)


class UNet(nn.Module):
    """Conditional ε-model ``(x_t [N, Ct, H, W], t [N], cond [N, Cc, H, W], doy [N], context)`` ->
    ``[N, Ct or 2·Ct, H, W]``, for any ``H x W``: the network input (``x_t`` and the conditions,
    statics included) is padded by reflection to sides that are multiples of
    ``2 ** (len(channel_mult) - 1)`` (:func:`pad_to_multiple`; evenly on both sides) and the output is
    cropped back, so the padding never reaches the loss or the samples.

    ``context_channels > 0`` adds the large-scale context ``[N, Cx, Hx, Wx]`` (any ``Hx x Wx``), encoded by
    a :class:`ContextEncoder` of ``context_width`` channels and injected as ``context_inject`` says:
    ``"embedding"`` (mean and max pooled, an MLP with a zero-initialized last layer, added to the time
    embedding), ``"features"`` (sampled at each pixel's position in the box, ``cond[:, -2]`` the row and
    ``cond[:, -1]`` the column in [-1, 1], and concatenated to ``x_t`` and ``cond`` before the padding and
    the first conv) or ``"both"``. With ``context_channels = 0`` the network is the one without context:
    same parameters, same ``state_dict`` keys, same outputs."""

    def __init__(self, *, target_channels: int, cond_channels: int, learn_sigma: bool, model_channels: int,
                 channel_mult: tuple[int, ...], num_res_blocks: int, attention_ds: tuple[int, ...],
                 head_channels: int, dropout: float, attention_window: int | None = None,
                 doy_harmonics: int = 2, context_channels: int = 0, context_inject: str = "features",
                 context_width: int = 32) -> None:
        super().__init__()
        self._set_context(context_channels, inject=context_inject, cond_channels=cond_channels)
        self.target_channels, self.cond_channels = target_channels, cond_channels
        self.out_channels = target_channels * (2 if learn_sigma else 1)
        self.model_channels, self.levels = model_channels, len(channel_mult)
        self.doy_harmonics, self.attention_window = doy_harmonics, attention_window
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.doy_embed = nn.Sequential(nn.Linear(2 * doy_harmonics, emb_dim), nn.SiLU(),
                                       nn.Linear(emb_dim, emb_dim))
        block = {"emb_dim": emb_dim, "dropout": dropout}
        attn = {"attention_ds": attention_ds,
                "block": {"head_channels": head_channels, "window": attention_window}}
        in_channels = target_channels + cond_channels + (context_width if self.context_features else 0)
        skips = self._build_encoder(in_channels, channel_mult=channel_mult,
                                    num_res_blocks=num_res_blocks, block=block, attn=attn)
        ch = model_channels * channel_mult[-1]
        self.middle = EmbedSequential(ResBlock(ch, ch, **block),
                                      AttentionBlock(ch, **attn["block"]),
                                      ResBlock(ch, ch, **block))
        ch = self._build_decoder(skips, channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                                 block=block, attn=attn)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, self.out_channels, 3, padding=1)))
        # built last, so in embedding mode the layers above draw the initial weights they draw without context
        if context_channels:
            self.context_encoder = ContextEncoder(context_channels, context_width)
        if self.context_embedding:
            self.context_embed = nn.Sequential(nn.Linear(2 * context_width, emb_dim), nn.SiLU(),
                                               zero_module(nn.Linear(emb_dim, emb_dim)))

    def _set_context(self, channels: int, *, inject: str, cond_channels: int) -> None:
        """Check the context arguments; set which injections the network has."""
        if inject not in CONTEXT_INJECTS:
            raise ValueError(f"unknown context_inject {inject!r}; valid: {', '.join(CONTEXT_INJECTS)}")
        assert channels >= 0, f"context_channels must be >= 0, got {channels}"
        self.context_channels, self.context_inject = channels, inject
        self.context_embedding = channels > 0 and inject in ("embedding", "both")
        self.context_features = channels > 0 and inject in ("features", "both")
        assert not self.context_features or cond_channels >= 2, \
            f"context features need the box coordinates as the last two of {cond_channels} cond channels"

    def _build_encoder(self, in_channels: int, *, channel_mult: tuple[int, ...], num_res_blocks: int,
                       block: dict, attn: dict) -> list[int]:
        """Fill ``self.down``; return the channel count of every skip connection, in order."""
        ch = self.model_channels
        self.down = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, self.model_channels * mult, **block)]
                ch = self.model_channels * mult
                if ds in attn["attention_ds"]:
                    layers.append(AttentionBlock(ch, **attn["block"]))
                self.down.append(EmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(EmbedSequential(Downsample(ch)))
                skips.append(ch)
                ds *= 2
        return skips

    def _build_decoder(self, skips: list[int], *, channel_mult: tuple[int, ...], num_res_blocks: int,
                       block: dict, attn: dict) -> int:
        """Fill ``self.up`` (consuming ``skips``); return the output channel count."""
        ch, ds = self.model_channels * channel_mult[-1], 2 ** (len(channel_mult) - 1)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + skips.pop(), self.model_channels * mult, **block)]
                ch = self.model_channels * mult
                if ds in attn["attention_ds"]:
                    layers.append(AttentionBlock(ch, **attn["block"]))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.up.append(EmbedSequential(*layers))
        assert not skips, "every skip connection is used once"
        return ch

    def _check_inputs(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                      doy: torch.Tensor) -> None:
        n, c, h, w = x_t.shape
        assert c == self.target_channels, f"x_t has {c} channels, the model {self.target_channels}"
        assert cond.shape == (n, self.cond_channels, h, w), \
            f"cond {tuple(cond.shape)}, expected {(n, self.cond_channels, h, w)}"
        assert t.shape == (n,) and doy.shape == (n,), \
            f"t {tuple(t.shape)} and doy {tuple(doy.shape)} must be [{n}]"

    def _check_context(self, context: torch.Tensor | None, cond: torch.Tensor) -> None:
        """``context [N, Cx, Hx, Wx]`` given iff the model has context channels. (That the coordinate
        channels lie in [-1, 1] is the data's guarantee: preprocessing refuses a box that does not contain
        the target grid; checking it here would cost a device sync every call.)"""
        if self.context_channels == 0:
            assert context is None, "context given to a model built without context (context_channels=0)"
            return
        assert context is not None, f"the model needs context [N, {self.context_channels}, Hx, Wx]"
        n = cond.shape[0]
        assert context.ndim == 4 and context.shape[:2] == (n, self.context_channels) \
            and min(context.shape[-2:]) >= 1, \
            f"context {tuple(context.shape)}, expected [{n}, {self.context_channels}, Hx, Wx]"

    def embedding(self, t: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
        """Time plus day-of-year embedding ``[N, 4 · model_channels]``, in the parameters' dtype."""
        dtype = self.time_embed[0].weight.dtype
        return (self.time_embed(timestep_embedding(t, self.model_channels).to(dtype))
                + self.doy_embed(doy_features(doy, self.doy_harmonics).to(dtype)))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, doy: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        assert x_t.ndim == 4, f"x_t must be [N, C, H, W], got {tuple(x_t.shape)}"
        self._check_inputs(x_t, t, cond, doy)
        self._check_context(context, cond)
        emb = self.embedding(t, doy)
        inputs = [x_t, cond.to(x_t.dtype)]
        if context is not None:
            features = self.context_encoder(context.to(x_t.dtype))
            if self.context_embedding:
                emb = emb + self.context_embed(pooled(features))
            if self.context_features:
                inputs.append(sample_at(features, cond[:, -2:]).to(x_t.dtype))
        h, (rows, cols) = pad_to_multiple(torch.cat(inputs, dim=1), 2 ** (self.levels - 1))
        skips = []
        for layers in self.down:
            h = layers(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for layers in self.up:
            h = layers(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)[..., rows, cols]
