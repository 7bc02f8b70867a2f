"""Peak memory of a training micro-batch and of a sampling batch, measured on CPU, next to the estimate.

    python tools/bench_memory.py [--grids 64,128,256,512,589x789] [--presets tiny,small]
                                 [--precisions fp32,bf16] [--modes train,sample,decode]
                                 [--autoencoder small] [--json out.json]
    python tools/bench_memory.py --child '{"mode": "train", "preset": "small", ...}'   # one point

Every point runs in a fresh process (``--child``), which builds the run spec's network on the CPU,
resets the kernel's peak-resident-memory counter (``/proc/self/clear_refs``), runs the step and reads
``VmHWM - VmRSS before``: the bytes the step added at its peak.

- *train*: one micro-step as :mod:`hpcdiff.train.loop` runs it: the diffusion's training losses
  (hybrid loss, per-pixel weight) through the denoiser, ``backward`` into gradients that exist already
  (accumulation), parameters in the training precision (DeepSpeed casts the module to bf16).
  Compared with :func:`hpcdiff.memory.training_activation_bytes`.
- *sample*: two steps of the ``dpmpp_2m`` sampler on ``batch`` whole fields without gradients, fp32
  weights with bf16 autocast for ``bf16`` (what ``hpcdiff sample`` does). Compared with
  :func:`hpcdiff.memory.sampling_activation_bytes`.
- *decode*: what a latent run's sampling adds outside the U-Net: the autoencoder ``--autoencoder``
  (fp32, no gradients) decoding ``batch`` latents into whole fields, then encoding one field (a date's
  ERA5 baseline). Compared with :func:`hpcdiff.memory.decoding_activation_bytes`.

The static parts of the estimate (weights, optimizer state, DeepSpeed's buffers) are parameter counts
times bytes and are not measured here. Channels are the synthetic recipe's: 3 targets, 9 conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGETS, CONDITIONS = 3, 9
# glibc malloc: blocks of 64 KiB and more are mapped on their own and unmapped when freed (no dynamic
# threshold), and freed heap top is returned at once, so resident memory follows the live bytes.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}


def spec_for(preset: str, shape: tuple[int, int]) -> Any:
    from hpcdiff.config import to_dict
    from hpcdiff.models import preset_config
    from hpcdiff.runspec import DiffusionSpec, RunSpec

    return RunSpec(backbone="unet", preset=preset, targets=[f"y{i}" for i in range(TARGETS)],
                   conditions=[f"c{i}" for i in range(CONDITIONS)], image_shape=tuple(shape),
                   diffusion=DiffusionSpec(), prediction="eps", normalization="bench",
                   architecture=to_dict(preset_config("unet", preset)))  # as a new run records it


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def autoencoder_spec_for(preset: str, shape: tuple[int, int]) -> Any:
    from hpcdiff.config import to_dict
    from hpcdiff.models import autoencoder_config
    from hpcdiff.runspec import AutoencoderSpec

    return AutoencoderSpec(preset=preset, targets=[f"y{i}" for i in range(TARGETS)], image_shape=tuple(shape),
                           architecture=to_dict(autoencoder_config(preset)), normalization="bench",
                           kl_weight=1e-6)


def measure_decode(point: dict[str, Any]) -> tuple[Any, int]:
    """The *decode* point's step and its estimate."""
    import torch

    from hpcdiff import memory

    shape, batch = tuple(point["shape"]), point["batch"]
    spec = autoencoder_spec_for(point["autoencoder"], shape)
    model = spec.build_model().eval()
    z = torch.randn(batch, spec.latent_channels, *spec.latent_shape)
    x = torch.randn(1, TARGETS, *shape)

    def step() -> None:
        with torch.no_grad():
            model.decode(z, shape)
            model.encode(x)

    return step, memory.decoding_activation_bytes(spec, batch=batch)


