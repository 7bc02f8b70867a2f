"""A trained run as sampling needs it: the chosen checkpoint's ``state.pt`` (EMA weights, model spec,
resolved training config, dataset manifest), the dataset the conditions come from, the network with
the EMA weights, the (respaced) diffusion, and the inference precision.

:func:`open_run` reads ``state.pt`` once; everything else is derived from what it returns, so an array
task loads its checkpoint exactly once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hpcdiff.config import from_dict
from hpcdiff.data.shards import read_manifest
from hpcdiff.diffusion.gaussian import GaussianDiffusion
from hpcdiff.diffusion.samplers import DEFAULT_STEPS, SAMPLERS
from hpcdiff.diffusion.schedules import respaced_timesteps
from hpcdiff.errors import HpcdiffError
from hpcdiff.models import build_model
from hpcdiff.sample.job import SampleJob, SamplerSection
from hpcdiff.train import checkpoint as ckpt
from hpcdiff.train.job import TrainJob

NORMALIZATION_KEYS = ("name", "transform", "scale", "mean", "std")
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What one checkpoint of ``run_dir`` gives sampling. ``state`` is its ``state.pt``."""

    run_dir: Path
    checkpoint: Path
    state: dict[str, Any]
    train_job: TrainJob
    dataset: Path

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def manifest(self) -> dict[str, Any]:
        """The training dataset's manifest, as the run saw it (the normalization it was trained with)."""
        return self.state["manifest"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.state["model_spec"]


def resolve_checkpoint(run_dir: Path, which: str) -> Path:
    """``latest`` -> the newest complete checkpoint of ``RUN/checkpoints``; a name there; or a path."""
    root = Path(run_dir) / "checkpoints"
    if which == "latest":
        found = ckpt.latest(root)
        if found is None:
            raise HpcdiffError(f"{run_dir}: no complete checkpoint under {root}; train first")
        return found.resolve()
    for candidate in (Path(which), root / which):
        if (candidate / "state.pt").is_file():
            return candidate.resolve()
    raise HpcdiffError(f"sample.checkpoint {which!r}: no such checkpoint (no state.pt there or under {root})")


def open_run(job: SampleJob, run_dir: Path) -> tuple[SampleJob, TrainedRun]:
    """Load the checkpoint ``job`` names and find its dataset. Returns the job with the checkpoint and
    the dataset made absolute (so array tasks started later use the same ones), and the run."""
    path = resolve_checkpoint(run_dir, job.sample.checkpoint)
    state = ckpt.load_state(path)
    train_job = from_dict(TrainJob, state["config"], where=f"{path}/state.pt config")
    dataset = Path(job.dataset if job.dataset is not None else train_job.data.dataset).resolve()
    run = TrainedRun(run_dir=Path(run_dir).resolve(), checkpoint=path, state=state, train_job=train_job,
                     dataset=dataset)
    check_dataset(run, read_manifest(dataset))
    resolved = dataclasses.replace(job, dataset=dataset,
                                   sample=dataclasses.replace(job.sample, checkpoint=str(path)))
    return resolved, run


def _normalization(manifest: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    return [{k: c.get(k, c.get("stats", {}).get(k)) for k in NORMALIZATION_KEYS} for c in manifest[key]]


def check_dataset(run: TrainedRun, manifest: Mapping[str, Any]) -> None:
    """The dataset must hold the channels the network was trained on, normalized with the same statistics
    (else the conditions would be silently mis-scaled), on a grid of the trained shape."""
    for key in ("targets", "conditions", "static_channels"):
        if _normalization(manifest, key) != _normalization(run.manifest, key):
            raise HpcdiffError(f"{run.dataset}: its {key} (names or normalization statistics) differ from "
                               f"those run {run.run_dir} was trained with; use the training dataset or one "
                               "preprocessed with the same statistics")
    if list(manifest["grid"]["shape"]) != list(run.spec["image_shape"]):
        raise HpcdiffError(f"{run.dataset}: grid {manifest['grid']['shape']} differs from the trained "
                           f"image shape {run.spec['image_shape']}")


def resolved_steps(section: SamplerSection, train_job: TrainJob) -> int:
    """The number of sampler steps: the config's, else the sampler's default, else the trained T."""
    if section.sampler not in SAMPLERS:
        raise HpcdiffError(f"sample.sampler {section.sampler!r} is not a sampler; valid: "
                           f"{', '.join(SAMPLERS)}")
    if section.eta != 0.0 and section.sampler != "ddim":
        raise HpcdiffError(f"sample.eta is a DDIM parameter; got eta={section.eta} with {section.sampler!r}")
    steps = section.steps if section.steps is not None else DEFAULT_STEPS[section.sampler]
    total = train_job.diffusion.num_steps
    steps = total if steps is None else steps
    if steps > total:
        raise HpcdiffError(f"sample.steps {steps} exceeds the trained schedule's {total} steps")
    return steps


def sampling_diffusion(train_job: TrainJob, *, steps: int, spacing: str) -> GaussianDiffusion:
    """The trained diffusion, respaced to ``steps`` (once per task, not per batch)."""
    from hpcdiff.train.loop import build_diffusion  # the one definition of the trained diffusion

    diffusion = build_diffusion(train_job)
    if steps == diffusion.num_steps:
        return diffusion
    return diffusion.respace(respaced_timesteps(diffusion.alpha_bar, steps, spacing=spacing))


def load_network(run: TrainedRun, *, device: torch.device) -> torch.nn.Module:
    """The network with the checkpoint's EMA weights (fp32), in eval mode on ``device``."""
    spec = run.spec
    model = build_model(spec["preset"], target_channels=spec["target_channels"],
                        cond_channels=spec["cond_channels"], learn_sigma=spec["learn_sigma"],
                        model=spec.get("model", "unet"))
    model.load_state_dict(run.state["ema"])
    return model.to(device).eval()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain fp32). ``auto``: bf16 on a GPU
    that supports it, else fp16 on a GPU, fp32 on CPU."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return torch.bfloat16 if bf16 else torch.float16
        if precision == "bf16" and not bf16:
            raise HpcdiffError(f"sample.precision bf16: {torch.cuda.get_device_name(device)} has no bf16; "
                               "use fp16 or auto")
    elif precision == "auto":
        return None
    return AUTOCAST[precision]


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
