"""U-Net training-step cost per size preset: parameters, FLOPs and forward / forward+backward time.

    python tools/bench_unet.py [--presets tiny small base] [--device cpu|cuda] [--bf16]
                               [--channels-last] [--repeat 3] [--peak-tflops 989] [--json out.json]
                               [--size 256 | 589x789] [--attention-window none | 16] [--sdpa-backends]
    python tools/bench_unet.py --grid 64 128 256 589x789 [--presets small] [--bf16] [--attention-window 16]

``--grid`` measures instead the cost per pixel of one inference forward pass (eval mode, no grad,
batch 1 unless ``--batch``) at each grid size, with and without the attention blocks (replaced by the
identity; ``--skip-bare``: not), so the attention share is their difference, and the forward FLOPs
per pixel (counted on the meta device: no time, no memory); with ``--attention-block``, one attention
block of the deepest attention level alone at each size's token grid there, windowed and global.
``--clock cpu`` times this process's CPU time instead of wall time. ``--attention-window`` overrides
the preset's ``attention_window`` (``none``: global attention). ``--sdpa-backends`` runs one forward
pass of the attention blocks restricted to each ``scaled_dot_product_attention`` backend in turn
(``torch.nn.attention.sdpa_kernel``) and reports which accept the shapes, and which kernels the
unrestricted call runs (``torch.profiler`` op names).

One step is the real one: the hybrid loss of a learned-variance model (3 target, 6 condition channels)
on a batch (``SIZES``: tiny 8 x 32², small 8 x 64², base 1 x 256²; ``--batch``/``--size`` override), in
train mode (dropout on), backward included. FLOPs are counted by ``torch.utils.flop_counter`` (matmul,
convolution and attention; 1 multiply-add = 2 FLOPs). Times are the best of ``--repeat`` steps after
one warm-up step (the minimum: robust on a machine shared with other jobs), and their median; on CUDA
the device is synchronized around each step. ``--peak-tflops`` (the GPU's dense
bf16 peak, e.g. 989 for an H100 SXM) adds the achieved fraction of it.

The process's C heap is set up as every hpcdiff command sets it (:mod:`hpcdiff.allocator`);
``HPCDIFF_MALLOC=system`` keeps glibc's defaults, for comparison. The header line says which.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import resource
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hpcdiff import allocator
from hpcdiff.diffusion import GaussianDiffusion, make_betas
from hpcdiff.models import UNET_PRESETS, UNet
from hpcdiff.models.unet import AttentionBlock, grid_padding

SIZES = {"tiny": (8, 32), "small": (8, 64), "base": (1, 256)}  # preset -> (batch, H = W)
TARGET_CHANNELS, COND_CHANNELS = 3, 6


def grid_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"589x789"`` -> (589, 789)."""
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def window_arg(text: str) -> int | None:
    """``--attention-window``: ``none`` (global attention) or tokens per window side."""
    return None if text.lower() == "none" else int(text)


def build_model(preset: str, args: argparse.Namespace) -> UNet:
    """The preset's U-Net (learned variance) with ``--attention-window`` applied, seeded."""
    config = UNET_PRESETS[preset]
    if args.attention_window != "preset":
        config = dataclasses.replace(config, attention_window=window_arg(args.attention_window))
    torch.manual_seed(0)
    return UNet(target_channels=TARGET_CHANNELS, cond_channels=COND_CHANNELS, learn_sigma=True,
                **dataclasses.asdict(config))


def without_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`AttentionBlock` replaced by the identity."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, AttentionBlock):
                setattr(module, name, nn.Identity())
    return model


