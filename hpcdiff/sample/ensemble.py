"""Ensemble sampling: M members for each date of a plan, written as one atomic part file per date.

Rows are (date, member) pairs, date-major; a batch is ``batch_size`` consecutive rows, so members and
dates are packed together to fill the device. Every row gets its own generator seeded from
``(seed, MEMBER, days since 1970-01-01, member)``, so its noise is the same whatever the batching.

The network is always called with exactly ``batch_size`` rows (a short last batch is padded with copies
of its last row, whose results are dropped): BLAS and convolution libraries choose kernels by shape
(a matrix-vector kernel for one row, other blockings for other sizes) and so sum in another order, and
one fixed shape makes a row's arithmetic the same wherever it lands. A member is therefore bit for bit
the same whatever the job-array chunking, a resume, or the dates next to it; across *different*
``batch_size`` values it agrees to floating-point rounding (bit for bit on this project's CPUs in the
tests, not promised by any library).

:func:`sample_ensemble` is the one entry point, used by ``hpcdiff sample`` and by every array task of
``hpcdiff submit sample``: it loads the checkpoint once, writes or checks ``plan.json``, skips dates
whose part is complete and samples the rest.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcdiff import memory
from hpcdiff.config import dump_config
from hpcdiff.data.latent import block_mean
from hpcdiff.data.manifest import read_manifest
from hpcdiff.diffusion.samplers import sample
from hpcdiff.errors import HpcdiffError
from hpcdiff.sample import parts
from hpcdiff.sample.conditions import ConditionReader
from hpcdiff.sample.dates import name_some, select_dates
from hpcdiff.sample.job import SampleJob
from hpcdiff.sample.plan import SamplePlan, write_plan
from hpcdiff.sample.run import (
    TrainedRun,
    autocast_dtype,
    default_device,
    load_autoencoder,
    load_network,
    open_run,
    precision_name,
    resolved_steps,
)
from hpcdiff.sample.tiles import TiledModel, check_tiling
from hpcdiff.seeding import MEMBER, generator

Row = tuple[str, int]  # (ISO date, member)


@dataclasses.dataclass
class SampleSummary:
    """What one call of :func:`sample_ensemble` did."""

    out: Path
    written: list[str]  # dates whose part this call wrote
    skipped: int  # requested dates that were complete already
    samples: int
    startup_s: float  # start to "ready to sample": checkpoint load, plan, network build, date index
    seconds: float

    def describe(self) -> str:
        if not self.written:
            return f"nothing to do: all {self.skipped} requested dates are sampled already in {self.out}"
        rate = self.samples / max(self.seconds - self.startup_s, 1e-9)
        return (f"{len(self.written)} date(s) sampled ({self.samples} samples, {rate:.2f} samples/s after "
                f"{self.startup_s:.1f} s start-up), {self.skipped} already done; parts in "
                f"{self.out / 'parts'}")


def make_plan(job: SampleJob, run: TrainedRun) -> SamplePlan:
    """What the run must contain, fixed at its first start: a rerun with another plan is refused."""
    manifest = read_manifest(run.dataset)
    dropped = {d: x.reason() for d, x in manifest.context.dropped.items()} if manifest.context else {}
    dates = select_dates(job.dates, manifest.split_dates(), where=str(run.dataset),
                         calendar=manifest.calendar, dropped=dropped)
    s = job.sample
    if s.tiles is not None:
        check_tiling(s.tiles, s.overlap, where="sample job")
        if run.spec.latent is not None:
            raise HpcdiffError(f"sample.tile: run {run.run_dir} samples latents (a grid "
                               f"{run.spec.latent.factor}x coarser per axis) in one piece; set sample.tile: "
                               "null")
    latent = run.spec.latent
    targets = list(run.manifest.raw["targets"]) if latent is None else [dict(t) for t in
                                                                         run.manifest.latent.source_targets]
    return SamplePlan(run=str(run.run_dir), checkpoint=str(run.checkpoint), checkpoint_step=run.step,
                      checkpoint_sha256=run.checkpoint_sha256, dataset=str(run.dataset), dates=dates,
                      members=s.members, sampler=s.sampler, steps=resolved_steps(s, run.spec),
                      spacing=s.spacing, eta=s.eta, seed=s.seed, precision=s.precision,
                      image_shape=run.spec.output_shape, targets=targets,
                      tile=s.tiles, tile_overlap=s.overlap)


def prepare(job: SampleJob, run_dir: Path, out: Path) -> tuple[SampleJob, TrainedRun, SamplePlan]:
    """Load the run, write (or check) ``OUT/plan.json`` and the resolved config ``OUT/config.yaml``."""
    job, run = open_run(job, run_dir)
    return job, run, write_prepared(job, run, out)


def write_prepared(job: SampleJob, run: TrainedRun, out: Path) -> SamplePlan:
    """The second half of :func:`prepare`, for a run opened already (:func:`open_run`)."""
    plan = make_plan(job, run)
    write_plan(out, plan)
    dump_config(job, Path(out) / "config.yaml")
    return plan


def pending_dates(out: Path, plan: SamplePlan, dates: Sequence[str] | None) -> list[str]:
    """The dates of ``dates`` (default: the whole plan) whose part is not complete yet, in plan order."""
    wanted = plan.dates if dates is None else list(dates)
    unplanned = sorted(set(wanted) - set(plan.dates))
    if unplanned:
        raise HpcdiffError(f"{out}: date(s) not in the plan: {name_some(unplanned)}")
    done = parts.finished_dates(out, members=plan.members)
    return [d for d in wanted if d not in done]


def packed_rows(dates: Sequence[str], *, members: int, batch_size: int) -> Iterator[list[Row]]:
    """Batches of ``batch_size`` consecutive (date, member) rows, date-major (the last may be short)."""
    rows = [(d, m) for d in dates for m in range(members)]
    for start in range(0, len(rows), batch_size):
        yield rows[start:start + batch_size]


def padded(rows: Sequence[Row], size: int) -> list[Row]:
    """``rows`` filled up to ``size`` with copies of the last row (one call shape for every batch)."""
    assert 0 < len(rows) <= size, (len(rows), size)
    return [*rows, *[rows[-1]] * (size - len(rows))]


class EnsembleSampler:
    """The network, diffusion and conditions of one task, loaded once; :meth:`draw` samples rows."""

    def __init__(self, run: TrainedRun, plan: SamplePlan, *, device: torch.device) -> None:
        self.plan, self.device = plan, device
        self.model = load_network(run, device=device)
        self.model.autocast = autocast_dtype(plan.precision, device)
        self.diffusion = run.spec.build_diffusion(steps=plan.steps, spacing=plan.spacing)
        self.reader = ConditionReader(run.dataset, positions=run.spec.positions,
                                      context=run.spec.context_selection)
        self.shape = (len(plan.channels), *plan.image_shape)
        self.latent = run.spec.latent  # latent diffusion: draw latents, decode them onto the pixel grid
        self.autoencoder = None if self.latent is None else load_autoencoder(run, device=device)
        self.drawn = self.shape if self.latent is None else (len(run.spec.targets), *run.spec.image_shape)
        self._cond: dict[str, tuple[np.ndarray, np.ndarray | None, float]] = {}

    @property
    def precision(self) -> str:
        return precision_name(self.model.autocast)

    def conditions(self, date: str) -> tuple[np.ndarray, np.ndarray | None, float]:
        """``(cond [C, H, W], context [Cx · S, Hx, Wx] or None, day of year)`` of ``date``, read once while
        its members are drawn."""
        if date not in self._cond:
            cond, context, doy = self.reader.read(date)
            if self.latent is not None:
                cond = self.latent_conditions(cond)
            self._cond[date] = (cond, context, doy)
        return self._cond[date]

    def latent_conditions(self, cond: np.ndarray) -> np.ndarray:
        """A pixel date's conditions ``[C, H, W]`` as :mod:`hpcdiff.data.encode` wrote them for the latent
        grid: block means of the dynamic channels, the encoded ERA5 baseline normalized like the latents
        (when the run has one), block means of the static channels."""
        latent, dynamic = self.latent, len(self.reader.manifest.conditions)
        parts = [block_mean(cond[:dynamic], latent.factor)]
        if latent.baseline is not None:
            fields = torch.from_numpy(np.ascontiguousarray(cond[None, :dynamic])).to(self.device)
            with torch.no_grad():
                z, _ = self.autoencoder.encode(latent.baseline.residual().baseline(fields))
            mean = torch.tensor(latent.mean, dtype=torch.float32, device=z.device).reshape(1, -1, 1, 1)
            std = torch.tensor(latent.std, dtype=torch.float32, device=z.device).reshape(1, -1, 1, 1)
            parts.append(((z.float() - mean) / std)[0].cpu().numpy())
        parts.append(block_mean(cond[dynamic:], latent.factor))
        return np.concatenate(parts).astype(np.float32)

    def draw(self, rows: Sequence[Row]) -> np.ndarray:
        """Samples ``[len(rows), Ct, H, W]`` float32 (normalized) for the (date, member) ``rows``; a call
        shape of exactly ``len(rows)`` (see the module docstring for why callers pad)."""
        conds = [self.conditions(d) for d, _ in rows]
        cond = torch.from_numpy(np.stack([c for c, _, _ in conds])).to(self.device)
        context = (None if conds[0][1] is None
                   else torch.from_numpy(np.stack([x for _, x, _ in conds])).to(self.device))
        doy = torch.tensor([v for _, _, v in conds], dtype=torch.float32, device=self.device)
        generators = [generator(self.plan.seed, MEMBER, self.reader.day_number(d), m) for d, m in rows]
        tile, overlap = self.plan.tile, self.plan.tile_overlap
        model_fn = (self.model.bind(cond, doy, context) if tile is None
                    else TiledModel(self.model, cond, doy, context=context, tile=tuple(tile),
                                    overlap=overlap))
        x = sample(model_fn, self.diffusion, (len(rows), *self.drawn),
                   sampler=self.plan.sampler, steps=self.diffusion.num_steps, eta=self.plan.eta,
                   generators=generators, device=self.device)
        assert x.shape == (len(rows), *self.drawn), (tuple(x.shape), self.drawn)
        x = self.model.decode(x.float(), cond.float())
        if self.autoencoder is not None:
            x = self.decode_latents(x)
        return x.cpu().numpy()

    def decode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized latents ``[N, Cl, h, w]`` -> normalized targets ``[N, Ct, H, W]`` on the pixel grid:
        back to the encoder's scale, then the autoencoder's decoder (in float32)."""
        mean = torch.tensor(self.latent.mean, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
        std = torch.tensor(self.latent.std, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
        with torch.no_grad():
            return self.autoencoder.decode(x * std + mean, tuple(self.latent.image_shape))

    def generate(self, dates: Sequence[str], *, batch_size: int,
                 progress: bool) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(date, members [M, Ct, H, W])`` as each date of ``dates`` completes."""
        members = self.plan.members
        pending: dict[str, np.ndarray] = {}
        filled: dict[str, int] = {}
        bar = _progress_bar(enabled=progress, total=len(dates) * members)
        try:
            for rows in packed_rows(dates, members=members, batch_size=batch_size):
                drawn = self.draw(padded(rows, batch_size))[:len(rows)]
                for (date, member), x in zip(rows, drawn, strict=True):
                    pending.setdefault(date, np.empty((members, *self.shape), np.float32))[member] = x
                    filled[date] = filled.get(date, 0) + 1
                    if filled[date] == members:
                        self._cond.pop(date, None)
                        yield date, pending.pop(date)
                if bar is not None:
                    bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()

    def close(self) -> None:
        self.reader.close()


def _progress_bar(*, enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="sample", unit="sample", dynamic_ncols=True, file=sys.stderr)


def sample_ensemble(job: SampleJob, run_dir: Path, out: Path, *, dates: Sequence[str] | None = None,
                    progress: bool = True, device: torch.device | str | None = None) -> SampleSummary:
    """Sample the missing dates of ``dates`` (default: all planned) of ``job`` with the run ``run_dir``
    into ``out``: ``out/plan.json``, ``out/config.yaml`` and ``out/parts/<date>.h5`` (see
    :mod:`hpcdiff.sample.parts`). Loads the checkpoint once; a date is written only when all its members
    are drawn, so an interrupted call loses at most the dates in flight."""
    start, out = time.perf_counter(), Path(out)
    job, run, plan = prepare(job, run_dir, out)
    todo = pending_dates(out, plan, dates)
    skipped = (len(plan.dates) if dates is None else len(dates)) - len(todo)
    if not todo:
        return SampleSummary(out, [], skipped, 0, time.perf_counter() - start, time.perf_counter() - start)
    device = default_device() if device is None else torch.device(device)
    sampler = EnsembleSampler(run, plan, device=device)
    startup = time.perf_counter() - start
    print(f"hpcdiff sample: {len(todo)} date(s) x {plan.members} members ({skipped} done already); "
          f"{plan.sampler} {plan.steps} steps, batch {job.sample.batch_size}, {sampler.precision} on "
          f"{device}; checkpoint {run.checkpoint} (step {run.step})", file=sys.stderr, flush=True)
    attrs = {"checkpoint": plan.checkpoint, "checkpoint_step": plan.checkpoint_step,
             "sampler": plan.sampler, "steps": plan.steps, "seed": plan.seed,
             "precision": sampler.precision, "device": str(device)}
    written = []
    try:
        for date, members in sampler.generate(todo, batch_size=job.sample.batch_size, progress=progress):
            parts.write_part(out, date, members, attrs=attrs)
            written.append(date)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not memory.is_out_of_memory(err):
            raise
        raise memory.sampling_out_of_memory(job, run.spec, precision=sampler.precision, error=err) from err
    finally:
        sampler.close()
    return SampleSummary(out, written, skipped, len(written) * plan.members, startup,
                         time.perf_counter() - start)
