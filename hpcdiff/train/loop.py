"""The training loop: readable in one sitting.

Determinism is by construction, not by saved state: the random draws of a sample's loss (the diffusion
time step and noise, an autoencoder's latent noise) come from a generator seeded by ``(seed, purpose,
epoch, global sample index)``, so a sample's loss does not depend on which rank or micro-batch it lands
in (1 rank x 2 accumulation steps == 2 ranks x 1), and dropout is reseeded from ``(seed, DROPOUT, rank,
micro-step)``; the purpose tags (:mod:`hpcdiff.seeding`) keep the streams apart. A run resumed from a
checkpoint therefore repeats the loss history of an uninterrupted run exactly.

The network is the run spec's (:mod:`hpcdiff.runspec`): for a diffusion run a denoiser that owns the
residual encoding and the ε / v parameterization, for an autoencoder run the autoencoder. What is
minimized and how validation is scored is the run's objective (:mod:`hpcdiff.train.objective`); the loop
only feeds it batches.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from hpcdiff import memory
from hpcdiff.config import dump_config, to_dict
from hpcdiff.data.latent import read_autoencoder_file
from hpcdiff.data.loader import ShardDataset
from hpcdiff.diffusion.weights import sdf_weights
from hpcdiff.dist import DistEnv
from hpcdiff.errors import HpcdiffError
from hpcdiff.provenance import provenance
from hpcdiff.runspec import AnySpec, AutoencoderSpec, spec_from_job
from hpcdiff.seeding import DROPOUT, INIT, mix_seed
from hpcdiff.train import checkpoint
from hpcdiff.train import engine as ds
from hpcdiff.train.ema import EMA
from hpcdiff.train.job import BatchPlan, TrainJob, batch_arithmetic, context_selection, resume_conflicts
from hpcdiff.train.metrics_log import MetricsLog
from hpcdiff.train.objective import AutoencoderObjective, DiffusionObjective, Objective


@dataclasses.dataclass
class TrainResult:
    step: int
    status: str  # "finished" | "stopped" (a stop request, e.g. the SLURM time-limit signal)
    checkpoint: Path | None


def loss_weight(job: TrainJob, train_ds: ShardDataset) -> torch.Tensor | None:
    """Per-pixel weights ``[1, 1, H, W]`` (mean 1) from the coast distance, or ``None``."""
    w = job.loss_weights
    if not w.enabled:
        return None
    weight = sdf_weights(train_ds.sdf_km, land_weight=w.land_weight, sea_scale_km=w.sea_scale_km,
                         floor=w.floor)
    return torch.from_numpy(weight.astype("float32"))[None, None]


def check_resume(path: Path, *, job: TrainJob, spec: AnySpec) -> None:
    """Refuse to resume checkpoint ``path`` with ``job`` when the run differs (:func:`checkpoint.
    check_compatible`) or the job changes a value the checkpoint restores (:data:`RESTORED_ON_RESUME
    <hpcdiff.train.job.RESTORED_ON_RESUME>`): never train silently with other settings than asked."""
    state = checkpoint.load_state(path)
    checkpoint.check_compatible(state, spec=spec, path=path, dataset=job.data.dataset)
    conflicts = resume_conflicts(state.get("config", {}), to_dict(job))
    if conflicts:
        raise HpcdiffError(f"{path}: the job changes what a resumed run restores from the checkpoint "
                           f"({'; '.join(conflicts)}); keep the checkpoint's values, or start a new run "
                           "(another --out, or --resume never)")


def batch_stream(dataset: ShardDataset, *, start: int, num_workers: int) -> Iterator[tuple[int, dict]]:
    """Yield ``(epoch, batch)`` from micro-step ``start`` on, forever, re-shuffling every epoch."""
    per_epoch = len(dataset)
    epoch, offset = divmod(start, per_epoch)
    while True:
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(offset, per_epoch),
                                             num_workers=num_workers, persistent_workers=False)
        for batch in loader:
            yield epoch, batch
        epoch, offset = epoch + 1, 0


def local_grad_norm(model: torch.nn.Module) -> float | None:
    """L2 norm of the gradients held in ``model``'s parameters, or ``None`` where an optimizer keeps
    them elsewhere (ZeRO partitions, low-precision wrappers)."""
    grads = [p.grad.detach().float() for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    """State of one rank's training run. ``run()`` is the loop."""

    def __init__(self, job: TrainJob, run_dir: Path, *, env: DistEnv, resume: str | None,
                 progress: bool, should_stop: Callable[[], bool] | None = None) -> None:
        self.job, self.run_dir, self.env, self.progress = job, Path(run_dir), env, progress
        self.should_stop = should_stop or (lambda: False)
        if self.run_dir.exists() and not self.run_dir.is_dir():  # every rank refuses, before any rendezvous
            raise HpcdiffError(f"{run_dir}: exists and is not a folder; give --out a run folder")
        self.plan: BatchPlan = batch_arithmetic(job.train, env.world_size)
        self.device = torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
        self.ds_config = ds.deepspeed_config(job, self.plan, on_gpu=self.device.type == "cuda")
        self.train_ds = ShardDataset(job.data.dataset, job.data.train_split, batch_size=self.plan.micro_batch,
                                     rank=env.rank, world_size=env.world_size, seed=job.train.seed,
                                     patch=job.data.patch, positions=job.data.positions,
                                     context=context_selection(job))
        if len(self.train_ds) == 0:
            raise HpcdiffError(f"{job.data.dataset}: split {job.data.train_split!r} has fewer samples than "
                               f"one micro-batch per rank ({self.plan.describe()})")
        self.train_ds.verify()  # every shard's checksum, before DeepSpeed starts; workers inherit it
        self.spec = spec_from_job(job, self.train_ds.manifest)
        # a latent run carries the autoencoder's weights in its checkpoints: sampling decodes with them
        latent = self.train_ds.manifest.latent
        self.autoencoder = (None if latent is None else
                            read_autoencoder_file(self.train_ds.root, latent)["weights"])
        self.ckpt_root = self.run_dir / "checkpoints"
        self.resume_from = checkpoint.resolve_resume(resume, self.ckpt_root)
        if self.resume_from is not None:  # refuse a mismatch before any process group or model exists
            check_resume(self.resume_from, job=job, spec=self.spec)
        self._build()

    def _build(self) -> None:
        job, env = self.job, self.env
        ds.init_distributed(env)
        torch.manual_seed(mix_seed(job.train.seed, INIT, env.rank))
        model = self.spec.build_model()
        lr_lambda = functools.partial(ds.warmup_cosine, warmup_steps=job.optim.warmup_steps,
                                      max_steps=job.train.max_steps, min_ratio=job.optim.min_lr_ratio)
        self.engine, self.scheduler = ds.init_engine(model.to(self.device), self.ds_config,
                                                     lr_lambda=lr_lambda)
        self.ema = EMA(self.engine.module, decay=job.train.ema_decay)
        self.objective = self._objective(model)
        self.step, self._grad_norm, self._val_skip_said = 0, None, False
        if self.resume_from is not None:
            state = checkpoint.load(self.resume_from, engine=self.engine, rank=env.rank)
            self.ema.load_state_dict(state["ema"])
            self.step = int(state["step"])

    def _objective(self, model: torch.nn.Module) -> Objective:
        """The run's objective around ``model`` (the engine's module: its parameters are the trained ones),
        with the job's loss weights on the device (moved once, used every step)."""
        weight = loss_weight(self.job, self.train_ds)
        weight = None if weight is None else weight.to(self.device)
        seed = self.job.train.seed
        if isinstance(self.spec, AutoencoderSpec):
            return AutoencoderObjective(self.spec, seed=seed, weight=weight, lsm=self.train_ds.mask,
                                        transforms=self.train_ds.manifest.target_transforms(),
                                        device=self.device, rank=self.env.rank,
                                        world_size=self.env.world_size)
        return DiffusionObjective(self.spec, model, seed=seed, weight=weight, device=self.device)

    def _micro_step(self, epoch: int, batch: dict[str, torch.Tensor], micro: int) -> dict[str, float]:
        torch.manual_seed(mix_seed(self.job.train.seed, DROPOUT, self.env.rank, micro))
        losses = self.objective.losses(self.engine, batch, epoch=epoch)
        loss = losses["loss"].mean()
        self.engine.backward(loss)
        if self.engine.is_gradient_accumulation_boundary():
            self._grad_norm = local_grad_norm(self.engine.module)  # all-reduced grads, before clipping
        self.engine.step()
        return {k: float(v.detach().mean()) for k, v in losses.items()}

    def _train_step(self, stream: Iterator[tuple[int, dict]]) -> dict[str, Any]:
        """One optimizer step = ``accum_steps`` micro-steps; returns the step's metrics."""
        start, wait, sums, epoch = time.perf_counter(), 0.0, {}, 0
        for j in range(self.plan.accum_steps):
            t0 = time.perf_counter()
            epoch, batch = next(stream)
            wait += time.perf_counter() - t0
            try:
                metrics = self._micro_step(epoch, batch, self.step * self.plan.accum_steps + j)
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not memory.is_out_of_memory(err):
                    raise
                raise memory.training_out_of_memory(self.job, self.train_ds.manifest,
                                                     world_size=self.env.world_size, error=err) from err
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value / self.plan.accum_steps
        self.ema.update(self.engine.module)
        elapsed = time.perf_counter() - start
        per_rank = self.plan.micro_batch * self.plan.accum_steps / elapsed
        grad_norm = self.engine.get_global_grad_norm()  # ZeRO and bf16/fp16 optimizers track it
        grad_norm = self._grad_norm if grad_norm is None else grad_norm
        return {**sums, "epoch": epoch, "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "samples_per_s_rank": per_rank, "samples_per_s_total": per_rank * self.env.world_size,
                "data_wait_share": wait / elapsed, "step_time_s": elapsed,
                "peak_mem_mb": peak_memory_mb(self.device)}

    def _averaged(self, metrics: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        """Average loss terms over ranks (for the log; the update itself is already all-reduced)."""
        present = [k for k in keys if k in metrics]
        summed = ds.all_reduce_sum(torch.tensor([metrics[k] for k in present], dtype=torch.float64))
        mean = {k: float(v) / self.env.world_size for k, v in zip(present, summed, strict=True)}
        return {**metrics, **mean}

    def _validation_batches(self) -> tuple[ShardDataset | None, list[int]]:
        """The validation split in file order (short last batches kept, nothing repeated) and this
        rank's share of its batches (``b % world_size == rank``, at most ``train.val_batches``). Says
        once, on rank 0, why there is no validation when the split is empty or missing."""
        job = self.job
        try:
            val = ShardDataset(job.data.dataset, job.data.val_split, batch_size=self.plan.micro_batch,
                               seed=job.train.seed, shuffle=False, drop_last=False, patch=job.data.patch,
                               positions=job.data.positions, context=context_selection(job))
        except HpcdiffError as err:
            if self.env.is_main and not self._val_skip_said:
                print(f"hpcdiff train: no validation: {err}", file=sys.stderr, flush=True)
            self._val_skip_said = True
            return None, []
        mine = list(range(self.env.rank, len(val), self.env.world_size))
        return val, mine if job.train.val_batches is None else mine[:job.train.val_batches]

    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        """The objective's validation (:mod:`hpcdiff.train.objective`) with the EMA weights and fixed noise;
        ``None`` if the split is empty."""
        val, batches = self._validation_batches()
        if val is None:
            return None
        model = self.spec.build_model()
        model.load_state_dict(self.ema.state_dict())
        model.to(self.device).eval()
        tally = self.objective.tally(reduce=ds.all_reduce_sum, samples=self._validation_samples(len(val)))
        for b in batches:
            tally.add(model, val[b])
        return tally.result()

    def _validation_samples(self, batches: int) -> int:
        """At most how many samples all ranks validate together, of a split of ``batches`` batches
        (:meth:`_validation_batches`: each rank at most ``train.val_batches`` of them)."""
        limit = self.job.train.val_batches
        validated = batches if limit is None else min(batches, limit * self.env.world_size)
        return validated * self.plan.micro_batch

    def _state(self) -> dict[str, Any]:
        """``state.pt``: what sampling needs (EMA, run spec, config, manifest) and the step; the loader
        position follows from the step (``step x accum_steps`` micro-batches)."""
        return {"step": self.step, "ema": self.ema.state_dict(), "run_spec": self.spec.to_state(),
                "config": to_dict(self.job), "manifest": self.train_ds.manifest.raw,
                "world_size": self.env.world_size, "provenance": provenance(),
                **({} if self.autoencoder is None else {"autoencoder": self.autoencoder})}

    def save(self) -> Path:
        return checkpoint.save(self.ckpt_root, step=self.step, engine=self.engine, state=self._state(),
                               rank=self.env.rank, keep_last=self.job.train.keep_last, barrier=ds.barrier)

    def _batches(self) -> Iterator[tuple[int, dict]]:
        """``(epoch, batch)`` from the current step's micro-batch on (a profiling run feeds synthetic
        batches of the same shapes here)."""
        return batch_stream(self.train_ds, start=self.step * self.plan.accum_steps,
                            num_workers=self.job.data.num_workers)

    def _stop_requested(self) -> bool:
        flag = ds.all_reduce_sum(torch.tensor([1.0 if self.should_stop() else 0.0], dtype=torch.float64))
        return bool(flag[0] > 0)

    def run(self) -> TrainResult:
        job, main = self.job, self.env.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(job, self.run_dir / "config.yaml")
            (self.run_dir / "provenance.json").write_text(json.dumps(provenance(), indent=1) + "\n")
            print(f"hpcdiff train: {self.plan.describe()}; {len(self.train_ds)} micro-batches per rank per "
                  f"epoch; precision {job.train.precision}, ZeRO {job.train.zero_stage}; device {self.device}"
                  + (f"; resuming from {self.resume_from} (step {self.step})" if self.resume_from else ""),
                  file=sys.stderr, flush=True)
        ds.barrier()
        log = MetricsLog(self.run_dir, enabled=main, resume_step=self.step, tensorboard=job.train.tensorboard,
                         columns=self.objective.columns())
        stream = self._batches()
        bar = _progress_bar(enabled=main and self.progress, start=self.step, total=job.train.max_steps)
        last_saved, status = None, "finished"
        try:
            while self.step < job.train.max_steps:
                metrics = self._train_step(stream)
                self.step += 1
                if not math.isfinite(metrics["loss"]):
                    raise HpcdiffError(f"training diverged at step {self.step}: loss is {metrics['loss']}")
                self._after_step(metrics, log, bar)
                if self.step % job.train.ckpt_every == 0 or self.step == job.train.max_steps:
                    last_saved = self.save()
                if self.step < job.train.max_steps and self._stop_requested():
                    last_saved, status = self.save(), "stopped"
                    break
        finally:
            log.close()
            if bar is not None:
                bar.close()
        return TrainResult(step=self.step, status=status, checkpoint=last_saved)

    def _after_step(self, metrics: dict[str, Any], log: MetricsLog, bar: Any) -> None:
        job = self.job
        if self.step % job.train.log_every == 0 or self.step == job.train.max_steps:
            terms = (*self.objective.terms, "samples_per_s_rank", "data_wait_share")
            metrics = self._averaged(metrics, terms)
            metrics["samples_per_s_total"] = metrics["samples_per_s_rank"] * self.env.world_size
            log.log("train", {"step": self.step, **metrics})
        if self.step % job.train.val_every == 0 or self.step == job.train.max_steps:
            val = self.validate()
            if val is not None:
                log.log("val", {"step": self.step, **val})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", sps=f"{metrics['samples_per_s_total']:.1f}")


def _progress_bar(*, enabled: bool, start: int, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)


def train(job: TrainJob, run_dir: Path, *, env: DistEnv, resume: str | None = "auto", progress: bool = True,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train ``job`` into ``run_dir`` as rank ``env.rank`` of ``env.world_size``."""
    return Trainer(job, run_dir, env=env, resume=resume, progress=progress, should_stop=should_stop).run()
