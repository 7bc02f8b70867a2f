"""Projecting a measured step to 1 ... 1024 GPUs: a ring all-reduce of gradient buckets on an interconnect.

The model, in the symbols of the docs (``docs/performance_scaling.md``):

* ring all-reduce of ``S`` bytes over ``p`` ranks: ``t = 2 (p - 1) α + 2 (p - 1) / p · S · β`` with ``α``
  the latency of one ring step (s) and ``β`` the time per byte on the slowest link of the ring (s/B);
* the gradient (``parameters x gradient bytes``) is reduced in buckets of ``bucket_bytes``; each bucket is
  one all-reduce;
* within a node, ``α`` and ``β`` are the intra-node link's; across nodes every ring step crosses (or
  waits for) the network, so ``α`` is the network's, and ``β`` the slower of the intra-node link and the
  node's network bandwidth (all its NICs: NCCL runs one ring per NIC);
* a step is ``accum x micro x (forward + backward + other per sample) + optimizer + exposed
  communication``, with every term measured on the smallest point. Without overlap (DeepSpeed's
  ZeRO-0 and ZeRO-1 reduce after the backward pass) all communication is exposed; with overlap
  (ZeRO-2 ``overlap_comm``) it hides behind the last micro-step's backward, except the last bucket.
  Under ZeRO 1/2 the optimizer step is split over the ranks; its reduce-scatter plus all-gather move
  the same bytes as the all-reduce, so the communication term stays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from hpcdiff.config import from_dict, read_yaml
from hpcdiff.errors import HpcdiffError
from hpcdiff.profile.commfit import AlphaBeta

GPU_COUNTS = tuple(2**k for k in range(11))  # 1 ... 1024
TARGET_EFFICIENCY = 0.9


def ring_allreduce_s(size_bytes: float, ranks: int, *, alpha_s: float, beta_s_per_byte: float) -> float:
    """Time of one ring all-reduce (0 on one rank)."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) * alpha_s + 2.0 * (ranks - 1) / ranks * size_bytes * beta_s_per_byte


def buckets(total_bytes: int, bucket_bytes: int) -> list[int]:
    """Sizes of the buckets a gradient of ``total_bytes`` is reduced in (the last one holds the rest)."""
    if bucket_bytes <= 0 or total_bytes <= 0:
        raise ValueError("bucket and gradient sizes must be positive")
    full, rest = divmod(total_bytes, bucket_bytes)
    return [bucket_bytes] * full + ([rest] if rest else [])


@dataclasses.dataclass(frozen=True)
class Link:
    latency_us: float  # one ring step
    bandwidth_gb_per_s: float  # per rank (intra-node) or per NIC (inter-node), 1 GB = 1e9 bytes
    links: int = 1  # NICs per node (inter-node)

    def __post_init__(self) -> None:
        if not (self.latency_us >= 0 and self.bandwidth_gb_per_s > 0 and self.links >= 1):
            raise ValueError("latency_us must be >= 0, bandwidth_gb_per_s > 0 and links >= 1")


@dataclasses.dataclass(frozen=True)
class Interconnect:
    """A cluster's all-reduce fabric (``hpcdiff/profile/interconnects/*.yaml``)."""

    name: str
    gpus_per_node: int
    intra_node: Link
    inter_node: Link
    description: str = ""

    def alpha_beta(self, ranks: int) -> tuple[float, float]:
        """Ring-step latency (s) and time per byte (s/B) for an all-reduce over ``ranks``."""
        intra_beta = 1.0 / (self.intra_node.bandwidth_gb_per_s * 1e9)
        if ranks <= self.gpus_per_node:
            return self.intra_node.latency_us * 1e-6, intra_beta
        net_beta = 1.0 / (self.inter_node.bandwidth_gb_per_s * self.inter_node.links * 1e9)
        return self.inter_node.latency_us * 1e-6, max(intra_beta, net_beta)

    @classmethod
    def from_fit(cls, fit: AlphaBeta, *, name: str = "measured") -> Interconnect:
        """A flat fabric with the ring parameters behind a measured α–β fit, at every rank count."""
        alpha, beta = fit.per_hop()
        link = Link(latency_us=alpha * 1e6, bandwidth_gb_per_s=1.0 / beta / 1e9 if beta > 0 else float("inf"))
        return cls(name=name, gpus_per_node=10**9, intra_node=link, inter_node=link,
                   description=f"fitted on {fit.ranks} ranks (residual {fit.residual:.1%})")