def measure(point: dict[str, Any]) -> dict[str, Any]:
    """Run one point in this process; bytes the step added at its peak, and the estimate's part."""
    import torch

    from hpcdiff import memory

    torch.manual_seed(0)
    shape, batch, precision = tuple(point["shape"]), point["batch"], point["precision"]
    if point["mode"] == "decode":
        step, estimate = measure_decode(point)
        return {**point, **_peak(step), "estimate_bytes": estimate, "estimate_s": float("nan")}
    spec = spec_for(point["preset"], shape)
    model = spec.build_model()
    x0 = torch.randn(batch, TARGETS, *shape)
    cond = torch.randn(batch, CONDITIONS, *shape)
    doy = torch.full((batch,), 100.0)
    if point["mode"] == "train":
        model = model.to(memory.DTYPES[precision]).train()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        diffusion = spec.build_diffusion()
        weight = torch.rand(1, 1, *shape)
        t = torch.randint(diffusion.num_steps, (batch,))
        noise = torch.randn_like(x0)

        def step() -> None:
            losses = diffusion.training_losses(lambda x_t, tt: model(x_t, tt, cond, doy), x0, t, noise=noise,
                                               weight=weight, mse_weight=model.mse_weight(t))
            losses["loss"].mean().backward()
    else:
        from hpcdiff.diffusion.samplers import sample

        model = model.eval()
        model.autocast = memory.DTYPES[precision] if precision != "fp32" else None
        diffusion = spec.build_diffusion(steps=2)
        generators = [torch.Generator().manual_seed(i) for i in range(batch)]

        def step() -> None:
            sample(model.bind(cond, doy), diffusion, (batch, TARGETS, *shape), sampler="dpmpp_2m",
                   steps=2, generators=generators)
    peak = _peak(step)
    start = time.perf_counter()
    if point["mode"] == "train":
        estimate = memory.training_activation_bytes(spec, batch=batch, shape=shape, precision=precision)
    else:
        estimate = memory.sampling_activation_bytes(spec, batch=batch, precision=precision,
                                                    sampler="dpmpp_2m")
    return {**point, **peak, "estimate_bytes": estimate, "estimate_s": time.perf_counter() - start}


def _peak(step: Any) -> dict[str, Any]:
    """What ``step()`` adds to resident memory at its peak, after one unmeasured call."""
    step()  # once before measuring: lazily initialised kernels, thread pools and code pages
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    return {"measured_bytes": (_status_kib("VmHWM") - before) * 1024, "step_s": seconds}


def run_point(point: dict[str, Any], *, timeout_s: float = 600) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (its own peak counter, no allocator history)."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(point)], capture_output=True,
                          text=True, timeout=timeout_s, check=False, env={**os.environ, **MALLOC_ENV})
    if proc.returncode != 0:
        lines = (proc.stderr.strip().splitlines() or ["?"])
        return {**point, "error": lines[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_grid(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help="one point as JSON (internal)")
    parser.add_argument("--grids", default="64,128,256,512,589x789")
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--modes", default="train,sample")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--autoencoder", default="small", help="the autoencoder preset of --modes decode")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    rows = []
    for mode in args.modes.split(","):
        decode = mode == "decode"  # the autoencoder, in fp32 as sampling runs it
        for preset in [args.autoencoder] if decode else args.presets.split(","):
            for precision in ["fp32"] if decode else args.precisions.split(","):
                for grid in args.grids.split(","):
                    point = {"mode": mode, "preset": preset, "precision": precision, "batch": args.batch,
                             "shape": list(parse_grid(grid)), "autoencoder": preset}
                    row = run_point(point)
                    rows.append(row)
                    print(format_row(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def format_row(row: dict[str, Any]) -> str:
    head = (f"| {row['mode']} | {row['preset']} | {row['precision']} | {row['batch']} | "
            f"{row['shape'][0]} x {row['shape'][1]} |")
    if "error" in row:
        return f"{head} failed: {row['error']} | | | |"
    mib = 2**20
    error = row["estimate_bytes"] / row["measured_bytes"] - 1 if row["measured_bytes"] else float("nan")
    return (f"{head} {row['measured_bytes'] / mib:.0f} | {row['estimate_bytes'] / mib:.0f} | {error:+.0%} | "
            f"{row['estimate_s']:.2f} |")


if __name__ == "__main__":
    main()
