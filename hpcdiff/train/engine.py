"""DeepSpeed: the one module that imports it.

:func:`init_engine` starts ``torch.distributed`` from a :class:`~hpcdiff.dist.DistEnv` and wraps the
model; the DeepSpeed JSON config comes from :func:`hpcdiff.train.dsconfig.deepspeed_config` (re-exported
here, as are the collective helpers of :mod:`hpcdiff.dist`, for the training loop).
:func:`engine_state`, :func:`optimizer_state` and :func:`restore_engine` move the engine's training
state (weights, optimizer, LR schedule, step counters) to and from plain tensors and containers that
:mod:`hpcdiff.train.checkpoint` saves and reads back with ``weights_only=True``; DeepSpeed never reads a
checkpoint file itself.
"""

from __future__ import annotations

import enum
import math
import os
from typing import Any

import torch

from hpcdiff.dist import DistEnv, all_reduce_sum, barrier
from hpcdiff.errors import HpcdiffError
from hpcdiff.train.dsconfig import deepspeed_config

__all__ = ["all_reduce_sum", "allreduce_log_ms", "barrier", "comm_log_summary", "deepspeed_config",
           "engine_dtype", "init_distributed", "init_engine", "wall_clock_timers", "warmup_cosine"]

# DeepSpeed's engine timers (``wall_clock_breakdown: true``), accumulated over the micro-steps of one
# optimizer step and read back after it: forward, backward (compute + reduction), backward compute,
# gradient reduction after the backward compute, optimizer step. Milliseconds.
ENGINE_TIMERS = ("fwd", "bwd", "bwd_inner", "bwd_allreduce", "step")


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


# What DeepSpeed's optimizer state dicts hold besides tensors and plain values: the loss-scaler object
# (saved as its attributes, restored into the engine's own scaler) and the parameter slice mappings,
# which only DeepSpeed's universal-checkpoint converter reads (the optimizer rebuilds them itself).
LOSS_SCALER_KEY = "loss_scaler"
DROPPED_OPTIMIZER_KEYS = ("param_slice_mappings",)
STEP_COUNTERS = ("global_steps", "global_samples", "skipped_steps")


def engine_layout(engine: Any) -> dict[str, Any]:
    """What the optimizer state's shape depends on: ZeRO stage, parameter dtype, data-parallel ranks."""
    return {"zero_stage": int(engine.zero_optimization_stage()), "world_size": int(engine.dp_world_size),
            "dtype": str(engine_dtype(engine)).removeprefix("torch.")}


def optimizer_is_partitioned(layout: dict[str, Any]) -> bool:
    """ZeRO 1/2 keep a partition of the optimizer state on each rank; ZeRO 0 replicates it."""
    return layout["zero_stage"] > 0


def engine_state(engine: Any) -> dict[str, Any]:
    """The engine state that is the same on every rank: module weights (training precision, copied out of
    DeepSpeed's flat buffers), LR schedule, DeepSpeed's step counters and the layout."""
    sched = engine.lr_scheduler
    return {"module": {k: v.detach().clone() for k, v in engine.module.state_dict().items()},
            "lr_scheduler": None if sched is None else sched.state_dict(),
            "counters": {name: int(getattr(engine, name)) for name in STEP_COUNTERS},
            "layout": engine_layout(engine)}


def optimizer_state(engine: Any) -> dict[str, Any]:
    """This rank's optimizer state (its ZeRO partition, or the whole state under ZeRO 0) as tensors and
    plain values."""
    _refuse_elastic(engine)
    state = dict(engine.optimizer.state_dict())
    for key in DROPPED_OPTIMIZER_KEYS:
        state.pop(key, None)
    scaler = state.pop(LOSS_SCALER_KEY, None)
    if scaler is not None:
        state[LOSS_SCALER_KEY] = {"class": type(scaler).__name__, "attributes": dict(vars(scaler))}
    return {k: int(v) if isinstance(v, enum.Enum) else v for k, v in state.items()}


def check_layout(engine: Any, saved: dict[str, Any], *, where: str) -> None:
    """Refuse optimizer state written for another ZeRO stage, precision or (ZeRO 1/2) number of ranks."""
    now = engine_layout(engine)
    for key, what in (("zero_stage", "ZeRO stage"), ("dtype", "parameter dtype")):
        if saved[key] != now[key]:
            raise HpcdiffError(f"{where}: checkpoint has {what} {saved[key]}, the job {now[key]}; resume "
                               "with the same train.zero_stage and train.precision")
    if optimizer_is_partitioned(now) and saved["world_size"] != now["world_size"]:
        raise HpcdiffError(f"{where}: ZeRO-{now['zero_stage']} optimizer state is partitioned over "
                           f"{saved['world_size']} ranks; resume with {saved['world_size']} ranks, not "
                           f"{now['world_size']}")