def shipped_interconnects() -> list[str]:
    folder = resources.files("hpcdiff.profile") / "interconnects"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_interconnect(name_or_path: str) -> Interconnect:
    """A shipped profile by name (``4gpu-nvlink-ib200``) or a YAML file of the same shape."""
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path not in shipped_interconnects():
            raise HpcdiffError(f"{name_or_path}: no such interconnect file or shipped profile (shipped: "
                               f"{', '.join(shipped_interconnects())})")
        path = Path(str(resources.files("hpcdiff.profile") / "interconnects" / f"{name_or_path}.yaml"))
    return from_dict(Interconnect, read_yaml(path), where=str(path))


@dataclasses.dataclass(frozen=True)
class StepModel:
    """Per-sample compute and per-step costs (s), measured on one point, and the gradient's size."""

    forward_s_per_sample: float
    backward_s_per_sample: float
    other_s_per_sample: float  # data wait + the loop's own work (loss, noise, EMA)
    optimizer_s: float
    grad_bytes: int
    bucket_bytes: int
    overlap: bool = False
    shard_optimizer: bool = False  # ZeRO 1/2: each rank steps 1/p of the optimizer state
    def comm_s(self, ranks: int, ic: Interconnect) -> tuple[float, float]:
        """``(all communication, last bucket)`` of one step's gradient reduction, s."""
        alpha, beta = ic.alpha_beta(ranks)
        times = [ring_allreduce_s(b, ranks, alpha_s=alpha, beta_s_per_byte=beta)
                 for b in buckets(self.grad_bytes, self.bucket_bytes)]
        return sum(times), times[-1]

    def predict(self, ranks: int, *, micro_batch: float, accum_steps: int,
                ic: Interconnect) -> dict[str, float]:
        """Step time, exposed communication and throughput at ``ranks``."""
        comm, last = self.comm_s(ranks, ic)
        backward = micro_batch * self.backward_s_per_sample  # the last micro-step's, which overlap can use
        exposed = max(last, comm - backward) if self.overlap else comm
        per_rank = micro_batch * accum_steps
        per_sample = self.forward_s_per_sample + self.backward_s_per_sample + self.other_s_per_sample
        optimizer = self.optimizer_s / ranks if self.shard_optimizer else self.optimizer_s
        step = per_rank * per_sample + optimizer + exposed
        return {"step_s": step, "comm_s": comm, "exposed_s": exposed,
                "samples_per_s": ranks * per_rank / step}


@dataclasses.dataclass(frozen=True)
class Setting:
    """What one scaling curve holds fixed: weak: the micro-batch per rank; strong: the global batch."""

    mode: str  # "weak" | "strong"
    micro_batch: int
    accum_steps: int = 1
    global_batch: int = 0  # strong only

    def batch_at(self, ranks: int) -> tuple[float, int] | None:
        """``(micro_batch, accum_steps)`` at ``ranks``; ``None`` where a strong global batch no longer
        gives every rank a sample."""
        if self.mode == "weak":
            return float(self.micro_batch), self.accum_steps
        per_rank = self.global_batch / ranks
        if per_rank < 1:
            return None
        accum = max(1, math.ceil(per_rank / self.micro_batch))
        return per_rank / accum, accum


