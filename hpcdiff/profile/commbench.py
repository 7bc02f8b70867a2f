"""``hpcdiff profile comm``: all-reduce time against message size on the ranks of an allocation.

Every rank runs :class:`CommTask` (submitted through :func:`hpcdiff.launch.submit.make_executor`, as
training is), starts ``torch.distributed`` through DeepSpeed (NCCL on GPUs, gloo on CPU), and times
``iters`` back-to-back all-reduces of float32 tensors per size after a warm-up, as nccl-tests does; a
size's time is the slowest rank's mean. The driver writes ``comm.csv`` (size, time, algbw, busbw),
``comm.json`` (the α–β fit) and ``comm.png``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from hpcdiff import dist
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.slurm import SlurmSection, job_name
from hpcdiff.launch.submit import make_executor, wait, world_size_of
from hpcdiff.profile import commfit, plots, report

COMM_COLUMNS = ("size_bytes", "ranks", "iterations", "time_us", "algbw_gb_per_s", "busbw_gb_per_s")


def iterations_for(size_bytes: int) -> int:
    """More repetitions for small messages, whose times are short and noisy."""
    return 20 if size_bytes <= 1 << 20 else 10 if size_bytes <= 1 << 24 else 3


class CommTask:
    """One rank of the sweep. Picklable."""

    def __init__(self, sizes: list[int], *, master_addr: str | None = None, warmup: int = 2) -> None:
        self.sizes, self.master_addr, self.warmup = sizes, master_addr, warmup

    def __call__(self) -> dict[str, Any]:
        dist.set_up_task()
        import torch
        import torch.distributed as torch_dist

        from hpcdiff.train import engine

        if self.master_addr:
            os.environ["MASTER_ADDR"] = self.master_addr
        env = dist.detect()
        engine.init_distributed(env)
        device = torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        times = []
        for size in self.sizes:
            x = torch.ones(size // 4, dtype=torch.float32, device=device)
            iters = iterations_for(size)
            for _ in range(self.warmup):
                torch_dist.all_reduce(x)
            sync()
            torch_dist.barrier()
            start = time.perf_counter()
            for _ in range(iters):
                torch_dist.all_reduce(x)
            sync()
            times.append((time.perf_counter() - start) / iters)
        torch_dist.destroy_process_group()
        return {"rank": env.rank, "world_size": env.world_size, "seconds": times,
                "backend": "nccl" if device.type == "cuda" else "gloo"}


def comm_rows(sizes: list[int], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per size: the slowest rank's mean time, algbw and busbw (GB/s, 1e9 bytes/s)."""
    ranks = results[0]["world_size"]
    rows = []
    for i, size in enumerate(sizes):
        t = max(r["seconds"][i] for r in results)
        rows.append({"size_bytes": size, "ranks": ranks, "iterations": iterations_for(size),
                     "time_us": t * 1e6,
                     "algbw_gb_per_s": commfit.algbw(size, t) / 1e9,
                     "busbw_gb_per_s": commfit.busbw(size, t, ranks) / 1e9})
    return rows


def profile_comm(out: Path, slurm: SlurmSection, *, executor: str, min_bytes: int = 1 << 10,
                 max_bytes: int = 1 << 28, master_addr: str | None = None,
                 deadline_s: float | None = None) -> list[str]:
    """Run the sweep and write ``comm.csv``, ``comm.json`` and ``comm.png`` into ``out``."""
    if executor not in ("slurm", "local"):
        raise HpcdiffError(f"--executor must be slurm or local, got {executor!r}")
    ranks = world_size_of(slurm, executor)
    if ranks < 2:
        raise HpcdiffError(f"an all-reduce needs at least 2 ranks; this allocation has {ranks} "
                           "(set --ranks, or --nodes with --tasks-per-node)")
    try:
        sizes = commfit.sweep_sizes(min_bytes, max_bytes)
    except ValueError as err:
        raise HpcdiffError(f"--min-bytes / --max-bytes: {err}") from None
    out = Path(out).resolve()
    ex = make_executor(executor, out / "comm-submitit", slurm, name=job_name("hpcdiff-comm", out.name))
    submitted = ex.submit(CommTask(sizes, master_addr=master_addr))
    print(f"submitted all-reduce sweep {submitted.job_id} ({executor}, {ranks} ranks, {len(sizes)} sizes)",
          file=sys.stderr, flush=True)
    results = wait(submitted, deadline_s=deadline_s or slurm.time_limit_min * 60 * 1.5 + 600)
    rows = comm_rows(sizes, results)
    fit = commfit.fit_alpha_beta([r["size_bytes"] for r in rows], [r["time_us"] * 1e-6 for r in rows],
                                 ranks=ranks)
    hop_alpha, hop_beta = fit.per_hop()
    report.write_csv(out / "comm.csv", rows, COMM_COLUMNS)
    report.write_json(out / "comm.json", {
        "fit": dataclasses.asdict(fit), "ring_step_latency_s": hop_alpha,
        "link_bandwidth_gb_per_s": 1 / hop_beta / 1e9 if hop_beta > 0 else None,
        "backend": results[0]["backend"], "ranks": ranks, "slurm_job_id": str(submitted.job_id),
        "model": "t(S) = alpha_s + beta_s_per_byte * S; residual: RMS of relative errors"})
    plots.comm_bandwidth(rows, out / "comm.png")
    return [report.markdown_table(rows, (("size_bytes", "bytes", ""), ("time_us", "time us", ".1f"),
                                         ("algbw_gb_per_s", "algbw GB/s", ".3f"),
                                         ("busbw_gb_per_s", "busbw GB/s", ".3f"))),
            f"fit: alpha {fit.alpha_s * 1e6:.1f} us, beta {fit.beta_s_per_byte * 1e9:.4f} ns/B "
            f"({fit.bandwidth_gb_per_s:.2f} GB/s), residual {fit.residual:.1%} (RMS relative) "
            f"on {ranks} ranks; written to {out}"]
