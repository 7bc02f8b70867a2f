"""Pixel-space against latent-space diffusion: training and sampling throughput and peak memory at equal
batch and steps, on the demo grid and the DANRA grid.

    python tools/bench_latent.py [--grids 64 589x789] [--autoencoders small small8] [--threads 2]
                                 [--train-batch 16] [--sample-batch 8] [--steps 25] [--repeat 5]
                                 [--precision fp32|bf16] [--json out.json]
    python tools/bench_latent.py --child '{...}'   # one point (internal)

Every point runs in a fresh process with ``--threads`` threads. The U-Net is the ``small`` preset of the
demo job (learned variance, v prediction) with 3 targets and 6 conditions in pixel space; in latent
space it is the same U-Net on the autoencoder's latent grid (``ceil(H / f) x ceil(W / f)``) with the
autoencoder's latent channels as targets and the same 6 conditions there.

- *train*: one optimizer step as :mod:`hpcdiff.train.loop` runs it (hybrid loss through the denoiser,
  backward, AdamW), median (and min) of ``--repeat`` steps after one warm-up step; samples/s = batch /
  step time. Latent training reads latents from the shards: the encoder is not in the step.
- *sample*: the U-Net forward pass without gradients at ``--sample-batch`` (median of ``--repeat``),
  and for latents the decoder once per sample; samples/s per member = batch / (``--steps`` x forward
  + decode).
- *autoencoder*: one training step of the autoencoder itself at the training batch (reconstruction + KL,
  backward, AdamW), the one-off cost latent diffusion adds.
- *peak memory*: what the warm-up and the timed steps added to the process's resident memory at their
  peak (``/proc/self/status`` VmHWM after ``clear_refs``), with the C heap set up as every hpcdiff
  command sets it (:mod:`hpcdiff.allocator`: freed blocks stay with the process, so this is what the
  command's process holds, not the live bytes ``tools/bench_memory.py`` measures).

Grids are whole fields; on the DANRA grid the batches are ``--danra-batch`` (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGETS, CONDITIONS = 3, 6


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _timed(fn: Any, repeat: int) -> tuple[list[float], int]:
    """``repeat`` timings of ``fn()`` after one warm-up call, and the bytes all calls added at their peak."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times, (_status_kib("VmHWM") - before) * 1024


def measure(point: dict[str, Any]) -> dict[str, Any]:
    import torch

    from hpcdiff.config import to_dict
    from hpcdiff.models import autoencoder_config, build_autoencoder, preset_config
    from hpcdiff.models.autoencoder import latent_shape
    from hpcdiff.runspec import DiffusionSpec, RunSpec

    torch.manual_seed(0)
    shape = tuple(point["shape"])
    if point["space"] == "autoencoder":
        return measure_autoencoder(point)
    channels, grid, decoder = TARGETS, shape, None
    if point["space"] == "latent":
        config = autoencoder_config(point["autoencoder"])
        channels, grid = config.latent_channels, latent_shape(shape, config.factor)
        decoder = build_autoencoder(config, target_channels=TARGETS).eval()
    spec = RunSpec(backbone="unet", preset="small", targets=[f"y{i}" for i in range(channels)],
                   conditions=[f"c{i}" for i in range(CONDITIONS)], image_shape=grid,
                   diffusion=DiffusionSpec(), prediction="v", normalization="bench",
                   architecture=to_dict(preset_config("unet", "small")))
    model = spec.build_model()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[point["precision"]]
    batch, repeat = point["batch"], point["repeat"]
    cond = torch.randn(batch, CONDITIONS, *grid)
    doy = torch.full((batch,), 100.0)
    out = {**point, "grid": list(grid), "parameters": sum(p.numel() for p in model.parameters())}
    if point["mode"] == "train":
        model = model.to(dtype).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        diffusion = spec.build_diffusion()
        x0 = torch.randn(batch, channels, *grid)

        def step() -> None:
            t = torch.randint(diffusion.num_steps, (batch,))
            losses = diffusion.training_losses(lambda x_t, tt: model(x_t, tt, cond, doy), x0, t,
                                               mse_weight=model.mse_weight(t))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].mean().backward()
            optimizer.step()

        times, peak = _timed(step, repeat)
        out.update(step_s=statistics.median(times), step_min_s=min(times), peak_bytes=peak,
                   samples_per_s=batch / statistics.median(times))
        return out
    model = model.eval()
    model.autocast = None if dtype == torch.float32 else dtype
    x = torch.randn(batch, channels, *grid)
    t = torch.full((batch,), 500, dtype=torch.long)

    def forward() -> None:
        with torch.no_grad():
            model(x, t, cond, doy)

    times, peak = _timed(forward, repeat)
    decode_s = 0.0
    if decoder is not None:
        z = torch.randn(batch, channels, *grid)

        def decode() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                decoder.decode(z, shape)

        decode_times, decode_peak = _timed(decode, repeat)
        decode_s, peak = statistics.median(decode_times), max(peak, decode_peak)
    forward_s = statistics.median(times)
    total = point["steps"] * forward_s + decode_s
    out.update(forward_s=forward_s, forward_min_s=min(times), decode_s=decode_s, member_s=total,
               peak_bytes=peak, samples_per_s=batch / total)
    return out


