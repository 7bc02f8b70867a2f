"""The points of ``hpcdiff profile train``: layouts from --ranks / --nodes, weak and strong batches, the
job each point runs (its resources and DeepSpeed's instruments)."""

from __future__ import annotations

import pytest
from trainrun import REPO

from hpcdiff.config import load_config
from hpcdiff.errors import HpcdiffError
from hpcdiff.profile.runner import TrainProfileOptions, plan_points, point_job
from hpcdiff.train.job import TrainJob, batch_arithmetic


@pytest.fixture
def gpu_job() -> TrainJob:
    return load_config(TrainJob, REPO / "jobs" / "gpu_train.yaml")  # 4 GPUs/node, global 64, micro 8


def test_nodes_on_a_gpu_cluster_weak_keeps_the_micro_batch_strong_the_global_batch(gpu_job):
    opts = TrainProfileOptions(nodes=(1, 2, 4, 8), executor="slurm")
    points = plan_points(gpu_job, opts)
    assert [(p.mode, p.ranks, p.nodes, p.global_batch) for p in points] == [
        ("weak", 4, 1, 32), ("weak", 8, 2, 64), ("weak", 16, 4, 128), ("weak", 32, 8, 256),
        ("strong", 4, 1, 64), ("strong", 8, 2, 64), ("strong", 16, 4, 64), ("strong", 32, 8, 64)]
    plans = {(p.mode, p.ranks): batch_arithmetic(point_job(gpu_job, p, opts).train, p.ranks) for p in points}
    assert (plans["strong", 4].micro_batch, plans["strong", 4].accum_steps) == (8, 2)
    assert (plans["strong", 32].micro_batch, plans["strong", 32].accum_steps) == (2, 1)
    assert all(plans["weak", r].micro_batch == 8 for r in (4, 8, 16, 32))
    two = point_job(gpu_job, points[1], opts)
    assert (two.slurm.nodes, two.slurm.tasks_per_node, two.slurm.gpus_per_node) == (2, 4, 4)
    assert two.deepspeed["wall_clock_breakdown"] and two.deepspeed["comms_logger"]["prof_all"]
    assert two.train.max_steps == opts.warmup + opts.steps and two.train.val_batches == 0


def test_ranks_below_a_node_use_fewer_tasks_and_gpus(gpu_job):
    opts = TrainProfileOptions(ranks=(1, 2, 8), executor="slurm")
    strong = [p for p in plan_points(gpu_job, opts) if p.mode == "strong"]
    assert [(p.ranks, p.nodes, p.tasks_per_node) for p in strong] == [(1, 1, 1), (2, 1, 2), (8, 2, 4)]
    assert point_job(gpu_job, strong[1], opts).slurm.gpus_per_node == 2  # one task per GPU


def test_rank_counts_that_do_not_fit_are_refused(gpu_job):
    with pytest.raises(HpcdiffError, match="--ranks 6 is not a multiple of slurm.tasks_per_node 4"):
        plan_points(gpu_job, TrainProfileOptions(ranks=(6,), executor="slurm"))
    with pytest.raises(HpcdiffError, match="give either --ranks or --nodes"):
        TrainProfileOptions(ranks=(1,), nodes=(1,))