def project(model: StepModel, setting: Setting, ic: Interconnect,
            gpu_counts: Sequence[int] = GPU_COUNTS) -> list[dict[str, Any]]:
    """One row per GPU count: step time, communication, samples/s and efficiency against 1 GPU."""
    one = setting.batch_at(1)
    assert one is not None
    base = model.predict(1, micro_batch=one[0], accum_steps=one[1], ic=ic)["samples_per_s"]
    rows = []
    for p in gpu_counts:
        batch = setting.batch_at(p)
        if batch is None:
            break
        pred = model.predict(p, micro_batch=batch[0], accum_steps=batch[1], ic=ic)
        rows.append({"mode": setting.mode, "interconnect": ic.name, "gpus": p,
                     "nodes": math.ceil(p / ic.gpus_per_node) if ic.gpus_per_node < 10**9 else 1,
                     "micro_batch": batch[0], "accum_steps": batch[1],
                     "global_batch": batch[0] * batch[1] * p, "step_ms": pred["step_s"] * 1e3,
                     "comm_ms": pred["comm_s"] * 1e3, "exposed_comm_ms": pred["exposed_s"] * 1e3,
                     "samples_per_s": pred["samples_per_s"],
                     "efficiency": pred["samples_per_s"] / (p * base)})
    return rows


def first_below(rows: Sequence[dict[str, Any]], target: float = TARGET_EFFICIENCY) -> dict[str, Any] | None:
    return next((r for r in rows if r["efficiency"] < target), None)


def remedies(model: StepModel, setting: Setting, ic: Interconnect, gpus: int) -> list[tuple[str, float]]:
    """Efficiency at ``gpus`` under each change that could lift it, best first."""
    replace = dataclasses.replace
    options: list[tuple[str, StepModel, Setting]] = [
        ("bucket size x4", replace(model, bucket_bytes=model.bucket_bytes * 4), setting),
        ("overlap the reduction with backward (ZeRO-2 overlap_comm)", replace(model, overlap=True), setting),
        ("ZeRO-1 (the optimizer step split over the ranks)", replace(model, shard_optimizer=True), setting)]
    if setting.mode == "weak":
        options += [(f"accumulation steps x{k}", model, replace(setting, accum_steps=setting.accum_steps * k))
                    for k in (2, 4, 8)]
        options += [("micro-batch x2", model, replace(setting, micro_batch=setting.micro_batch * 2))]
    else:
        options += [("global batch x4", model, replace(setting, global_batch=setting.global_batch * 4))]
    out = []
    for label, m, s in options:
        row = next((r for r in project(m, s, ic, [gpus]) if r["gpus"] == gpus), None)
        if row is not None:
            out.append((label, row["efficiency"]))
    return sorted(out, key=lambda x: -x[1])


def advice(model: StepModel, setting: Setting, ic: Interconnect, rows: Sequence[dict[str, Any]]) -> str:
    """One sentence: where efficiency falls below 90 % and what lifts it there."""
    below = first_below(rows)
    if below is None:
        return (f"{setting.mode}, {ic.name}: efficiency stays at or above {TARGET_EFFICIENCY:.0%} up to "
                f"{rows[-1]['gpus']} GPUs")
    found = remedies(model, setting, ic, below["gpus"])
    lifts = [f"{label} ({eff:.0%})" for label, eff in found if eff >= TARGET_EFFICIENCY]
    text = (f"{setting.mode}, {ic.name}: efficiency falls below {TARGET_EFFICIENCY:.0%} at {below['gpus']} "
            f"GPUs ({below['efficiency']:.0%}; per step {below['step_ms']:.1f} ms, of which exposed "
            f"all-reduce {below['exposed_comm_ms']:.1f} ms and the fixed optimizer step "
            f"{model.optimizer_s * 1e3:.1f} ms); ")
    if lifts:
        return text + "lifted there by: " + ", ".join(lifts)
    best = ", ".join(f"{label} ({eff:.0%})" for label, eff in found[:2])
    return text + f"no single change reaches {TARGET_EFFICIENCY:.0%}; best: {best}"
