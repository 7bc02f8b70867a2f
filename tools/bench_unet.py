"""U-Net training-step cost per size preset: parameters, FLOPs and forward / forward+backward time.

    python tools/bench_unet.py [--presets tiny small base] [--device cpu|cuda] [--bf16]
                               [--channels-last] [--repeat 3] [--peak-tflops 989] [--json out.json]

One step is the real one: the hybrid loss of a learned-variance model (3 target, 6 condition channels)
on a batch (``SIZES``: tiny 8 x 32², small 8 x 64², base 1 x 256²; ``--batch``/``--size`` override), in
train mode (dropout on), backward included. FLOPs are counted by ``torch.utils.flop_counter`` (matmul,
convolution and attention; 1 multiply-add = 2 FLOPs). Times are the best of ``--repeat`` steps after
one warm-up step (the minimum: robust on a machine shared with other jobs), and their median; on CUDA
the device is synchronized around each step. ``--peak-tflops`` (the GPU's dense
bf16 peak, e.g. 989 for an H100 SXM) adds the achieved fraction of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hpcdiff.diffusion import GaussianDiffusion, make_betas
from hpcdiff.models import UNET_PRESETS, build_backbone

SIZES = {"tiny": (8, 32), "small": (8, 64), "base": (1, 256)}  # preset -> (batch, H = W)
TARGET_CHANNELS, COND_CHANNELS = 3, 6


def make_batch(batch: int, size: int, *, device: torch.device,
               channels_last: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def field(channels: int) -> torch.Tensor:
        return torch.randn(batch, channels, size, size, generator=gen).to(device, memory_format=fmt)

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


def time_ms(fn, *, repeat: int, device: torch.device) -> tuple[float, float]:
    """Best and median wall time of ``fn()`` in ms, after one warm-up call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def bench(preset: str, args: argparse.Namespace, device: torch.device) -> dict:
    batch_size, size = SIZES[preset]
    batch_size, size = args.batch or batch_size, args.size or size
    torch.manual_seed(0)
    model = build_backbone("unet", preset, target_channels=TARGET_CHANNELS, cond_channels=COND_CHANNELS,
                           learn_sigma=True)
    fmt = torch.channels_last if args.channels_last else torch.preserve_format
    model = model.to(device, memory_format=fmt)
    model.train()
    diffusion = GaussianDiffusion(make_betas("cosine", 1000), var_type="learned_range", loss_type="hybrid")
    batch = make_batch(batch_size, size, device=device, channels_last=args.channels_last)
    fwd_flops, step_flops = count_flops(model, diffusion, batch, bf16=args.bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fwd_ms, _ = time_ms(lambda: step(model, diffusion, batch, bf16=args.bf16, backward=False),
                        repeat=args.repeat, device=device)
    step_ms, step_median_ms = time_ms(lambda: step(model, diffusion, batch, bf16=args.bf16, backward=True),
                                      repeat=args.repeat, device=device)
    peak_mb = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    tflops = step_flops / (step_ms * 1e-3) / 1e12
    return {"preset": preset, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "input": f"{batch_size}x{TARGET_CHANNELS}+{COND_CHANNELS}x{size}x{size}",
            "fwd_gflop": fwd_flops / 1e9, "step_gflop": step_flops / 1e9, "fwd_ms": fwd_ms,
            "step_ms": step_ms, "step_median_ms": step_median_ms,
            "samples_per_s": batch_size / (step_ms * 1e-3), "achieved_tflops": tflops,
            "peak_fraction": tflops / args.peak_tflops if args.peak_tflops else None, "peak_mem_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(UNET_PRESETS), choices=list(UNET_PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"bf16 autocast {args.bf16}, channels_last {args.channels_last}\n")
    print("| preset | params (M) | batch x (Ct+Cc) x H x W | fwd GFLOP | fwd+bwd GFLOP | fwd ms | fwd+bwd ms "
          "(median) | samples/s | achieved TFLOP/s | of peak | peak mem MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets:
        r = bench(preset, args, device)
        rows.append(r)
        frac = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}%"
        print(f"| {preset} | {r['params_m']:.2f} | {r['input']} | {r['fwd_gflop']:.1f} "
              f"| {r['step_gflop']:.1f} | {r['fwd_ms']:.0f} | {r['step_ms']:.0f} ({r['step_median_ms']:.0f}) "
              f"| {r['samples_per_s']:.2f} "
              f"| {r['achieved_tflops']:.3f} | {frac} | {r['peak_mem_mb']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
