"""``hpcdiff profile train``: short training runs at several rank counts, each submitted exactly as
``hpcdiff submit train`` submits a run (:func:`hpcdiff.launch.submit.submit_train`: the same submitit
executor, batch script and launcher), with DeepSpeed's timers and comms logger switched on through
the job's own ``deepspeed:`` section.

Each point runs in ``PROFILE/points/<mode>-r<ranks>/`` and its ranks' records land in ``ranks.json``
there; a rerun with the same settings reuses finished points and reruns the others.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from hpcdiff.config import to_dict
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file, ensure_writable_dir
from hpcdiff.launch.submit import EXECUTORS, submit_train, wait
from hpcdiff.train.job import TrainJob, batch_arithmetic

MODES = ("weak", "strong")
POINT_MARKER = ".hpcdiff-profile-point"  # a point folder this command created (and may replace)
PROFILE_DEEPSPEED = {"wall_clock_breakdown": True,
                     "comms_logger": {"enabled": True, "prof_all": True, "verbose": False}}


@dataclasses.dataclass(frozen=True)
class TrainProfileOptions:
    mode: str = "both"  # weak | strong | both
    ranks: tuple[int, ...] | None = None
    nodes: tuple[int, ...] | None = None
    steps: int = 10
    warmup: int = 3
    data: str = "synthetic"  # synthetic | dataset
    executor: str = "slurm"
    micro_batch: int | None = None  # weak scaling's fixed micro-batch per rank
    trace_steps: int = 0
    master_addr: str | None = None
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in (*MODES, "both"):
            raise HpcdiffError(f"--mode must be weak, strong or both, got {self.mode!r}")
        if (self.ranks is None) == (self.nodes is None):
            raise HpcdiffError("give either --ranks or --nodes")
        counts = self.ranks or self.nodes or ()
        if not counts or min(counts) < 1:
            raise HpcdiffError(f"rank and node counts must be positive, got {list(counts)}")
        if self.steps < 1 or self.warmup < 0:
            raise HpcdiffError(f"--steps must be >= 1 and --warmup >= 0, got {self.steps}, {self.warmup}")
        if self.data not in ("synthetic", "dataset"):
            raise HpcdiffError(f"--data must be synthetic or dataset, got {self.data!r}")
        if self.executor not in EXECUTORS or self.executor == "debug":
            raise HpcdiffError(f"--executor must be slurm or local, got {self.executor!r}")

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)


@dataclasses.dataclass(frozen=True)
class Point:
    mode: str
    ranks: int
    nodes: int
    tasks_per_node: int
    global_batch: int
    micro_batch: int | None

    @property
    def name(self) -> str:
        return f"{self.mode}-r{self.ranks}"


def layouts(job: TrainJob, opts: TrainProfileOptions) -> list[tuple[int, int, int]]:
    """``(ranks, nodes, tasks per node)`` of every point, from ``--ranks`` or ``--nodes``."""
    per_node = job.slurm.ntasks_per_node
    if opts.nodes is not None:
        if opts.executor == "local" and max(opts.nodes) > 1:
            raise HpcdiffError("the local executor runs on one node; use --ranks, or --executor slurm")
        return [(n * per_node, n, per_node) for n in sorted(set(opts.nodes))]
    out = []
    for r in sorted(set(opts.ranks or ())):
        tasks = r if opts.executor == "local" else min(r, per_node)
        if r % tasks:
            raise HpcdiffError(f"--ranks {r} is not a multiple of slurm.tasks_per_node {per_node}")
        out.append((r, r // tasks, tasks))
    return out


def plan_points(job: TrainJob, opts: TrainProfileOptions) -> list[Point]:
    """Weak: a fixed micro-batch per rank (``--micro-batch``, else ``train.micro_batch``, else the global
    batch over the most ranks). Strong: the job's global batch, split over the ranks (accumulating
    ``train.micro_batch``-sized micro-batches where a rank's share is a multiple of it)."""
    shapes = layouts(job, opts)
    most = max(r for r, _, _ in shapes)
    points = []
    for mode in opts.modes:
        for ranks, nodes, tasks in shapes:
            if mode == "weak":
                micro = opts.micro_batch or job.train.micro_batch or job.train.global_batch // most
                if micro < 1:
                    raise HpcdiffError(f"train.global_batch {job.train.global_batch} is smaller than {most} "
                                       "ranks; give --micro-batch for weak scaling")
                point = Point(mode, ranks, nodes, tasks, micro * ranks, micro)
            else:  # the job's micro-batch where it still divides a rank's share, else the whole share
                share, micro = job.train.global_batch // ranks, job.train.micro_batch
                keep = micro is not None and share >= micro and share % micro == 0
                point = Point(mode, ranks, nodes, tasks, job.train.global_batch, micro if keep else None)
            batch_arithmetic(point_job(job, point, opts).train, ranks)  # refuse before anything runs
            points.append(point)
    return points


