"""The run contract: one typed :class:`RunSpec` describes what a trained run *is*.

Training derives it from the job and the dataset's manifest (:meth:`RunSpec.from_job`) and saves it in
every checkpoint; sampling, evaluation, profiling and the tools read it back
(:meth:`RunSpec.from_state`) and build everything from it: the network (:meth:`RunSpec.build_model`, a
:class:`~hpcdiff.models.denoiser.Denoiser` around a backbone from the registry
:data:`hpcdiff.models.BACKBONES`) and the diffusion (:meth:`RunSpec.build_diffusion`, respaced for
sampling). Nothing downstream re-derives a run from the job's YAML or the manifest's JSON.

A run is of one of two kinds (the job's ``model.kind``, the spec's ``kind``): a conditional diffusion
model (:class:`RunSpec`) or the autoencoder of latent diffusion (:class:`AutoencoderSpec`, built from
:data:`hpcdiff.models.AUTOENCODER_PRESETS`), which reads targets only and has no diffusion. The two are
separate classes, so every reader of ``spec.diffusion`` holds a diffusion run by its type;
:func:`spec_from_job` and :func:`spec_from_state` choose the class by the kind, for the stages that take
either (training, resume, the memory estimate).

A resumed run must have the same spec as the job it resumes (:meth:`RunSpec.mismatch`: a run of the
other kind differs in ``kind`` alone); a dataset used for sampling must have the same normalization
fingerprint (:meth:`hpcdiff.data.manifest.Manifest.fingerprint`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from hpcdiff.config import from_dict, to_dict
from hpcdiff.data.context import ContextSelection, require_context
from hpcdiff.data.loader import condition_names
from hpcdiff.data.manifest import Manifest
from hpcdiff.data.residual import Residual, residual_from_manifest
from hpcdiff.data.windows import check_patch
from hpcdiff.diffusion.gaussian import GaussianDiffusion
from hpcdiff.diffusion.schedules import make_betas, respaced_timesteps
from hpcdiff.errors import HpcdiffError
from hpcdiff.models import (
    architecture_of,
    autoencoder_config,
    build_autoencoder,
    build_backbone,
    preset_config,
)
from hpcdiff.models.autoencoder import Autoencoder, AutoencoderConfig, latent_shape
from hpcdiff.models.denoiser import Denoiser

SPEC_VERSION = 1
S = TypeVar("S", bound="SpecState")


def context_spec(section: Any, manifest: Manifest, *, where: str) -> ContextSpec | None:
    """The :class:`ContextSpec` of a job's ``context:`` section (:class:`hpcdiff.train.job.ContextJobSection`)
    on the dataset ``manifest``; ``None`` when the job reads no context. One-line errors when the dataset
    does not hold the days asked for."""
    if not section.temporal and not section.spatial:
        return None
    info = require_context(manifest.context, temporal=section.temporal, spatial=section.spatial, where=where)
    channels = len(info.box_variables) * len(section.spatial)
    return ContextSpec(temporal=list(section.temporal), spatial=list(section.spatial), inject=section.inject,
                       channels=channels, box_shape=info.box_shape if section.spatial else None)


@dataclasses.dataclass(frozen=True)
class DiffusionSpec:
    """The trained diffusion: schedule, number of steps, variance and loss."""

    schedule: Literal["cosine", "linear"] = "cosine"
    num_steps: int = 1000
    var_type: Literal["learned_range", "fixed_small", "fixed_large"] = "learned_range"
    loss: Literal["hybrid", "simple", "vlb"] = "hybrid"
    vlb_weight: float = 0.001

    @property
    def learn_sigma(self) -> bool:
        return self.var_type == "learned_range"


@dataclasses.dataclass(frozen=True)
class ResidualSpec:
    """``x_0 = (target - (a · cond[:, index] + b)) / scale`` (see :mod:`hpcdiff.data.residual`)."""

    index: list[int]
    a: list[float]
    b: list[float]
    scale: list[float]

    def residual(self) -> Residual:
        return Residual.from_state(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class ContextSpec:
    """The context a run reads (:mod:`hpcdiff.data.context`): the neighbouring days ``temporal`` whose
    conditions are extra channels, the days ``spatial`` whose box the context encoder reads
    (``channels`` = box variables x days, on the box grid ``box_shape``), and how the encoder's output
    enters the network (``inject``)."""

    temporal: list[int]
    spatial: list[int]
    inject: Literal["embedding", "features", "both"]
    channels: int
    box_shape: tuple[int, int] | None = None

    @property
    def selection(self) -> ContextSelection:
        return ContextSelection(temporal=tuple(self.temporal), spatial=tuple(self.spatial))


@dataclasses.dataclass(frozen=True)
class LatentSpec:
    """Diffusion in an autoencoder's latent space (a run trained on a latent dataset, :mod:`hpcdiff.data.
    latent`): the run's ``targets`` / ``image_shape`` are the latents and their grid; sampling draws
    latents, maps them back to the encoder's scale (``z = x · std + mean``, per channel) and decodes them
    with the autoencoder onto the pixel grid ``image_shape`` of the pixel ``targets``. ``normalization``:
    the fingerprint of the pixel datasets whose conditions (brought to the latent grid,
    :func:`~hpcdiff.data.latent.block_mean`) sampling reads; ``autoencoder``: the autoencoder's run spec
    state; ``autoencoder_sha256``: of the latent dataset's ``autoencoder.pt`` the run's copy of its weights
    came from; ``baseline``: the pixel dataset's residual map whose ERA5 baseline of the targets, encoded
    and normalized like the latents, follows the block-mean conditions (``None``: encoded without it)."""

    factor: int
    image_shape: tuple[int, int]
    targets: list[str]
    normalization: str
    mean: list[float]
    std: list[float]
    autoencoder: dict[str, Any]
    autoencoder_sha256: str
    baseline: ResidualSpec | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> LatentSpec:
        info = manifest.latent
        baseline = None if info.baseline is None else ResidualSpec(**{
            k: list(info.baseline[k]) for k in ("index", "a", "b", "scale")})
        return cls(factor=info.factor, image_shape=info.source_shape, targets=info.target_names,
                   normalization=info.source_fingerprint, mean=[c.stats.mean for c in manifest.targets],
                   std=[c.stats.std for c in manifest.targets], autoencoder=dict(info.autoencoder["spec"]),
                   autoencoder_sha256=info.file_sha256, baseline=baseline)

    def autoencoder_spec(self) -> AutoencoderSpec:
        return AutoencoderSpec.from_state(self.autoencoder, where="run spec latent.autoencoder")


def latent_spec(job: Any, manifest: Manifest) -> LatentSpec | None:
    """The :class:`LatentSpec` of a job on ``manifest`` (``None`` for a pixel dataset); one-line errors for
    what latent runs do not support."""
    if manifest.latent is None:
        return None
    where = f"{job.data.dataset} (a latent dataset)"
    if job.diffusion.residual and manifest.latent.baseline is None:
        raise HpcdiffError(f"{where}: diffusion.residual needs ERA5 counterparts of the targets, and this "
                           "dataset was encoded without its baseline (--no-baseline); set "
                           "diffusion.residual: false or encode it with its baseline")
    if job.data.positions:
        raise HpcdiffError(f"{where}: data.positions is not supported for latent diffusion; set it false")
    return LatentSpec.of(manifest)


class SpecState:
    """What both kinds of run spec share: the checkpoint form (plain containers), reading it back with its
    version and kind checked, and naming differences."""

    def to_state(self) -> dict[str, Any]:
        """Plain containers (``weights_only``-loadable) for a checkpoint."""
        return to_dict(self)

    @classmethod
    def kind_name(cls) -> str:
        """The ``kind`` this class's specs record."""
        return next(f.default for f in dataclasses.fields(cls) if f.name == "kind")

    @classmethod
    def from_state(cls: type[S], state: Mapping[str, Any], *, where: str) -> S:
        """The spec saved in a checkpoint; a one-line error when it is missing, of another version or of
        another kind of run."""
        if not isinstance(state, Mapping):
            raise HpcdiffError(f"{where}: no run spec (a checkpoint of an older hpcdiff?); train again")
        if state.get("version") != SPEC_VERSION:
            raise HpcdiffError(f"{where}: run spec version {state.get('version')!r}, this hpcdiff reads "
                               f"{SPEC_VERSION}")
        kind = state.get("kind", "diffusion")
        if kind != cls.kind_name():
            raise HpcdiffError(f"{where}: the run spec is of a run of kind {kind!r}, not {cls.kind_name()!r}")
        return from_dict(cls, state, where=where)

    def mismatch(self, other: SpecState) -> list[str]:
        """The fields in which ``other`` differs from this spec (empty: the same run); a run of another
        kind differs in ``kind``, whatever else it holds."""
        mine, theirs = self.to_state(), other.to_state()
        if mine["kind"] != theirs["kind"]:
            return [f"kind: {mine['kind']!r} vs {theirs['kind']!r}"]
        return [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in mine if mine[k] != theirs.get(k)]


@dataclasses.dataclass(frozen=True)
class RunSpec(SpecState):
    """Everything that fixes a trained network's function. ``architecture``: the backbone's size config
    as resolved from its preset at training time, so a later change of a preset does not change a
    trained run's network (``None`` in runs from before it was recorded:
    :data:`hpcdiff.models.UNRECORDED_ARCHITECTURE`). ``targets`` / ``conditions``: channel names
    (conditions = dynamic, then static, then the position channels ``pos_y``, ``pos_x`` when
    ``positions``); ``image_shape``: the grid ``(H, W)``; ``patch``: the training window ``(h, w)``
    (``None``: whole fields); ``normalization``: the dataset's normalization fingerprint."""

    backbone: str
    preset: str
    targets: list[str]
    conditions: list[str]
    image_shape: tuple[int, int]
    diffusion: DiffusionSpec
    prediction: Literal["eps", "v"]
    normalization: str
    residual: ResidualSpec | None = None
    dropout: float | None = None
    patch: tuple[int, int] | None = None
    positions: bool = False
    architecture: dict[str, Any] | None = None  # the preset's resolved size config (None: recorded none)
    context: ContextSpec | None = None  # None: the same day's conditions only
    latent: LatentSpec | None = None  # None: diffusion in pixel space
    kind: Literal["diffusion"] = "diffusion"
    version: int = SPEC_VERSION

    @classmethod
    def from_job(cls, job: Any, manifest: Manifest) -> RunSpec:
        """The spec of training ``job`` (:class:`hpcdiff.train.job.TrainJob`) on the dataset ``manifest``."""
        d = job.diffusion
        architecture = to_dict(preset_config(job.model.backbone, job.model.preset))  # or a one-line error
        latent = latent_spec(job, manifest)  # first: its refusals say what latent runs take
        residual = None
        if d.residual:
            fitted = residual_from_manifest(manifest)
            residual = ResidualSpec(index=list(fitted.index), a=list(fitted.a), b=list(fitted.b),
                                    scale=list(fitted.scale))
        patch, positions = job.data.patch, job.data.positions
        if patch is not None:
            check_patch(patch, manifest.grid.shape, where=str(job.data.dataset))
        context = context_spec(job.context, manifest, where=str(job.data.dataset))
        conditions = condition_names(manifest, positions=positions,
                                     context=None if context is None else context.selection)
        return cls(backbone=job.model.backbone, preset=job.model.preset, dropout=job.model.dropout,
                   targets=manifest.target_names, conditions=conditions, architecture=architecture,
                   context=context, latent=latent,
                   image_shape=manifest.grid.shape, patch=patch, positions=positions,
                   diffusion=DiffusionSpec(schedule=d.schedule, num_steps=d.num_steps, var_type=d.var_type,
                                           loss=d.loss, vlb_weight=d.vlb_weight),
                   prediction=d.prediction, residual=residual, normalization=manifest.fingerprint())

    @property
    def output_shape(self) -> tuple[int, int]:
        """The grid of the fields sampling writes: the pixel grid (also for a latent run)."""
        return tuple(self.image_shape if self.latent is None else self.latent.image_shape)

    @property
    def output_targets(self) -> list[str]:
        """The channels sampling writes: the pixel targets (also for a latent run)."""
        return list(self.targets if self.latent is None else self.latent.targets)

    @property
    def context_selection(self) -> ContextSelection | None:
        """What the run reads of a dataset's context (``None``: nothing)."""
        return None if self.context is None else self.context.selection

    # -- building ---------------------------------------------------------------------------------------

    def build_diffusion(self, *, steps: int | None = None, spacing: str = "logsnr") -> GaussianDiffusion:
        """The trained diffusion, or respaced to ``steps`` of it chosen by ``spacing``."""
        d = self.diffusion
        diffusion = GaussianDiffusion(make_betas(d.schedule, d.num_steps), var_type=d.var_type,
                                      loss_type=d.loss, vlb_weight=d.vlb_weight)
        if steps is None or steps == diffusion.num_steps:
            return diffusion
        return diffusion.respace(respaced_timesteps(diffusion.alpha_bar, steps, spacing=spacing))

    def build_model(self, *, dropout: float | None = None) -> Denoiser:
        """The denoiser: the registry's backbone (``dropout`` overrides the spec's) in the wrapper that
        owns the residual and the ε / v parameterization."""
        config = architecture_of(self.backbone, self.preset, recorded=self.architecture)
        backbone = build_backbone(self.backbone, self.preset, config=config,
                                  target_channels=len(self.targets), cond_channels=len(self.conditions),
                                  learn_sigma=self.diffusion.learn_sigma,
                                  dropout=self.dropout if dropout is None else dropout,
                                  **self._context_arguments())
        alpha_bar = self.build_diffusion().alpha_bar
        residual = None if self.residual is None else self.residual.residual()
        return Denoiser(backbone, prediction=self.prediction, alpha_bar=alpha_bar, residual=residual)

    def _context_arguments(self) -> dict[str, Any]:
        """The backbone's context input: the box channels and how they enter (none without a box)."""
        if self.context is None or not self.context.spatial:
            return {}
        return {"context_channels": self.context.channels, "context_inject": self.context.inject}


@dataclasses.dataclass(frozen=True)
class AutoencoderSpec(SpecState):
    """An autoencoder run (``model.kind: autoencoder``): its network and what it was trained to minimize.
    ``architecture``: the preset's :class:`~hpcdiff.models.autoencoder.AutoencoderConfig` as resolved at
    training time; ``targets``: the channels it encodes, on the grid ``image_shape`` ``(H, W)`` (``patch``:
    the training window ``(h, w)``, ``None``: whole fields); ``kl_weight`` and ``spectral_weight``: the loss
    (:func:`~hpcdiff.models.autoencoder.autoencoder_losses`); ``normalization``: the dataset's
    normalization fingerprint."""

    preset: str
    targets: list[str]
    image_shape: tuple[int, int]
    architecture: dict[str, Any]
    normalization: str
    kl_weight: float
    spectral_weight: float = 0.0
    patch: tuple[int, int] | None = None
    kind: Literal["autoencoder"] = "autoencoder"
    version: int = SPEC_VERSION

    @classmethod
    def from_job(cls, job: Any, manifest: Manifest) -> AutoencoderSpec:
        """The spec of autoencoder training ``job`` (:class:`hpcdiff.train.job.TrainJob`) on ``manifest``."""
        config = autoencoder_config(job.model.preset)  # or a one-line error
        if manifest.latent is not None:
            raise HpcdiffError(f"{job.data.dataset}: a latent dataset; train the autoencoder on the pixel "
                               f"dataset it encodes ({manifest.latent.source_dataset})")
        if job.data.patch is not None:
            check_patch(job.data.patch, manifest.grid.shape, where=str(job.data.dataset))
        a = job.autoencoder
        return cls(preset=job.model.preset, targets=manifest.target_names, image_shape=manifest.grid.shape,
                   architecture=to_dict(config), normalization=manifest.fingerprint(), kl_weight=a.kl_weight,
                   spectral_weight=a.spectral_weight, patch=job.data.patch)

    @property
    def config(self) -> AutoencoderConfig:
        """The recorded architecture."""
        return from_dict(AutoencoderConfig, dict(self.architecture),
                         where=f"run spec architecture of autoencoder/{self.preset}")

    @property
    def factor(self) -> int:
        """Downsampling factor per axis from the grid to the latent grid."""
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def latent_shape(self) -> tuple[int, int]:
        """The latent grid ``(ceil(H / f), ceil(W / f))`` of a whole field."""
        return latent_shape(tuple(self.image_shape), self.factor)

    def build_model(self) -> Autoencoder:
        """The autoencoder of the recorded architecture."""
        return build_autoencoder(self.config, target_channels=len(self.targets))


AnySpec = RunSpec | AutoencoderSpec
SPECS: dict[str, type[RunSpec] | type[AutoencoderSpec]] = {"diffusion": RunSpec,
                                                           "autoencoder": AutoencoderSpec}


def spec_from_job(job: Any, manifest: Manifest) -> AnySpec:
    """The spec of training ``job`` on ``manifest``, of the job's ``model.kind``."""
    return SPECS[job.model.kind].from_job(job, manifest)


def spec_from_state(state: Mapping[str, Any], *, where: str) -> AnySpec:
    """The spec saved in a checkpoint, of the kind it records (diffusion for a spec that records none)."""
    kind = state.get("kind", "diffusion") if isinstance(state, Mapping) else "diffusion"
    if kind not in SPECS:
        raise HpcdiffError(f"{where}: run spec of unknown kind {kind!r}; this hpcdiff reads "
                           f"{', '.join(SPECS)}")
    return SPECS[kind].from_state(state, where=where)
