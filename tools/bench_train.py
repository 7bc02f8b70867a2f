"""Training step time and samples/s: DeepSpeed vs plain PyTorch DDP at equal settings, 1 and 2 ranks.

    python tools/bench_train.py [--preset small] [--ranks 1 2] [--global-batch 16] [--size 64] [--steps 20]
                                [--precision fp32|bf16] [--json out.json]

Each configuration runs in its own ``torchrun --nproc_per_node R`` (gloo on CPU, NCCL on GPUs) with
``OMP_NUM_THREADS = cores / R``. Both engines train the same U-Net preset with the same hybrid loss,
AdamW, gradient clipping 1.0 and a warm-up + cosine LambdaLR, on the same in-memory batch (the loader
is out of the picture: this measures the engine). The global batch is fixed; each rank gets
``global / R``. Reported: the median of ``--steps`` timed optimizer steps after 3 warm-up steps, and
DeepSpeed's overhead = its median step time / DDP's - 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from hpcdiff.diffusion import GaussianDiffusion, make_betas
from hpcdiff.models import build_backbone
from hpcdiff.train import engine as ds
from hpcdiff.train.job import DataSection, OptimSection, TrainJob, TrainSection, batch_arithmetic

TARGET_CHANNELS, COND_CHANNELS, WARMUP = 3, 9, 3


def batch(n: int, size: int, rank: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(rank)
    field = functools.partial(torch.randn, generator=gen)
    return {k: v.to(device) for k, v in {
        "x0": field(n, TARGET_CHANNELS, size, size), "noise": field(n, TARGET_CHANNELS, size, size),
        "cond": field(n, COND_CHANNELS, size, size), "t": torch.randint(1000, (n,), generator=gen),
        "doy": torch.rand(n, generator=gen) * 365 + 1}.items()}


def loss_of(model: torch.nn.Module, diffusion: GaussianDiffusion, b: dict[str, torch.Tensor],
            dtype: torch.dtype) -> torch.Tensor:
    cond = b["cond"].to(dtype)
    return diffusion.training_losses(lambda x, t: model(x.to(dtype), t, cond, b["doy"]).float(), b["x0"],
                                     b["t"], noise=b["noise"])["loss"].mean()


def worker(args: argparse.Namespace) -> None:
    """One rank (under torchrun): time ``args.steps`` optimizer steps of ``args.engine``."""
    from hpcdiff import allocator, dist

    allocator.tune_malloc()  # as `hpcdiff train` does
    env = dist.detect()
    train = TrainSection(global_batch=args.global_batch, precision=args.precision, max_steps=1000)
    optim = OptimSection(lr=1e-4, warmup_steps=10)
    job = TrainJob(data=DataSection(dataset=Path(".")), optim=optim, train=train)
    plan = batch_arithmetic(job.train, env.world_size)
    on_gpu = torch.cuda.is_available()
    device = torch.device(f"cuda:{env.local_rank}" if on_gpu else "cpu")
    ds.init_distributed(env)
    torch.manual_seed(0)
    model = build_backbone("unet", args.preset, target_channels=TARGET_CHANNELS, cond_channels=COND_CHANNELS,
                           learn_sigma=True, dropout=0.0).to(device)
    diffusion = GaussianDiffusion(make_betas("cosine", 1000), var_type="learned_range", loss_type="hybrid")
    lr_lambda = functools.partial(ds.warmup_cosine, warmup_steps=10, max_steps=1000, min_ratio=0.1)
    b = batch(plan.micro_batch, args.size, env.rank, device)
    step = deepspeed_step if args.engine == "deepspeed" else ddp_step
    run_step = step(model, diffusion, b, job=job, plan=plan, device=device, lr_lambda=lr_lambda)
    times = []
    for i in range(WARMUP + args.steps):
        if on_gpu:
            torch.cuda.synchronize()
        ds.barrier()
        start = time.perf_counter()
        run_step()
        if on_gpu:
            torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    if env.is_main:
        median = statistics.median(times)
        print("RESULT " + json.dumps({"engine": args.engine, "ranks": env.world_size, "step_s": median,
                                      "min_step_s": min(times), "samples_per_s": args.global_batch / median,
                                      "micro_batch": plan.micro_batch}), flush=True)


def deepspeed_step(model, diffusion, b, *, job, plan, device, lr_lambda):
    engine, _ = ds.init_engine(model, ds.deepspeed_config(job, plan, on_gpu=device.type == "cuda"),
                               lr_lambda=lr_lambda)
    dtype = ds.engine_dtype(engine)

    def run() -> None:
        engine.backward(loss_of(engine, diffusion, b, dtype))
        engine.step()
    return run


def ddp_step(model, diffusion, b, *, job, plan, device, lr_lambda):
    device_ids = [device.index] if device.index is not None else None
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    opt = torch.optim.AdamW(model.parameters(), lr=job.optim.lr, betas=job.optim.betas, eps=job.optim.eps,
                            weight_decay=job.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    bf16 = job.train.precision == "bf16"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def run() -> None:
        with autocast():
            loss = loss_of(ddp, diffusion, b, torch.float32)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), job.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    return run


def launch(args: argparse.Namespace, *, engine: str, ranks: int) -> dict:
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // ranks)), "DS_ACCELERATOR":
           os.environ.get("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")}
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(ranks), "--master_port",
           str(29700 + ranks + (10 if engine == "ddp" else 0)), __file__, "--worker", "--engine", engine,
           "--preset", args.preset, "--global-batch", str(args.global_batch), "--steps", str(args.steps),
           "--precision", args.precision, "--size", str(args.size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{engine} x {ranks} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="H = W of the fields (default: 64)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="deepspeed", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for ranks in args.ranks:
        pair = {engine: launch(args, engine=engine, ranks=ranks) for engine in ("ddp", "deepspeed")}
        rows += list(pair.values())
        ddp, dsp = pair["ddp"], pair["deepspeed"]
        print(f"{ranks} rank(s): DDP {ddp['step_s'] * 1e3:.0f} ms/step "
              f"({ddp['samples_per_s']:.1f} samples/s), "
              f"DeepSpeed {dsp['step_s'] * 1e3:.0f} ms/step ({dsp['samples_per_s']:.1f} samples/s): "
              f"overhead {dsp['step_s'] / ddp['step_s'] - 1:+.1%}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