def measure_autoencoder(point: dict[str, Any]) -> dict[str, Any]:
    """One training step of the autoencoder itself (reconstruction + KL, backward, AdamW): the one-off cost
    that latent diffusion adds."""
    import torch

    from hpcdiff.models import autoencoder_config, build_autoencoder
    from hpcdiff.models.autoencoder import autoencoder_losses

    shape, batch = tuple(point["shape"]), point["batch"]
    model = build_autoencoder(autoencoder_config(point["autoencoder"]), target_channels=TARGETS).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, TARGETS, *shape)

    def step() -> None:
        mean, _ = model.encode(x)
        recon, mean, logvar = model(x, torch.randn_like(mean))
        losses = autoencoder_losses(recon, x, mean, logvar, kl_weight=1e-6)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].mean().backward()
        optimizer.step()

    times, peak = _timed(step, point["repeat"])
    return {**point, "grid": list(shape), "parameters": sum(p.numel() for p in model.parameters()),
            "step_s": statistics.median(times), "step_min_s": min(times), "peak_bytes": peak,
            "samples_per_s": batch / statistics.median(times)}


def run_point(point: dict[str, Any], *, threads: int, timeout_s: float = 1200) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(point)], capture_output=True,
                          text=True, timeout=timeout_s, check=False, env=env)
    if proc.returncode != 0:
        return {**point, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_grid(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def format_row(row: dict[str, Any], pixel: dict[str, Any] | None) -> str:
    space = "pixel" if row["space"] == "pixel" else f"{row['space']} ({row['autoencoder']})"
    head = (f"| {row['mode']} | {row['shape'][0]} x {row['shape'][1]} | {space} | "
            f"{row.get('grid', ['?', '?'])[0]} x {row.get('grid', ['?', '?'])[1]} | {row['batch']} |")
    if "error" in row:
        return f"{head} failed: {row['error']} | | | |"
    speed = ("" if pixel is None or "error" in pixel
             else f"{row['samples_per_s'] / pixel['samples_per_s']:.1f}x")
    time_s = row["step_s"] if row["mode"] == "train" else row["member_s"]
    return (f"{head} {time_s:.3f} | {row['samples_per_s']:.2f} | {speed} | "
            f"{row['peak_bytes'] / 2**20:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help="one point as JSON (internal)")
    parser.add_argument("--grids", nargs="+", default=["64", "589x789"])
    parser.add_argument("--autoencoders", nargs="+", default=["small", "small8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--sample-batch", type=int, default=8)
    parser.add_argument("--danra-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--modes", nargs="+", default=["train", "sample"])
    parser.add_argument("--no-autoencoder-steps", dest="autoencoder_steps", action="store_false",
                        help="skip the autoencoder's own training step (measured by default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        from hpcdiff import allocator

        allocator.tune_malloc()  # as every hpcdiff command does
        print(json.dumps(measure(json.loads(args.child))))
        return
    print("| mode | grid | space | network grid | batch | s per step (train) or per member batch (sample) "
          "| samples/s | vs pixel | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for mode in args.modes:
        for grid in map(parse_grid, args.grids):
            large = grid[0] * grid[1] > 128 * 128
            small = args.train_batch if mode == "train" else args.sample_batch
            batch = args.danra_batch if large else small
            base = {"mode": mode, "shape": list(grid), "batch": batch, "precision": args.precision,
                    "repeat": args.repeat if not large else max(2, args.repeat // 2), "steps": args.steps}
            pixel = run_point({**base, "space": "pixel"}, threads=args.threads)
            rows.append(pixel)
            print(format_row(pixel, None), flush=True)
            for name in args.autoencoders:
                row = run_point({**base, "space": "latent", "autoencoder": name}, threads=args.threads)
                rows.append(row)
                print(format_row(row, pixel), flush=True)
            if mode == "train" and args.autoencoder_steps:
                for name in args.autoencoders:
                    point = {**base, "space": "autoencoder", "autoencoder": name}
                    row = run_point(point, threads=args.threads)
                    rows.append(row)
                    print(format_row(row, pixel), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
