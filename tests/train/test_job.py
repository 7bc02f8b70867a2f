"""Training job config: batch arithmetic and the DeepSpeed config built from it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpcdiff.config import load_config
from hpcdiff.errors import HpcdiffError
from hpcdiff.train.engine import deepspeed_config, warmup_cosine
from hpcdiff.train.job import DataSection, TrainJob, TrainSection, batch_arithmetic

REPO = Path(__file__).resolve().parents[2]


def job(**train) -> TrainJob:
    return TrainJob(data=DataSection(dataset=Path("ds")), train=TrainSection(**train))


@pytest.mark.parametrize(
    ("global_batch", "micro", "world", "expected"),
    [(16, None, 1, (16, 1)), (16, 4, 1, (4, 4)), (16, 4, 2, (4, 2)), (16, None, 4, (4, 1)),
     (8, 2, 2, (2, 2))],
)
def test_batch_arithmetic(global_batch, micro, world, expected):
    plan = batch_arithmetic(TrainSection(global_batch=global_batch, micro_batch=micro), world)
    assert (plan.micro_batch, plan.accum_steps) == expected
    assert plan.micro_batch * plan.accum_steps * plan.world_size == global_batch
    assert plan.describe().startswith(f"global batch {global_batch} = micro-batch {expected[0]} x accum")


@pytest.mark.parametrize(("global_batch", "micro", "world", "pattern"), [
    (10, None, 4, "not divisible by the world size 4"),
    (16, 3, 2, "8 per rank is not a multiple of train.micro_batch 3"),
    (2, None, 4, "not divisible"),
])
def test_impossible_batch_arithmetic(global_batch, micro, world, pattern):
    with pytest.raises(HpcdiffError, match=pattern):
        batch_arithmetic(TrainSection(global_batch=global_batch, micro_batch=micro), world)


def test_deepspeed_config_defaults_and_passthrough():
    j = TrainJob(data=DataSection(dataset=Path("ds")), train=TrainSection(global_batch=16, micro_batch=2,
                                                                          precision="fp16", zero_stage=2),
                 deepspeed={"zero_optimization": {"overlap_comm": True}, "wall_clock_breakdown": True})
    cfg = deepspeed_config(j, batch_arithmetic(j.train, 2), on_gpu=False)
    batch_keys = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
    assert tuple(cfg[k] for k in batch_keys) == (16, 2, 4)
    assert cfg["zero_optimization"] == {"stage": 2, "overlap_comm": True}
    assert cfg["fp16"]["enabled"] and not cfg["bf16"]["enabled"]
    assert cfg["optimizer"]["params"]["torch_adam"] is True
    assert cfg["wall_clock_breakdown"] is True


@pytest.mark.parametrize(("section", "pattern"), [
    ({"zero_optimisation": {"stage": 1}}, "unknown DeepSpeed key 'deepspeed.zero_optimisation'; did you mean "
                                          "'deepspeed.zero_optimization'"),
    ({"train_batch_size": 32}, "deepspeed.train_batch_size is derived by hpcdiff; set train.global_batch"),
])
def test_bad_deepspeed_section(section, pattern):
    j = TrainJob(data=DataSection(dataset=Path("ds")), deepspeed=section)
    with pytest.raises(HpcdiffError, match=pattern):
        deepspeed_config(j, batch_arithmetic(j.train, 1), on_gpu=False)


def test_warmup_cosine_shape():
    kw = {"warmup_steps": 10, "max_steps": 110, "min_ratio": 0.1}
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(9, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)
    values = [warmup_cosine(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_shipped_gpu_job_loads():
    j = load_config(TrainJob, REPO / "jobs" / "gpu_train.yaml")
    assert (j.slurm.nodes, j.slurm.ntasks_per_node, j.model.preset) == (2, 4, "base")
    assert batch_arithmetic(j.train, 8).accum_steps == 1


def test_train_section_validation():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainSection(ema_decay=1.0)
