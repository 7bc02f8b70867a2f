"""One rank of a profiling point: the training loop, with DeepSpeed's timers read after every step.

:class:`ProfileTrainer` is the :class:`~hpcdiff.train.loop.Trainer` itself (same engine, batches, loss,
optimizer); after each optimizer step it reads DeepSpeed's wall-clock timers and the comms logger's
all-reduce total, and optionally records a few steps with ``torch.profiler`` into a Chrome trace. The
record goes back to the submitting process as the task's result (submitit pickles it).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from hpcdiff.dist import DistEnv
from hpcdiff.fsutil import atomic_file
from hpcdiff.seeding import SYNTHETIC, generator
from hpcdiff.train import engine as ds
from hpcdiff.train.job import TrainJob
from hpcdiff.train.loop import Trainer, peak_memory_mb


def synthetic_stream(first: dict[str, torch.Tensor], *, seed: int, rank: int,
                     keep: int = 0) -> Iterator[tuple[int, dict]]:
    """Random tensors of the shapes of a real batch (``target [B, Ct, H, W]``, ``cond [B, Cc, H, W]``, a
    ``context``), made once and fed forever: no file I/O, so the step is compute and communication only.
    ``doy``, ``time`` and the last ``keep`` condition channels (the pixels' places in a context box) are
    the real batch's; ``index`` moves on, so every step draws new diffusion noise."""
    gen = generator(seed, SYNTHETIC, rank)
    batch = {k: v.clone() for k, v in first.items()}
    for key in [k for k in ("target", "cond", "context") if k in first]:
        batch[key] = torch.randn(first[key].shape, generator=gen, dtype=first[key].dtype)
    if keep:
        batch["cond"][:, -keep:] = first["cond"][:, -keep:]
    n, step = len(batch["index"]), 0
    while True:
        yield 0, {**batch, "index": torch.arange(step * n, (step + 1) * n, dtype=torch.int64)}
        step += 1


class ProfileTrainer(Trainer):
    """A training run that records, for every optimizer step, where its time went (ms)."""

    def __init__(self, job: TrainJob, run_dir: Path, *, env: DistEnv, options: dict[str, Any]) -> None:
        super().__init__(job, run_dir, env=env, resume="never", progress=False)
        self.options, self.records = options, []
        self._comm_before = ds.allreduce_log_ms()
        self._trace = None

    def _batches(self) -> Iterator[tuple[int, dict]]:
        if self.options.get("data", "synthetic") == "synthetic":
            context = getattr(self.spec, "context", None)  # an autoencoder run reads none
            keep = 2 if context is not None and context.spatial else 0
            return synthetic_stream(self.train_ds[0], seed=self.job.train.seed, rank=self.env.rank, keep=keep)
        return super()._batches()

    def _train_step(self, stream: Iterator[tuple[int, dict]]) -> dict[str, Any]:
        self._maybe_trace()
        metrics = super()._train_step(stream)
        if self._trace is not None:
            self._trace.step()
        timers = ds.wall_clock_timers(self.engine)
        comm_ms, comm_bytes = ds.allreduce_log_ms()
        step_ms = metrics["step_time_s"] * 1e3
        wait_ms = metrics["data_wait_share"] * step_ms
        known = wait_ms + timers["fwd"] + timers["bwd"] + timers["step"]
        self.records.append({
            "step": self.step + 1, "data_wait_ms": wait_ms, "forward_ms": timers["fwd"],
            "backward_ms": timers["bwd_inner"], "allreduce_exposed_ms": timers["bwd_allreduce"],
            "optimizer_ms": timers["step"], "other_ms": max(step_ms - known, 0.0), "step_ms": step_ms,
            "allreduce_total_ms": comm_ms - self._comm_before[0],
            "allreduce_bytes": comm_bytes - self._comm_before[1]})
        self._comm_before = (comm_ms, comm_bytes)
        return metrics

    def _maybe_trace(self) -> None:
        """Start ``torch.profiler`` at the first measured step, for ``trace_steps`` steps; its schedule marks
        each step (``ProfilerStep#N``), which trace analysers (HolisticTraceAnalysis) look for."""
        steps, warmup = int(self.options.get("trace_steps", 0)), int(self.options.get("warmup", 0))
        if steps <= 0 or not self.options.get("trace_dir"):
            return
        if self.step == warmup and self._trace is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            schedule = torch.profiler.schedule(wait=0, warmup=0, active=steps, repeat=1)
            self._trace = torch.profiler.profile(activities=activities, schedule=schedule,
                                                 on_trace_ready=self._export_trace)
            self._trace.__enter__()
        elif self._trace is not None and self.step == warmup + steps:
            self._trace.__exit__(None, None, None)
            self._trace = None

    def _export_trace(self, prof: torch.profiler.profile) -> None:
        path = Path(self.options["trace_dir"]) / f"rank-{self.env.rank}.json"
        with atomic_file(path, suffix=".json") as tmp:  # each rank writes its own trace
            prof.export_chrome_trace(str(tmp))
        print(f"hpcdiff profile: trace of rank {self.env.rank} in {path}", file=sys.stderr, flush=True)

    def record(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.engine.module.parameters())
        device_mb = peak_memory_mb(self.device) if self.device.type == "cuda" else 0.0
        return {"rank": self.env.rank, "world_size": self.env.world_size, "host": socket.gethostname(),
                "samples_per_step": self.plan.micro_batch * self.plan.accum_steps,
                "micro_batch": self.plan.micro_batch, "accum_steps": self.plan.accum_steps,
                "global_batch": self.plan.global_batch, "parameters": int(params),
                "grad_bytes_per_element": 4 if self.job.train.precision == "fp32" else 2,
                "peak_host_mb": peak_memory_mb(torch.device("cpu")), "peak_device_mb": device_mb,
                "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else "none",
                "steps": self.records}


def profiled_train(job: TrainJob, run_dir: Path, *, env: DistEnv, options: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` as one rank of a profiling point; returns this rank's record (see
    :meth:`ProfileTrainer.record`) with the training result's keys."""
    trainer = ProfileTrainer(job, run_dir, env=env, options=options)
    result = trainer.run()
    ds.comm_log_summary()  # DeepSpeed's own table, into the job's log
    return {"rank": env.rank, "world_size": env.world_size, "step": result.step, "status": result.status,
            "checkpoint": str(result.checkpoint), "profile": trainer.record()}