def restore_engine(engine: Any, shared: dict[str, Any], optimizer: dict[str, Any], *, rank: int) -> None:
    """Load :func:`engine_state` and :func:`optimizer_state` back into ``engine`` (after
    :func:`check_layout`), as DeepSpeed's own ``load_checkpoint`` would: module first, then optimizer
    (ZeRO: fp32 master partition too), LR schedule and counters."""
    engine.module.load_state_dict(shared["module"], strict=True)
    _restore_optimizer(engine, optimizer, rank=rank)
    if engine.lr_scheduler is not None:
        engine.lr_scheduler.load_state_dict(shared["lr_scheduler"])
    for name in STEP_COUNTERS:
        setattr(engine, name, int(shared["counters"][name]))


def _restore_optimizer(engine: Any, state: dict[str, Any], *, rank: int) -> None:
    state = dict(state)
    scaler = state.pop(LOSS_SCALER_KEY, None)
    if scaler is not None:  # absent from the dict, the optimizer keeps its own scaler object
        live = engine.optimizer.loss_scaler
        if type(live).__name__ != scaler["class"]:
            raise HpcdiffError(f"the checkpoint's loss scaler ({scaler['class']}) differs from the job's "
                               f"({type(live).__name__}): resume with the same deepspeed.fp16 settings")
        vars(live).update(scaler["attributes"])
    if not engine.zero_optimization():
        if engine.fp16_enabled() or engine.bfloat16_enabled():
            engine.optimizer.load_state_dict(state, load_optimizer_states=True)
        else:
            engine.optimizer.load_state_dict(state)
        return
    _refuse_elastic(engine)
    partitions: list[dict[str, Any] | None] = [None] * int(engine.dp_world_size)
    partitions[rank] = state  # DeepSpeed reads only this rank's entry of a non-elastic checkpoint
    engine.optimizer.load_state_dict(state_dict_list=partitions, load_optimizer_states=True,
                                     load_from_fp32_weights=engine.zero_load_from_fp32_weights(),
                                     checkpoint_folder=None)


def _refuse_elastic(engine: Any) -> None:
    if getattr(engine.optimizer, "elastic_checkpoint", False):
        raise HpcdiffError("deepspeed.zero_optimization.elastic_checkpoint is not supported: hpcdiff "
                           "checkpoints hold each rank's own optimizer partition")


def wall_clock_timers(engine: Any) -> dict[str, float]:
    """The engine's global timers of the optimizer step that just ended (ms, :data:`ENGINE_TIMERS`); the
    engine refreshes them at every accumulation boundary when ``wall_clock_breakdown`` is on."""
    cache = engine.get_wall_clock_timers()
    missing = [name for name in ENGINE_TIMERS if name not in cache]
    if missing:
        raise HpcdiffError(f"DeepSpeed's wall-clock timers lack {missing}: is deepspeed.wall_clock_breakdown "
                           "on?")
    return {name: float(cache[name]) for name in ENGINE_TIMERS}


def allreduce_log_ms() -> tuple[float, int]:
    """Total time (ms) and bytes of every all-reduce DeepSpeed's comms logger has timed so far on this rank
    (``comms_logger: {enabled: true, prof_all: true}``); the difference between two calls is what ran in
    between. The time is the logger's own ``all_reduce`` timer: in DeepSpeed 0.19 the latencies the
    logger records (and ``log_summary`` averages) are that timer's running total, not each call's."""
    from deepspeed.comm import comm as ds_comm

    timer = ds_comm.timers.timers.get("all_reduce")
    total_ms = float(timer.elapsed(reset=False)) if timer is not None else 0.0
    total_bytes = sum(int(size) * int(entry[0]) for name, sizes in ds_comm.comms_logger.comms_dict.items()
                      if name.startswith("all_reduce") for size, entry in sizes.items())
    return total_ms, total_bytes


def comm_log_summary() -> dict[str, Any] | None:
    """DeepSpeed's own communication summary (printed on rank 0; a collective: every rank calls it)."""
    import deepspeed.comm as ds_comm

    return ds_comm.log_summary(return_dict=True)