def make_batch(batch: int, size: tuple[int, int], *, device: torch.device,
               channels_last: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def field(channels: int) -> torch.Tensor:
        return torch.randn(batch, channels, *size, generator=gen).to(device, memory_format=fmt)

    return {
        "x0": field(TARGET_CHANNELS),
        "noise": field(TARGET_CHANNELS),
        "cond": field(COND_CHANNELS),
        "t": torch.randint(1000, (batch,), generator=gen).to(device),
        "doy": (torch.rand(batch, generator=gen) * 365 + 1).to(device),
    }


def step(model: torch.nn.Module, diffusion: GaussianDiffusion, batch: dict[str, torch.Tensor], *,
         bf16: bool, backward: bool) -> None:
    """One training step's forward (and backward) pass."""
    device_type = batch["x0"].device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast, contextlib.nullcontext() if backward else torch.no_grad():
        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(x, t, batch["cond"], batch["doy"]).float()

        loss = diffusion.training_losses(model_fn, batch["x0"], batch["t"],
                                         noise=batch["noise"])["loss"].mean()
    if backward:
        model.zero_grad(set_to_none=True)
        loss.backward()


def count_flops(model: torch.nn.Module, diffusion: GaussianDiffusion, batch: dict[str, torch.Tensor], *,
                bf16: bool) -> tuple[int, int]:
    """FLOPs of the forward pass and of forward + backward."""
    with FlopCounterMode(display=False) as fwd:
        step(model, diffusion, batch, bf16=bf16, backward=False)
    with FlopCounterMode(display=False) as both:
        step(model, diffusion, batch, bf16=bf16, backward=True)
    return fwd.get_total_flops(), both.get_total_flops()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_ms(fn, *, repeat: int, device: torch.device, clock: str = "wall") -> tuple[float, float]:
    """Best and median time of ``fn()`` in ms, after one warm-up call. ``clock="cpu"`` counts this
    process's CPU time instead of wall time (with more than one thread it also counts threads spinning
    at barriers)."""
    (best, median), = time_interleaved([fn], repeat=repeat, device=device, clock=clock)
    return best, median


def time_interleaved(fns: list, *, repeat: int, device: torch.device, clock: str = "wall",
                     warmup: bool = True) -> list[tuple[float, float]]:
    """Best and median time in ms of each of ``fns``, called in turn ``repeat`` times after one warm-up
    call each (unless not ``warmup``): on a shared machine each function meets the same spells of
    load."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    now = CLOCKS[clock]
    for fn in fns if warmup else []:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, record in zip(fns, times, strict=True):
            sync()
            start = now()
            fn()
            sync()
            record.append((now() - start) * 1e3)
    return [(min(record), statistics.median(record)) for record in times]


def forward_fn(model: nn.Module, batch: dict[str, torch.Tensor], *, bf16: bool):
    """One inference forward pass of the bare network (no grad), as a sampler step calls it."""
    device_type = batch["x0"].device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def run() -> None:
        with autocast, torch.no_grad():
            model(batch["x0"], batch["t"], batch["cond"], batch["doy"])

    return run


def forward_flops(model: nn.Module, batch_size: int, size: tuple[int, int]) -> int:
    """FLOPs of one forward pass, counted on the meta device."""
    meta = copy.deepcopy(model).to("meta")
    batch = {k: v.to("meta") for k, v in make_batch(batch_size, size, device=torch.device("cpu"),
                                                     channels_last=False).items()}
    with FlopCounterMode(display=False) as counter:
        forward_fn(meta, batch, bf16=False)()
    return counter.get_total_flops()


def bench_grid(preset: str, size: tuple[int, int], args: argparse.Namespace, device: torch.device) -> dict:
    """Cost per pixel of one forward pass at ``size``, with and without the attention blocks."""
    batch_size = args.batch or 1
    model = build_model(preset, args).to(device).eval()
    batch = make_batch(batch_size, size, device=device, channels_last=False)
    pixels = batch_size * size[0] * size[1]
    flops = forward_flops(model, batch_size, size)
    if args.flops_only:
        return {"preset": preset, "size": f"{size[0]}x{size[1]}", "batch": batch_size,
                "attention_window": model.attention_window, "fwd_ms": math.nan, "fwd_median_ms": math.nan,
                "us_per_pixel": math.nan, "no_attention_ms": math.nan, "attention_share": math.nan,
                "fwd_kflop_per_pixel": flops / pixels / 1e3}
    fns = [forward_fn(model, batch, bf16=args.bf16)]
    if not args.skip_bare:
        fns.append(forward_fn(without_attention(model), batch, bf16=args.bf16))
    times = time_interleaved(fns, repeat=args.repeat, device=device, clock=args.clock,
                             warmup=not args.no_warmup)
    (ms, median_ms), bare_ms = times[0], (times[1][0] if len(times) > 1 else math.nan)
    return {"preset": preset, "size": f"{size[0]}x{size[1]}", "batch": batch_size, "bf16": args.bf16,
            "clock": args.clock, "threads": torch.get_num_threads(),
            "attention_window": model.attention_window, "fwd_ms": ms, "fwd_median_ms": median_ms,
            "us_per_pixel": ms * 1e3 / pixels, "no_attention_ms": bare_ms,
            "attention_share": math.nan if math.isnan(bare_ms) else max(0.0, 1 - bare_ms / ms),
            "fwd_kflop_per_pixel": flops / pixels / 1e3}


def bench_attention_block(preset: str, size: tuple[int, int], args: argparse.Namespace,
                          device: torch.device) -> dict:
    """One attention block of the preset's deepest attention level alone, on the token grid a ``size``
    input reaches there, with and without the window: the part of the forward pass the window changes."""
    model = build_model(preset, args)
    config = UNET_PRESETS[preset]
    ds = max(config.attention_ds)
    padded = [side + sum(grid_padding(side, config.grid_multiple)) for side in size]
    tokens = (padded[0] // ds, padded[1] // ds)
    channels = config.model_channels * config.channel_mult[int(math.log2(ds))]
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext())
    x = torch.randn(args.batch or 1, channels, *tokens, generator=torch.Generator().manual_seed(0)).to(device)
    fns = []
    for window in (model.attention_window, None):
        block = AttentionBlock(channels, head_channels=config.head_channels, window=window).to(device).eval()

        def run(block: AttentionBlock = block) -> None:
            with autocast, torch.no_grad():
                block(x)

        fns.append(run)
    (ms, _), (global_ms, _) = time_interleaved(fns, repeat=args.repeat, device=device, clock=args.clock)
    return {"preset": preset, "size": f"{size[0]}x{size[1]}", "tokens": f"{tokens[0]}x{tokens[1]}",
            "channels": channels, "bf16": args.bf16, "attention_window": model.attention_window,
            "block_ms": ms, "global_block_ms": global_ms}


def sdpa_backends(model: nn.Module, batch: dict[str, torch.Tensor], *, bf16: bool) -> dict:
    """Which ``scaled_dot_product_attention`` backends accept the network's attention calls (one forward
    pass restricted to each), and the SDPA ops the unrestricted forward pass runs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    accepted = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH):
        try:
            with sdpa_kernel([backend]):
                forward_fn(model, batch, bf16=bf16)()
            accepted[backend.name] = "ok"
        except RuntimeError as error:
            accepted[backend.name] = "refused: " + str(error).strip().splitlines()[0][:100]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if batch["x0"].is_cuda else [])
    with profile(activities=activities) as prof:
        forward_fn(model, batch, bf16=bf16)()
    words = ("scaled_dot_product", "flash", "fmha", "efficient", "cudnn_attention")
    ops = sorted({e.key for e in prof.key_averages() if any(word in e.key.lower() for word in words)})
    return {"accepted": accepted, "ops": ops}


