"""Device memory of a training micro-batch and of a sampling batch: a pre-flight estimate.

The estimate has two kinds of part.

- **What scales with the batch** (activations, the loss terms, gradients as autograd creates them, the
  sampler's state): the run spec's real network and loss (a diffusion run's denoiser and loss, or an
  autoencoder's) are run on the ``meta`` device, where tensors have shapes and dtypes but no storage and
  no arithmetic, under :class:`LiveBytes`, a dispatch mode that adds every new storage's bytes when an
  operator returns it and subtracts them when the storage is freed; the peak of that sum is the part.
  Attention is traced through the fused kernel the GPU runs (flash / memory-efficient attention: the
  output and one log-sum-exp per row are kept, not the ``HW x HW`` score matrix that the ``meta``
  device's reference path would materialise). Sampling in bf16 / fp16 is traced with CUDA autocast's
  casting policy (:class:`MetaAutocast`).
- **What does not** (weights, the optimizer's state, DeepSpeed's buffers): a count of parameters times
  bytes per parameter, as DeepSpeed 0.19 lays them out for the job's precision and ZeRO stage
  (:func:`training_static_bytes`).

``docs/performance_memory.md`` compares the estimate with peaks measured on CPU and gives its error.
What the ``meta`` trace cannot see (a kernel's private workspace, the caching allocator's rounding and
fragmentation, the CUDA context) is the :data:`RESERVE_FRACTION` and :data:`RESERVE_BYTES` that
:meth:`MemoryEstimate.needed_bytes` adds before a job is compared with a GPU's memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from hpcdiff.errors import HpcdiffError

GIB = 2**30
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Added to the traced peak before it is compared with a GPU's memory: the CUDA context and cuDNN /
# cuBLAS workspaces (a fixed amount) and the caching allocator's rounding and fragmentation (a share).
# Assumptions, not measured on a GPU here; see docs/performance_memory.md.
RESERVE_FRACTION = 0.10
RESERVE_BYTES = 1 * GIB
# DeepSpeed's ZeRO 1/2 default gradient bucket (elements), allocated once per rank when
# contiguous_gradients is on (its default).
DEFAULT_REDUCE_BUCKET = 500_000_000
# Samplers' own tensors besides the network call, in [N, C, H, W] float32 arrays: x_t, the model output
# (eps and variance channels: 2), x_0 and the history of multistep solvers (dpmpp_3m keeps two).
SAMPLER_ARRAYS = {"ddpm": 5, "ddim": 5, "dpmpp_2m": 6, "dpmpp_3m": 7}


# -- tracing ----------------------------------------------------------------------------------------------


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created under this mode that are still alive: ``live`` now and
    ``peak`` since entering. A storage counts once, however many views of it exist."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # an output on an input's storage (a view, an in-place result such as ``grad.add_``) is not new
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.untyped_storage()._cdata not in inputs:
                self._track(value)
        self.peak = max(self.peak, self.live)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        ref = self._tracked.get(key)
        if ref is not None and ref() is storage:
            return  # a view or an in-place result of a storage already counted
        size = storage.nbytes()
        self.live += size

        def freed(_: weakref.ref, key: int = key, size: int = size) -> None:
            self.live -= size
            self._tracked.pop(key, None)

        self._tracked[key] = weakref.ref(storage, freed)


class FusedAttention(TorchFunctionMode):
    """Route ``scaled_dot_product_attention`` on ``meta`` tensors through the fused (flash) kernel's
    operator, which keeps what the GPU's fused kernels keep: the output and a log-sum-exp per query."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args and args[0].device.type == "meta" \
                and not kwargs.get("attn_mask") and len(args) == 3:
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(*args)[0]
        return func(*args, **kwargs)


class MetaAutocast(TorchFunctionMode):
    """CUDA autocast's casting policy for the operators the networks use, on ``meta`` tensors (where
    ``torch.autocast`` does not apply): convolutions, linear layers and attention run in ``dtype``,
    normalizations in float32, concatenation in the widest input type."""

    LOW = frozenset({F.conv2d, F.linear, F.scaled_dot_product_attention, torch.matmul, torch.bmm, torch.mm})
    FP32 = frozenset({F.group_norm, F.layer_norm, F.softmax, torch.exp, torch.log})
    WIDEST = frozenset({torch.cat, torch.stack})

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.LOW or func in self.FP32:
            dtype = self.dtype if func in self.LOW else torch.float32
            args = tuple(a.to(dtype) if _is_float(a) else a for a in args)
        elif func in self.WIDEST and args and isinstance(args[0], list | tuple):
            tensors = [t for t in args[0] if _is_float(t)]
            widest = max((t.dtype for t in tensors), key=lambda d: d.itemsize, default=None)
            args = ([t.to(widest) if _is_float(t) else t for t in args[0]], *args[1:])
        return func(*args, **kwargs)