def point_job(job: TrainJob, point: Point, opts: TrainProfileOptions) -> TrainJob:
    """The job of one point: its batch and layout (on GPUs one task per GPU), ``warmup + steps`` steps, no
    validation, one final checkpoint, DeepSpeed's timers and comms logger on."""
    steps = opts.warmup + opts.steps
    train = dataclasses.replace(job.train, max_steps=steps, global_batch=point.global_batch,
                                micro_batch=point.micro_batch, log_every=1, val_every=steps, val_batches=0,
                                ckpt_every=steps, keep_last=1, tensorboard=False)
    gpus = point.tasks_per_node if job.slurm.gpus_per_node else 0  # one task per GPU
    slurm = dataclasses.replace(job.slurm, nodes=point.nodes, tasks_per_node=point.tasks_per_node,
                                gpus_per_node=gpus)
    deepspeed = {**job.deepspeed, **PROFILE_DEEPSPEED}
    return dataclasses.replace(job, train=train, slurm=slurm, deepspeed=deepspeed)


def _point_options(opts: TrainProfileOptions, out: Path, point: Point) -> dict[str, Any]:
    trace_dir = str(out / "traces" / point.name) if opts.trace_steps else None
    return {"data": opts.data, "warmup": opts.warmup, "trace_steps": opts.trace_steps, "trace_dir": trace_dir}


def _deadline(job: TrainJob, opts: TrainProfileOptions) -> float:
    return opts.deadline_s if opts.deadline_s else job.slurm.time_limit_min * 60 * 1.5 + 600


def run_point(job: TrainJob, point: Point, out: Path, opts: TrainProfileOptions) -> dict[str, Any]:
    """Run one point (or reuse its finished result); returns ``{"point", "options", "job_id", "records"}``."""
    folder = out / "points" / point.name
    result_path = folder / "ranks.json"
    options = _point_options(opts, out, point)
    want = {"point": dataclasses.asdict(point), "options": options, "steps": opts.steps,
            "job": to_dict(point_job(job, point, opts))}
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if {k: done.get(k) for k in want} == json.loads(json.dumps(want, default=str)):
            print(f"hpcdiff profile: {point.name}: reusing {result_path}", file=sys.stderr, flush=True)
            return done
    if folder.exists():
        if not (folder / POINT_MARKER).is_file():
            raise HpcdiffError(f"{folder}: exists and was not made by hpcdiff profile; choose another --out")
        shutil.rmtree(folder)  # an earlier, unfinished or different point of ours
    ensure_writable_dir(folder)
    (folder / POINT_MARKER).write_text("")
    submitted = submit_train(point_job(job, point, opts), folder / "run", executor=opts.executor,
                             master_addr=opts.master_addr, profile=options)
    results = wait(submitted, deadline_s=_deadline(job, opts))
    records = sorted((r["profile"] for r in results), key=lambda r: r["rank"])
    done = {**want, "job_id": str(submitted.job_id), "records": records}
    with atomic_file(result_path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(done, indent=1, default=str) + "\n")
    return json.loads(result_path.read_text())


def run_points(job: TrainJob, out: Path, opts: TrainProfileOptions) -> list[dict[str, Any]]:
    """Every point, one after another (they would compete for the same nodes)."""
    points = plan_points(job, opts)
    ensure_writable_dir(out)
    done = []
    for i, point in enumerate(points, 1):
        print(f"hpcdiff profile: point {i}/{len(points)}: {point.mode}, {point.ranks} rank(s) on "
              f"{point.nodes} node(s), global batch {point.global_batch}", file=sys.stderr, flush=True)
        done.append(run_point(job, point, out, opts))
    return done


def bucket_bytes(job: TrainJob, grad_bytes_per_element: int) -> int:
    """DeepSpeed's gradient bucket: ``zero_optimization.reduce_bucket_size`` elements (ZeRO 1/2), else the
    engine's non-ZeRO all-reduce bucket of 5e8 elements."""
    zero = job.deepspeed.get("zero_optimization", {})
    elements = zero.get("reduce_bucket_size", 5e8) if job.train.zero_stage > 0 else 5e8
    return int(math.ceil(float(elements))) * grad_bytes_per_element


def overlaps(job: TrainJob) -> bool:
    return job.train.zero_stage == 2 and bool(job.deepspeed.get("zero_optimization", {}).get("overlap_comm"))