def bench(preset: str, args: argparse.Namespace, device: torch.device) -> dict:
    batch_size, side = SIZES[preset]
    batch_size, size = args.batch or batch_size, args.size or (side, side)
    model = build_model(preset, args)
    fmt = torch.channels_last if args.channels_last else torch.preserve_format
    model = model.to(device, memory_format=fmt)
    model.train()
    diffusion = GaussianDiffusion(make_betas("cosine", 1000), var_type="learned_range", loss_type="hybrid")
    batch = make_batch(batch_size, size, device=device, channels_last=args.channels_last)
    backends = sdpa_backends(model.eval(), batch, bf16=args.bf16) if args.sdpa_backends else None
    model.train()
    fwd_flops, step_flops = count_flops(model, diffusion, batch, bf16=args.bf16)
    model.eval()
    reset_peak_memory(device)
    infer_ms, _ = time_ms(forward_fn(model, batch, bf16=args.bf16), repeat=args.repeat, device=device)
    infer_peak_mb = peak_memory_mb(device)
    model.train()
    fwd_ms, _ = time_ms(lambda: step(model, diffusion, batch, bf16=args.bf16, backward=False),
                        repeat=args.repeat, device=device)
    reset_peak_memory(device)
    step_ms, step_median_ms = time_ms(lambda: step(model, diffusion, batch, bf16=args.bf16, backward=True),
                                      repeat=args.repeat, device=device)
    tflops = step_flops / (step_ms * 1e-3) / 1e12
    return {"preset": preset, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "input": f"{batch_size}x{TARGET_CHANNELS}+{COND_CHANNELS}x{size[0]}x{size[1]}",
            "attention_window": model.attention_window, "sdpa": backends,
            "fwd_gflop": fwd_flops / 1e9, "step_gflop": step_flops / 1e9, "fwd_ms": fwd_ms,
            "infer_ms": infer_ms, "infer_samples_per_s": batch_size / (infer_ms * 1e-3),
            "infer_peak_mem_mb": infer_peak_mb,
            "step_ms": step_ms, "step_median_ms": step_median_ms,
            "samples_per_s": batch_size / (step_ms * 1e-3), "achieved_tflops": tflops,
            "peak_fraction": tflops / args.peak_tflops if args.peak_tflops else None,
            "peak_mem_mb": peak_memory_mb(device)}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory since the last reset on CUDA; the process's peak RSS on CPU (which
    never resets)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_steps(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """The training-step table, one row per preset (and the SDPA backends with ``--sdpa-backends``)."""
    print("| preset | window | params (M) | batch x (Ct+Cc) x H x W | fwd GFLOP | fwd+bwd GFLOP "
          "| inference fwd ms | fwd samples/s | fwd peak MB | fwd+bwd ms (median) | train samples/s "
          "| achieved TFLOP/s | of peak | step peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets:
        r = bench(preset, args, device)
        rows.append(r)
        frac = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}%"
        print(f"| {preset} | {r['attention_window']} | {r['params_m']:.2f} | {r['input']} "
              f"| {r['fwd_gflop']:.1f} | {r['step_gflop']:.1f} | {r['infer_ms']:.0f} "
              f"| {r['infer_samples_per_s']:.3f} "
              f"| {r['infer_peak_mem_mb']:.0f} | {r['step_ms']:.0f} ({r['step_median_ms']:.0f}) "
              f"| {r['samples_per_s']:.3f} | {r['achieved_tflops']:.3f} | {frac} | {r['peak_mem_mb']:.0f} |",
              flush=True)
        if r["sdpa"]:
            print(f"  sdpa backends accepted: {r['sdpa']['accepted']}\n  sdpa ops run: {r['sdpa']['ops']}",
                  flush=True)
    return rows


def print_grid(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """The cost-per-pixel table, one row per preset and grid size."""
    print("| preset | window | batch | H x W | fwd ms (median) | us/pixel | without attention ms "
          "| attention share | fwd kFLOP/pixel |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets:
        for size in args.grid:
            r = bench_grid(preset, grid_size(size), args, device)
            rows.append(r)
            print(f"| {preset} | {r['attention_window']} | {r['batch']} | {r['size']} "
                  f"| {r['fwd_ms']:.1f} ({r['fwd_median_ms']:.1f}) | {r['us_per_pixel']:.2f} "
                  f"| {r['no_attention_ms']:.1f} | {100 * r['attention_share']:.0f}% "
                  f"| {r['fwd_kflop_per_pixel']:.0f} |", flush=True)
    return rows


def print_attention_blocks(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One attention block alone per preset and grid size, windowed and global."""
    print("| preset | H x W | tokens at the deepest attention level | channels | window | block ms "
          "| global block ms |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets:
        for size in args.grid:
            r = bench_attention_block(preset, grid_size(size), args, device)
            rows.append(r)
            print(f"| {preset} | {r['size']} | {r['tokens']} | {r['channels']} | {r['attention_window']} "
                  f"| {r['block_ms']:.2f} | {r['global_block_ms']:.2f} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(UNET_PRESETS), choices=list(UNET_PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=grid_size, default=None, help="H = W, or HxW")
    parser.add_argument("--grid", nargs="+", default=None, help="cost per pixel at these sizes (N or HxW)")
    parser.add_argument("--attention-window", default="preset", help="none, or tokens per window side")
    parser.add_argument("--sdpa-backends", action="store_true")
    parser.add_argument("--skip-bare", action="store_true", help="--grid: no timing without attention")
    parser.add_argument("--no-warmup", action="store_true", help="--grid: no warm-up call (slow runs)")
    parser.add_argument("--flops-only", action="store_true", help="--grid: count FLOPs, time nothing")
    parser.add_argument("--attention-block", action="store_true",
                        help="--grid: time one attention block alone, windowed and global")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="--grid: wall time, or this process's CPU time (one thread, shared machines)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    heap = allocator.tune_malloc()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"bf16 autocast {args.bf16}, channels_last {args.channels_last}, clock {args.clock}, "
          f"malloc {heap}\n")
    print(f"uptime: {os.getloadavg()}\n")
    if args.grid:
        rows = print_attention_blocks(args, device) if args.attention_block else print_grid(args, device)
    else:
        rows = print_steps(args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