def _is_float(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def traced_peak(fn: Callable[[], Any], *, autocast: torch.dtype | None = None) -> int:
    """Peak bytes alive while ``fn`` runs, counting what it creates (run it on ``meta`` tensors);
    ``autocast``: run it under :class:`MetaAutocast` of that dtype."""
    tracker = LiveBytes()
    cast = MetaAutocast(autocast) if autocast is not None else contextlib.nullcontext()
    with FusedAttention(), cast, tracker:
        result = fn()
        del result
    return tracker.peak


# -- the estimate ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Peak device memory of one rank: ``parts`` in bytes (weights, gradients, optimizer, buffers,
    activations) of a ``what`` (``training micro-batch`` / ``sampling batch``) of ``batch`` fields of
    ``shape`` in ``precision``; ``field`` names the shape (``patch 256 x 256``, ``whole field 589 x 789``);
    ``detail`` says what else fixed it (preset, ZeRO stage, ranks, sampler)."""

    what: str
    batch: int
    shape: tuple[int, int]
    precision: str
    parts: dict[str, int]
    field: str = ""
    detail: str = ""

    @property
    def case(self) -> str:
        """``training micro-batch 4 x patch 256 x 256 in bf16``."""
        field = self.field or describe_field(None, self.shape)
        return f"{self.what} {self.batch} x {field} in {self.precision}"

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())

    def needed_bytes(self) -> int:
        """The estimate plus the reserve for what the trace cannot see (:data:`RESERVE_FRACTION`,
        :data:`RESERVE_BYTES`): what a GPU must have."""
        return int(self.total_bytes * (1 + RESERVE_FRACTION)) + RESERVE_BYTES

    def describe(self) -> str:
        """``training micro-batch 4 x patch 256 x 256 in bf16 (...): 12.30 GiB = weights 0.11 + ...``."""
        parts = " + ".join(f"{name} {gib(size)}" for name, size in self.parts.items())
        detail = f" ({self.detail})" if self.detail else ""
        return (f"{self.case}{detail}: {gib(self.total_bytes)} GiB = {parts}; with reserve "
                f"{gib(self.needed_bytes())} GiB")


def gib(size: float) -> str:
    """Bytes as GiB with two decimals (``0.00`` for less than 5 MiB)."""
    return f"{size / GIB:.2f}"


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def training_static_bytes(params: int, *, precision: str, zero_stage: int, world_size: int,
                          zero_config: dict[str, Any] | None = None) -> dict[str, int]:
    """Bytes per rank that do not depend on the batch, for ``params`` parameters under DeepSpeed 0.19 with
    AdamW: ``weights`` (in the training precision), ``gradients`` (kept between micro-steps),
    ``optimizer`` (fp32 master weights when bf16 / fp16, fp32 gradients of them, Adam's two moments) and
    ``buffers`` (ZeRO 1/2's gradient bucket). ZeRO 1 partitions the fp32 state over ``world_size`` ranks,
    ZeRO 2 the gradients too."""
    low = DTYPES[precision].itemsize
    zero = dict(zero_config or {})
    if zero_stage == 0:
        mixed = precision != "fp32"  # the FP16 / BF16 optimizer: fp32 master weights and their gradients
        return {"weights": low * params, "gradients": low * params,
                "optimizer": (8 + (8 if mixed else 0)) * params, "buffers": 0}
    shard = -(-params // world_size)
    grads = low * (params if zero_stage == 1 else shard)
    bucket = 0
    if zero.get("contiguous_gradients", True):
        copies = 2 if zero.get("overlap_comm", False) else 1
        bucket = copies * low * int(zero.get("reduce_bucket_size", DEFAULT_REDUCE_BUCKET))
    master = 4 * shard if precision != "fp32" else 0
    return {"weights": low * params, "gradients": grads + 4 * shard * (precision != "fp32"),
            "optimizer": master + 8 * shard, "buffers": bucket}


def _meta_inputs(spec: Any, batch: int, shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """``(x0, cond, doy, context)`` on ``meta`` for ``batch`` fields of ``shape`` (float32, as the loader
    gives; ``context`` ``None`` without a spatial context)."""
    x0 = torch.empty(batch, len(spec.targets), *shape, device="meta")
    cond = torch.empty(batch, len(spec.conditions), *shape, device="meta")
    doy = torch.empty(batch, device="meta")
    box = getattr(spec, "context", None)
    context = (torch.empty(batch, box.channels, *box.box_shape, device="meta")
               if box is not None and box.spatial else None)
    return x0, cond, doy, context


def _meta_model(spec: Any, dtype: torch.dtype) -> torch.nn.Module:
    with torch.device("meta"):
        model = spec.build_model()
    return model.to(dtype)


def training_activation_bytes(spec: Any, *, batch: int, shape: tuple[int, int], precision: str,
                              sdf_weights: bool = True) -> int:
    """Traced peak of one micro-step's forward, loss and backward (parameters in ``precision``, as
    DeepSpeed holds them; the inputs, the per-pixel loss weight, noise and time steps included)."""
    return _training_peak(_meta_model(spec, DTYPES[precision]), spec, batch=batch, shape=shape,
                          sdf_weights=sdf_weights)


def _training_peak(model: torch.nn.Module, spec: Any, *, batch: int, shape: tuple[int, int],
                   sdf_weights: bool) -> int:
    model.train()
    for p in model.parameters():  # gradients exist already (counted as static): backward adds into them
        p.grad = torch.zeros_like(p)
    weight = torch.empty(1, 1, *shape, device="meta") if sdf_weights else None
    make_step = _autoencoder_step if spec.kind == "autoencoder" else _diffusion_step
    return traced_peak(make_step(model, spec, batch=batch, shape=shape, weight=weight))


def _diffusion_step(model: torch.nn.Module, spec: Any, *, batch: int, shape: tuple[int, int],
                    weight: torch.Tensor | None) -> Callable[[], None]:
    """One micro-step of a diffusion run on ``meta`` inputs: the denoiser's loss and its backward."""
    diffusion = spec.build_diffusion()

    def step() -> None:
        x0, cond, doy, context = _meta_inputs(spec, batch, shape)
        t = torch.zeros(batch, dtype=torch.long, device="meta")
        noise = torch.empty_like(x0)
        losses = diffusion.training_losses(lambda x_t, tt: model(x_t, tt, cond, doy, context), x0, t,
                                           noise=noise, weight=weight, mse_weight=model.mse_weight(t))
        losses["loss"].mean().backward()

    return step


def _autoencoder_step(model: torch.nn.Module, spec: Any, *, batch: int, shape: tuple[int, int],
                      weight: torch.Tensor | None) -> Callable[[], None]:
    """One micro-step of an autoencoder run on ``meta`` inputs: encode, decode, the loss, its backward."""
    from hpcdiff.models.autoencoder import autoencoder_losses, latent_shape

    def step() -> None:
        x = torch.empty(batch, len(spec.targets), *shape, device="meta")
        noise = torch.empty(batch, spec.latent_channels, *latent_shape(shape, spec.factor), device="meta")
        recon, mean, logvar = model(x, noise)
        losses = autoencoder_losses(recon, x, mean, logvar, kl_weight=spec.kl_weight,
                                    spectral_weight=spec.spectral_weight, weight=weight)
        losses["loss"].mean().backward()

    return step


def sampling_activation_bytes(spec: Any, *, batch: int, precision: str, sampler: str,
                              tile: tuple[int, int] | None = None) -> int:
    """Traced peak of one network call without gradients on ``batch`` whole fields (or on tiles of
    ``tile``, :mod:`hpcdiff.sample.tiles`), plus the sampler's own ``[N, C, H, W]`` arrays
    (:data:`SAMPLER_ARRAYS`; with tiles also the blended output). The weights are float32; bf16 / fp16
    run under :class:`MetaAutocast`, as ``hpcdiff sample`` runs the network under ``torch.autocast``."""
    return _sampling_peak(_meta_model(spec, torch.float32), spec, batch=batch, precision=precision,
                          sampler=sampler, tile=tile)


def _sampling_peak(model: torch.nn.Module, spec: Any, *, batch: int, precision: str, sampler: str,
                   tile: tuple[int, int] | None = None) -> int:
    model.eval()
    grid = tuple(spec.image_shape)
    shape = grid if tile is None else (min(tile[0], grid[0]), min(tile[1], grid[1]))

    def call() -> None:
        x, cond, doy, context = _meta_inputs(spec, batch, shape)
        t = torch.zeros(batch, dtype=torch.long, device="meta")
        with torch.no_grad():
            return model(x, t, cond, doy, context)

    channels = len(spec.targets)
    arrays = SAMPLER_ARRAYS.get(sampler, max(SAMPLER_ARRAYS.values()))
    arrays += 0 if tile is None else 2  # the blended output (eps and variance channels) of the whole grid
    state = arrays * batch * channels * 4 * grid[0] * grid[1]
    autocast = None if precision == "fp32" else DTYPES[precision]
    return traced_peak(call, autocast=autocast) + state


def estimate_training(spec: Any, *, micro_batch: int, shape: tuple[int, int], precision: str,
                      zero_stage: int = 0, world_size: int = 1, zero_config: dict[str, Any] | None = None,
                      sdf_weights: bool = True, field: str = "") -> MemoryEstimate:
    """Peak memory of one rank training ``spec``'s network on micro-batches of ``micro_batch`` fields of
    ``shape`` (a patch or the whole grid)."""
    model = _meta_model(spec, DTYPES[precision])
    params = count_parameters(model)
    parts = training_static_bytes(params, precision=precision, zero_stage=zero_stage, world_size=world_size,
                                  zero_config=zero_config)
    parts["activations"] = _training_peak(model, spec, batch=micro_batch, shape=shape,
                                          sdf_weights=sdf_weights)
    ranks = f"{world_size} rank{'s' if world_size > 1 else ''}"
    return MemoryEstimate("training micro-batch", micro_batch, tuple(shape), precision, parts, field=field,
                          detail=f"{spec.preset}, {params / 1e6:.1f}M parameters, ZeRO {zero_stage}, {ranks}")


def decoding_activation_bytes(autoencoder: Any, *, batch: int) -> int:
    """Traced peak of a latent run's sampling outside the U-Net: the autoencoder (``autoencoder``: its
    :class:`~hpcdiff.runspec.AutoencoderSpec`, fp32 as sampling runs it, without gradients) decoding
    ``batch`` latents into whole fields, or encoding one date's ERA5 baseline (the conditions of a
    residual run), whichever is larger."""
    return _decoding_peak(_meta_model(autoencoder, torch.float32), autoencoder, batch=batch)


def _decoding_peak(model: torch.nn.Module, autoencoder: Any, *, batch: int) -> int:
    model.eval()
    shape = tuple(autoencoder.image_shape)

    def decode() -> None:
        z = torch.empty(batch, autoencoder.latent_channels, *autoencoder.latent_shape, device="meta")
        with torch.no_grad():
            return model.decode(z, shape)

    def encode() -> None:
        x = torch.empty(1, len(autoencoder.targets), *shape, device="meta")
        with torch.no_grad():
            return model.encode(x)

    return max(traced_peak(decode), traced_peak(encode))


def estimate_sampling(spec: Any, *, batch: int, precision: str, sampler: str,
                      tile: tuple[int, int] | None = None) -> MemoryEstimate:
    """Peak memory of sampling ``batch`` whole fields with ``spec``'s network: fp32 weights (autocast
    casts them per call) and :func:`sampling_activation_bytes`. A latent run (``spec.latent``) also
    holds its autoencoder's weights, and its activations are the larger of the U-Net's on the latent grid
    and :func:`decoding_activation_bytes` (the two never run at once)."""
    model = _meta_model(spec, torch.float32)
    params = count_parameters(model)
    activations = _sampling_peak(model, spec, batch=batch, precision=precision, sampler=sampler, tile=tile)
    parts = {"weights": 4 * params, "activations": activations}
    if precision != "fp32":
        parts["weights"] += DTYPES[precision].itemsize * params  # autocast's cast copies, during a call
    detail = f"{spec.preset}, {params / 1e6:.1f}M parameters, {sampler}"
    latent = spec.latent
    if latent is not None:
        autoencoder = latent.autoencoder_spec()
        decoder = _meta_model(autoencoder, torch.float32)
        parts["weights"] += 4 * count_parameters(decoder)
        parts["activations"] = max(activations, _decoding_peak(decoder, autoencoder, batch=batch))
        detail += f", latents {spec.image_shape[0]} x {spec.image_shape[1]} decoded by {autoencoder.preset}"
    return MemoryEstimate("sampling batch", batch, spec.output_shape, precision, parts, detail=detail)


# -- jobs ------------------------------------------------------------------------------------------------


def training_shape(job: Any, manifest: Any) -> tuple[int, int]:
    """What one training field is: the job's patch, or the dataset's whole grid."""
    return tuple(job.data.patch or manifest.grid.shape)


def describe_field(patch: tuple[int, int] | None, grid: tuple[int, int]) -> str:
    return f"patch {patch[0]} x {patch[1]}" if patch else f"whole field {grid[0]} x {grid[1]}"


def training_job_estimate(job: Any, manifest: Any, *, world_size: int) -> MemoryEstimate:
    """:func:`estimate_training` for a :class:`~hpcdiff.train.job.TrainJob` on ``world_size`` ranks."""
    from hpcdiff.runspec import spec_from_job
    from hpcdiff.train.job import batch_arithmetic

    plan = batch_arithmetic(job.train, world_size)
    spec = spec_from_job(job, manifest)  # a diffusion run's or an autoencoder's
    return estimate_training(spec, micro_batch=plan.micro_batch, shape=training_shape(job, manifest),
                             precision=job.train.precision, zero_stage=job.train.zero_stage,
                             world_size=world_size, zero_config=job.deepspeed.get("zero_optimization"),
                             sdf_weights=job.loss_weights.enabled,
                             field=describe_field(job.data.patch, tuple(manifest.grid.shape)))


def sampling_precision(precision: str, *, on_gpu: bool = True) -> str:
    """The precision a sampling job runs in (``auto``: bf16 on a GPU, as on every GPU since Ampere;
    fp32 on CPU, as :func:`hpcdiff.sample.run.autocast_dtype` decides)."""
    if precision != "auto":
        return precision
    return "bf16" if on_gpu else "fp32"


def check_fits(estimate: MemoryEstimate, *, gpu_mem_gb: float | None, advice: str) -> None:
    """Refuse, in one line with the numbers, an estimate that does not fit ``gpu_mem_gb`` GiB (``None``:
    nothing to compare with)."""
    if gpu_mem_gb is None or estimate.needed_bytes() <= gpu_mem_gb * GIB:
        return
    raise HpcdiffError(f"{estimate.case} needs about {gib(estimate.needed_bytes())} GiB per GPU "
                       f"({gib(estimate.total_bytes)} estimated + {RESERVE_FRACTION:.0%} + "
                       f"{RESERVE_BYTES / GIB:g} GiB reserve), more than the {gpu_mem_gb:g} GiB that "
                       f"slurm.gpu_mem_gb declares; {advice}")


def out_of_memory_message(*, what: str, batch: int, field: str, estimate: MemoryEstimate | None,
                          error: BaseException) -> str:
    """One line for an out-of-memory error at run time: what ran out, at which batch and field size,
    against the estimate."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if "DefaultCPUAllocator" in first:  # drop the "[enforce fail at alloc_cpu.cpp:...]" prefix
        first = first[first.index("DefaultCPUAllocator"):]
    first = first[:160] + ("..." if len(first) > 160 else "")
    known = (f"the estimate was {gib(estimate.total_bytes)} GiB ({gib(estimate.needed_bytes())} GiB with "
             f"reserve)" if estimate is not None else "no estimate")
    return f"out of memory in a {what} of {batch} ({field}); {known}; {first}"


def is_out_of_memory(error: BaseException) -> bool:
    """A device's out-of-memory error, or the CPU allocator's (``DefaultCPUAllocator: can't allocate
    memory``)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)



