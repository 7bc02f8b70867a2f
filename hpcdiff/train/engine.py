"""DeepSpeed: the one module that imports it.

:func:`init_engine` starts ``torch.distributed`` from a :class:`~hpcdiff.dist.DistEnv` and wraps the
model; the DeepSpeed JSON config comes from :func:`hpcdiff.train.dsconfig.deepspeed_config` (re-exported
here, as are the collective helpers of :mod:`hpcdiff.dist`, for the training loop).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from hpcdiff.dist import DistEnv, all_reduce_sum, barrier
from hpcdiff.errors import HpcdiffError
from hpcdiff.train.dsconfig import deepspeed_config

__all__ = ["all_reduce_sum", "barrier", "deepspeed_config", "engine_dtype", "init_distributed", "init_engine",
           "warmup_cosine"]


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def init_distributed(env: DistEnv) -> None:
    """Start ``torch.distributed`` through DeepSpeed (NCCL on GPUs, gloo on CPU) with the rank and world
    size of ``env`` passed as arguments: :func:`hpcdiff.dist.detect` derived them once, and nothing
    re-reads them from the environment. Only what DeepSpeed takes from the environment and nowhere
    else is exported: the local rank (its engine asserts ``LOCAL_RANK`` for device placement) and the
    rendezvous address (its shared-memory all-reduce names its segment after it)."""
    import deepspeed

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    for key, value in {"LOCAL_RANK": env.local_rank, "LOCAL_WORLD_SIZE": env.local_world_size,
                       "MASTER_ADDR": env.master_addr, "MASTER_PORT": env.master_port}.items():
        os.environ[key] = str(value)
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    host = f"[{env.master_addr}]" if ":" in env.master_addr else env.master_addr  # IPv6 literal
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                               init_method=f"tcp://{host}:{env.master_port}", rank=env.rank,
                               world_size=env.world_size)


def init_engine(model: torch.nn.Module, config: dict[str, Any], *,
                lr_lambda: Any) -> tuple[Any, Any]:
    """Wrap ``model`` in a DeepSpeed engine with a LambdaLR schedule; returns ``(engine, scheduler)``."""
    import deepspeed

    def scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    try:
        engine, _, _, sched = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                   config=config, lr_scheduler=scheduler)
    except (ValueError, AssertionError) as err:
        raise HpcdiffError(f"DeepSpeed rejected the config: {str(err).splitlines()[0]}") from None
    return engine, sched


def engine_dtype(engine: Any) -> torch.dtype:
    """The dtype inputs must have for the wrapped model (bf16 / fp16 parameters, else fp32)."""
    if engine.bfloat16_enabled():
        return torch.bfloat16
    if engine.fp16_enabled():
        return torch.float16
    return torch.float32
