"""Ensemble sampling cost on this machine: samples/s vs batch size and vs sampler steps, and the
start-up overhead of one array task (interpreter + imports, checkpoint load, network build, date
index) until its first batch of samples.

    python tools/bench_sample.py [--workdir /tmp/bench_sample] [--batches 1 2 4 8 16 32]
                                 [--steps 5 10 25 50] [--batch-steps 10] [--repeat 2] [--json out.json]
                                 [--device cpu|cuda]

The network is the ``small`` U-Net preset with random weights (speed does not depend on training) at
64 x 64 on the ``demo`` synthetic world (made in ``--workdir`` on first use, ~25 s), 3 target and
9 condition channels, learned variance; a fake checkpoint holds it in the layout of
``hpcdiff.train.checkpoint`` so the real sampling path is measured: :class:`hpcdiff.sample.ensemble.
EnsembleSampler.draw` (conditions, per-sample generators, the sampler, the network). Each point is the
best of ``--repeat`` draws after one warm-up forward pass at that batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "demo_sample.yaml"


def build_dataset(workdir: Path) -> Path:
    """The demo world preprocessed (reused when present)."""
    dataset = workdir / "dataset"
    if not (dataset / "manifest.json").is_file():
        from hpcdiff.cli import main

        assert main(["synth", str(workdir / "world"), "--preset", "demo", "--no-progress"]) == 0
        assert main(["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(dataset),
                     "--set", f"root={workdir / 'world'}", "--no-progress"]) == 0
    return dataset


def fake_run(workdir: Path, dataset: Path) -> Path:
    """``RUN/checkpoints/step-00000000/state.pt`` with a random ``small`` network (no zero weights:
    the zero-initialized output layer would make every call trivially the same), its run spec derived
    from a training job exactly as training derives it."""
    import torch

    from hpcdiff.config import to_dict
    from hpcdiff.data.manifest import read_manifest
    from hpcdiff.runspec import RunSpec
    from hpcdiff.train import checkpoint
    from hpcdiff.train.job import DataSection, ModelSection, TrainJob

    run = workdir / "run"
    path = run / "checkpoints" / "step-00000000"
    path.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(dataset)
    job = TrainJob(data=DataSection(dataset=dataset), model=ModelSection(preset="small"))
    spec = RunSpec.from_job(job, manifest)
    torch.manual_seed(0)
    model = spec.build_model()
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.02)
    torch.save({"step": 0, "ema": model.state_dict(), "run_spec": spec.to_state(), "config": to_dict(job),
                "manifest": manifest.raw, "world_size": 1}, path / "state.pt")
    checkpoint.write_checksums(path)
    return run


def sampler_for(run: Path, *, steps: int, device: str, sampler: str = "dpmpp_3m", precision: str = "fp32"):
    from hpcdiff.config import load_config
    from hpcdiff.sample.ensemble import EnsembleSampler, make_plan
    from hpcdiff.sample.job import SampleJob
    from hpcdiff.sample.run import open_run

    job = load_config(SampleJob, JOB, overrides=[f"sample.steps={steps}", f"sample.sampler={sampler}",
                                                 f"sample.precision={precision}"])
    job, trained = open_run(job, run)
    import torch

    return EnsembleSampler(trained, make_plan(job, trained), device=torch.device(device))


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_draw(ens: Any, batch: int, *, repeat: int) -> float:
    """Best wall time (s) of drawing ``batch`` rows (distinct dates and members)."""
    import torch

    dates = ens.plan.dates
    rows = [(dates[i % len(dates)], i // len(dates)) for i in range(batch)]
    dev = ens.device
    cond = torch.from_numpy(ens.conditions(dates[0])[0])[None].repeat(batch, 1, 1, 1).to(dev)
    with torch.no_grad():  # warm-up at this shape (oneDNN / cuDNN pick their kernels on first use)
        t = torch.zeros(batch, dtype=torch.long, device=dev)
        ens.model(torch.zeros(batch, *ens.shape, device=dev), t, cond, torch.ones(batch, device=dev))
    best = float("inf")
    for _ in range(repeat):
        sync(dev)
        start = time.perf_counter()
        ens.draw(rows)  # ends with a copy to the host: synchronous
        best = min(best, time.perf_counter() - start)
    return best


def bench_batches(run: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    ens = sampler_for(run, steps=args.batch_steps, device=args.device)
    rows = []
    for batch in args.batches:
        seconds = time_draw(ens, batch, repeat=args.repeat)
        rows.append({"batch": batch, "steps": args.batch_steps, "seconds": seconds,
                     "samples_per_s": batch / seconds,
                     "ms_per_sample_step": 1e3 * seconds / batch / args.batch_steps})
        print(f"batch {batch:3d} x {args.batch_steps} steps: {batch / seconds:7.2f} samples/s", flush=True)
    return rows


def bench_steps(run: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    cases = [("dpmpp_3m", s, "fp32") for s in args.steps]
    cases += [("ddpm", 25, "fp32"), ("dpmpp_3m", 25, "bf16")]
    for sampler, steps, precision in cases:
        ens = sampler_for(run, steps=steps, device=args.device, sampler=sampler, precision=precision)
        seconds = time_draw(ens, args.steps_batch, repeat=1)
        rows.append({"sampler": sampler, "steps": steps, "precision": precision,
                     "batch": args.steps_batch, "seconds": seconds,
                     "samples_per_s": args.steps_batch / seconds})
        print(f"{sampler} {steps:3d} steps {precision}, batch {args.steps_batch}: "
              f"{args.steps_batch / seconds:7.2f} samples/s", flush=True)
    return rows


def startup_child(run: Path, device: str, batch: int) -> None:
    """Runs in a fresh interpreter, like an array task: prints the times (s since the epoch) at which
    each start-up stage ended."""
    marks = {"main": time.time()}
    import torch

    from hpcdiff.config import load_config
    from hpcdiff.sample.ensemble import EnsembleSampler, make_plan
    from hpcdiff.sample.job import SampleJob
    from hpcdiff.sample.run import open_run

    marks["imports"] = time.time()
    job = load_config(SampleJob, JOB, overrides=[f"sample.batch_size={batch}", "sample.precision=fp32"])
    job, trained = open_run(job, run)
    marks["checkpoint"] = time.time()
    ens = EnsembleSampler(trained, make_plan(job, trained), device=torch.device(device))
    marks["network_and_index"] = time.time()
    ens.draw([(ens.plan.dates[0], m) for m in range(batch)])
    marks["first_batch"] = time.time()
    print(json.dumps(marks))


def bench_startup(run: Path, device: str, batch: int) -> dict[str, float]:
    spawn = time.time()
    cmd = [sys.executable, __file__, "--startup-child", str(run), device, str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    order = ["main", "imports", "checkpoint", "network_and_index", "first_batch"]
    stages = {"interpreter": marks["main"] - spawn}
    stages.update({name: marks[name] - marks[prev] for prev, name in zip(order[:-1], order[1:], strict=True)})
    stages["to_first_sample"] = marks["first_batch"] - spawn
    stages["to_ready"] = marks["network_and_index"] - spawn
    print("start-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()), flush=True)
    return stages


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench_sample"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--batch-steps", type=int, default=10, help="sampler steps in the batch sweep")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50])
    p.add_argument("--steps-batch", type=int, default=8, help="batch size in the steps sweep")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--device", default="cpu", help="cpu | cuda (precision fp32, plus one bf16 row)")
    p.add_argument("--startup-child", nargs=3, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.startup_child:
        run, device, batch = args.startup_child
        startup_child(Path(run), device, int(batch))
        return
    import torch

    from hpcdiff import allocator

    allocator.tune_malloc()  # as `hpcdiff sample` does
    start = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    dataset = build_dataset(args.workdir)
    run = fake_run(args.workdir, dataset)
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "torch": torch.__version__,
               "threads": torch.get_num_threads(), "command": " ".join(sys.argv),
               "date": time.strftime("%Y-%m-%d"), "device": args.device,
               "startup": bench_startup(run, args.device, 8),
               "batches": bench_batches(run, args), "steps": bench_steps(run, args)}
    results["total_s"] = time.perf_counter() - start
    print(f"total {results['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