def _estimate_or_none(make: Callable[[], MemoryEstimate]) -> MemoryEstimate | None:
    try:
        return make()
    except Exception:  # an error message must not fail on its estimate: it says "no estimate" instead
        return None


def training_out_of_memory(job: Any, manifest: Any, *, world_size: int, error: BaseException) -> HpcdiffError:
    """The one-line error for an out-of-memory ``error`` in a training micro-step of ``job``."""
    estimate = _estimate_or_none(lambda: training_job_estimate(job, manifest, world_size=world_size))
    from hpcdiff.train.job import batch_arithmetic

    return HpcdiffError(out_of_memory_message(
        what="training micro-batch", batch=batch_arithmetic(job.train, world_size).micro_batch,
        field=describe_field(job.data.patch, tuple(manifest.grid.shape)), estimate=estimate, error=error)
        + "; use a smaller train.micro_batch or data.patch_size")


def sampling_out_of_memory(job: Any, spec: Any, *, precision: str, error: BaseException) -> HpcdiffError:
    """The one-line error for an out-of-memory ``error`` while sampling a batch of ``job`` in ``precision``
    (``fp32`` / ``bf16`` / ``fp16``, what the sampler runs in) with the run whose spec is ``spec``."""
    s = job.sample
    estimate = _estimate_or_none(lambda: estimate_sampling(spec, batch=s.batch_size, precision=precision,
                                                           sampler=s.sampler, tile=s.tiles))
    field = describe_field(None, spec.output_shape)  # the pixel grid, also for a latent run
    if s.tiles:
        field = f"tiles {s.tiles[0]} x {s.tiles[1]} of the {field}"
    return HpcdiffError(out_of_memory_message(
        what="sampling batch", batch=s.batch_size, field=field,
        estimate=estimate, error=error) + "; use a smaller sample.batch_size")
