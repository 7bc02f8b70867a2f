"""A trained run as sampling needs it: the chosen checkpoint's ``state.pt`` (EMA weights, the run spec,
the training dataset's manifest), the dataset the conditions come from, the network with the EMA
weights, and the inference precision.

:func:`open_run` reads ``state.pt`` once; everything else is built from its
:class:`~hpcdiff.runspec.RunSpec`, so an array task loads its checkpoint exactly once and nothing is
re-derived from the training job's YAML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hpcdiff.data.manifest import Manifest, parse_manifest, read_manifest
from hpcdiff.diffusion.samplers import DEFAULT_STEPS, SAMPLERS
from hpcdiff.errors import HpcdiffError
from hpcdiff.models.denoiser import Denoiser
from hpcdiff.runspec import AutoencoderSpec, RunSpec, spec_from_state
from hpcdiff.sample.job import SampleJob, SamplerSection
from hpcdiff.train import checkpoint as ckpt

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What one checkpoint of ``run_dir`` gives sampling. ``state`` is its ``state.pt``; ``manifest`` the
    training dataset's, as the run saw it (the normalization it was trained with); ``dataset`` the
    dataset the conditions are read from."""

    run_dir: Path
    checkpoint: Path
    checkpoint_sha256: str
    state: dict[str, Any]
    spec: RunSpec
    manifest: Manifest
    dataset: Path

    @property
    def step(self) -> int:
        return int(self.state["step"])


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
    state = ckpt.load_state(path)  # verified against checksums.json: its recorded hash is the file's
    where = f"{path}/state.pt"
    spec = spec_from_state(state.get("run_spec"), where=where)
    if isinstance(spec, AutoencoderSpec):
        raise HpcdiffError(f"{run_dir} is an autoencoder run; it encodes datasets (hpcdiff encode), it does "
                           "not sample")
    trained_on = Path(state["config"]["data"]["dataset"])
    manifest = parse_manifest(state["manifest"], root=trained_on)
    # a latent run samples with a pixel dataset's conditions: by default the one its latents encode
    default = trained_on if manifest.latent is None else Path(manifest.latent.source_dataset)
    dataset = Path(job.dataset if job.dataset is not None else default).resolve()
    run = TrainedRun(run_dir=Path(run_dir).resolve(), checkpoint=path,
                     checkpoint_sha256=ckpt.read_checksums(path)[ckpt.STATE], state=state, spec=spec,
                     manifest=manifest, dataset=dataset)
    check_dataset(run, read_manifest(dataset))
    check_weights(spec, state["ema"], where=where)
    if spec.latent is not None:
        if not isinstance(state.get("autoencoder"), dict):
            raise HpcdiffError(f"{where}: a latent run's checkpoint without the autoencoder's weights")
        check_state_dict(spec.latent.autoencoder_spec().build_model, state["autoencoder"],
                         where=f"{where} (autoencoder)")
    resolved = dataclasses.replace(job, dataset=dataset,
                                   sample=dataclasses.replace(job.sample, checkpoint=str(path)))
    return resolved, run


def check_dataset(run: TrainedRun, manifest: Manifest) -> None:
    """The dataset must hold the channels the network was trained on, normalized with the same statistics
    (else the conditions would be silently mis-scaled), on a grid of the trained shape."""
    latent = run.spec.latent
    if latent is not None and manifest.latent is not None:
        raise HpcdiffError(f"{run.dataset}: a latent dataset; run {run.run_dir} samples latents from the "
                           f"conditions of a pixel dataset, e.g. the one they encode "
                           f"({manifest.latent.source_dataset})")
    fingerprint = run.spec.normalization if latent is None else latent.normalization
    if manifest.fingerprint() != fingerprint:
        raise HpcdiffError(f"{run.dataset}: its channels or normalization statistics differ from those run "
                           f"{run.run_dir} was trained with; use the training dataset or one preprocessed "
                           "with the same statistics")
    if tuple(manifest.grid.shape) != tuple(run.spec.output_shape):
        raise HpcdiffError(f"{run.dataset}: grid {list(manifest.grid.shape)} differs from the trained "
                           f"image shape {list(run.spec.output_shape)}")


def check_weights(spec: RunSpec, ema: Any, *, where: str) -> None:
    """Refuse EMA weights that do not fit ``spec`` before anything is written (a plan naming this checkpoint
    would block the rerun with a good one). Names and shapes are compared with the spec's network built
    on the meta device: no memory, no initialization."""
    check_state_dict(spec.build_model, ema, where=where)


def check_state_dict(build: Callable[[], torch.nn.Module], weights: Any, *, where: str) -> None:
    """Refuse ``weights`` whose names and shapes differ from those of the network ``build()`` makes (built on
    the meta device)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in weights.items()} if isinstance(weights, dict) else {}
    missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    wrong = [k for k in expected if k in got and got[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    if wrong:
        detail = f"{wrong[0]} is {list(got[wrong[0]])}, the spec's {list(expected[wrong[0]])}"
    else:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
    count = len(missing) + len(unexpected) + len(wrong)
    raise HpcdiffError(f"{where}: EMA weights do not fit the run spec ({count} tensor(s) differ; {detail})")


def resolved_steps(section: SamplerSection, spec: RunSpec) -> int:
    """The number of sampler steps: the config's, else the sampler's default, else the trained T."""
    if section.sampler not in SAMPLERS:
        raise HpcdiffError(f"sample.sampler {section.sampler!r} is not a sampler; valid: "
                           f"{', '.join(SAMPLERS)}")
    if section.eta != 0.0 and section.sampler != "ddim":
        raise HpcdiffError(f"sample.eta is a DDIM parameter; got eta={section.eta} with {section.sampler!r}")
    steps = section.steps if section.steps is not None else DEFAULT_STEPS[section.sampler]
    total = spec.diffusion.num_steps
    steps = total if steps is None else steps
    if steps > total:
        raise HpcdiffError(f"sample.steps {steps} exceeds the trained schedule's {total} steps")
    return steps


def load_network(run: TrainedRun, *, device: torch.device) -> Denoiser:
    """The run's denoiser with the checkpoint's EMA weights (fp32, checked by :func:`check_weights` when
    the run was opened), in eval mode on ``device``."""
    model = run.spec.build_model()
    model.load_state_dict(run.state["ema"])
    return model.to(device).eval()


def load_autoencoder(run: TrainedRun, *, device: torch.device) -> torch.nn.Module:
    """A latent run's autoencoder with the weights its checkpoint carries (fp32, eval mode, on ``device``)."""
    model = run.spec.latent.autoencoder_spec().build_model()
    model.load_state_dict(run.state["autoencoder"])
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
