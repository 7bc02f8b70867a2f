"""The DeepSpeed JSON config of a training job: pure dict logic, importable without torch or DeepSpeed.

:func:`deepspeed_config` turns a :class:`~hpcdiff.train.job.TrainJob` plus its ``deepspeed:``
pass-through section into DeepSpeed's JSON config (our batch arithmetic, precision, ZeRO stage,
clipping and AdamW as defaults; the user's section wins where it does not contradict the batch
arithmetic). ``hpcdiff submit`` calls it to refuse a bad section before anything is queued; the
training engine (:mod:`hpcdiff.train.engine`) calls it to start DeepSpeed.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from hpcdiff.errors import HpcdiffError
from hpcdiff.train.job import BatchPlan, TrainJob

# Top-level keys DeepSpeed 0.14-0.19 understands. Sub-sections are validated by DeepSpeed itself
# (its pydantic models forbid unknown fields); top-level typos would otherwise be silently ignored.
KNOWN_KEYS = frozenset({
    "optimizer", "scheduler", "fp16", "bf16", "amp", "zero_optimization", "gradient_clipping",
    "steps_per_print", "wall_clock_breakdown", "memory_breakdown", "dump_state",
    "communication_data_type", "prescale_gradients", "gradient_predivide_factor", "sparse_gradients",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "activation_checkpointing",
    "flops_profiler", "comms_logger", "tensorboard", "csv_monitor", "wandb", "checkpoint", "data_types",
    "torch_autocast", "aio", "compile", "timers",
    "elasticity", "autotuning", "disable_allgather", "gradient_allreduce_op", "dataloader_drop_last",
    "seq_parallel_communication_data_type", "data_efficiency", "curriculum_learning", "compression_training",
    "pipeline", "disable_python_gc", "log_level", "graph_harvesting", "zero_allow_comm_data_type_fp32",
    "use_data_before_expert_parallelism", "eigenvalue", "progressive_layer_drop", "nebula",
    "weight_quantization", "hybrid_engine", "mics_shard_size", "mics_hierarchical_params_gather",
})
# Owned by hpcdiff: derived from train.global_batch / micro_batch and the world size.
DERIVED_KEYS = {
    "train_batch_size": "train.global_batch",
    "train_micro_batch_size_per_gpu": "train.micro_batch",
    "gradient_accumulation_steps": "train.global_batch and train.micro_batch",
}


def deepspeed_config(job: TrainJob, plan: BatchPlan, *, on_gpu: bool) -> dict[str, Any]:
    """DeepSpeed JSON for ``job``; raises :class:`HpcdiffError` on an unknown or contradicting key."""
    user = copy.deepcopy(job.deepspeed)
    for key in user:
        if key in DERIVED_KEYS:
            raise HpcdiffError(f"deepspeed.{key} is derived by hpcdiff; set {DERIVED_KEYS[key]} instead")
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1, cutoff=0.6)
            hint = f"; did you mean 'deepspeed.{close[0]}'?" if close else ""
            raise HpcdiffError(f"unknown DeepSpeed key 'deepspeed.{key}'{hint}")
    opt, tr = job.optim, job.train
    config: dict[str, Any] = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.accum_steps,
        "gradient_clipping": opt.grad_clip,
        "steps_per_print": 10**9,  # hpcdiff logs itself
        "zero_optimization": {"stage": tr.zero_stage},
        "bf16": {"enabled": tr.precision == "bf16"},
        "fp16": {"enabled": tr.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "optimizer": {"type": "AdamW", "params": {
            "lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps, "weight_decay": opt.weight_decay,
            # FusedAdam needs a CUDA build; torch's AdamW on CPU avoids a JIT compile.
            "torch_adam": not on_gpu}},
    }
    return _merge(config, user)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out
