"""``hpcdiff encode``: encode a dataset once with a trained autoencoder run, into a latent dataset
(:mod:`hpcdiff.data.latent`) that diffusion training reads like any other.

Ranks (``mpiexec -n N hpcdiff encode ...``, or one process) share the source's shards: rank ``r`` encodes
shards ``r, r + N, ...`` of the list of all splits' shards, each into one latent shard of the same name and
rows. A shard is encoded in blocks of ``batch_size`` rows with the autoencoder's EMA weights in float32,
so its latents do not depend on the number of ranks. The latent statistics (per channel, over the
training split's posterior means) are merged across ranks in rank order, the shards normalized in place,
and rank 0 writes ``static.h5``, ``autoencoder.pt`` and the manifest last, then renames the finished
folder onto ``--out`` (:func:`hpcdiff.data.preprocess.make_temp_dir`, as preprocessing does).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from hpcdiff.data.collective import Collective
from hpcdiff.data.latent import AUTOENCODER_FILE, block_mean, latent_grid, latent_names
from hpcdiff.data.loader import verify_shard
from hpcdiff.data.manifest import Manifest, read_manifest, write_manifest
from hpcdiff.data.preprocess import make_temp_dir, writing
from hpcdiff.data.residual import Residual, residual_from_manifest
from hpcdiff.data.shards import create_shard, file_sha256, open_shard, standardize_shard
from hpcdiff.data.transforms import RunningStats, channel_stats, merged
from hpcdiff.dist import DistEnv
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import replace_dir
from hpcdiff.provenance import provenance
from hpcdiff.runspec import AutoencoderSpec, spec_from_state
from hpcdiff.train import checkpoint as ckpt

STATIC_FIELDS = ("lat", "lon", "lsm", "orography", "sdf")  # [H, W] fields of static.h5 brought to the grid


@dataclasses.dataclass(frozen=True)
class EncodeSetup:
    """What every rank agrees on before encoding: the autoencoder checkpoint and the source dataset."""

    checkpoint: Path
    step: int
    spec: AutoencoderSpec
    manifest: Manifest
    baseline: Residual | None  # the source's ERA5 baseline of the targets, encoded as extra conditions

    @property
    def factor(self) -> int:
        return self.spec.factor

    @property
    def grid(self) -> tuple[int, int]:
        return latent_grid(tuple(self.manifest.grid.shape), self.factor)

    def shards(self) -> list[tuple[str, Any]]:
        """``(split, shard)`` of every split, in manifest order."""
        return [(name, s) for name, split in self.manifest.splits.items() for s in split.shards]


def prepare(run_dir: Path, dataset: Path, *, checkpoint: str, baseline: bool = True) -> EncodeSetup:
    """Open the autoencoder checkpoint and the source dataset; one-line errors when they do not fit."""
    from hpcdiff.sample.run import resolve_checkpoint

    path = resolve_checkpoint(run_dir, checkpoint)
    state = ckpt.load_state(path)
    spec = spec_from_state(state.get("run_spec"), where=f"{path}/state.pt")
    if not isinstance(spec, AutoencoderSpec):
        raise HpcdiffError(f"{run_dir}: a run of kind {spec.kind!r}; hpcdiff encode needs an autoencoder run "
                           "(a training job with model.kind: autoencoder)")
    manifest = read_manifest(dataset)
    where = str(dataset)
    if manifest.raw.get("latent") is not None:
        raise HpcdiffError(f"{where}: a latent dataset already; encode the pixel dataset it was made from")
    if manifest.conditions_only:
        raise HpcdiffError(f"{where}: a conditions-only dataset has no targets to encode; latent runs sample "
                           "it directly (hpcdiff sample --set dataset=...)")
    if manifest.context is not None:
        raise HpcdiffError(f"{where}: has a recipe context section; latent datasets do not carry context yet")
    if manifest.fingerprint() != spec.normalization:
        raise HpcdiffError(f"{where}: its channels or normalization differ from those autoencoder run "
                           f"{run_dir} was trained with; encode its training dataset or one with the same "
                           "statistics")
    if list(manifest.target_names) != list(spec.targets):
        raise HpcdiffError(f"{where}: targets {manifest.target_names}; the autoencoder encodes "
                           f"{spec.targets}")
    residual = None
    if baseline:
        try:
            residual = residual_from_manifest(manifest)
        except HpcdiffError as err:
            raise HpcdiffError(f"{where}: no ERA5 baseline of the targets to encode ({err}); encode with "
                               "--no-baseline") from None
    return EncodeSetup(checkpoint=path, step=int(state["step"]), spec=spec, manifest=manifest,
                       baseline=residual)


def load_autoencoder(setup: EncodeSetup) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The autoencoder with the checkpoint's EMA weights, in eval mode on the CPU or the rank's GPU."""
    weights = ckpt.load_state(setup.checkpoint)["ema"]
    model = setup.spec.build_model()
    model.load_state_dict(weights)
    return model.eval(), weights


@dataclasses.dataclass
class LatentStats:
    """The training split's latents (``latents``) and, with an encoded baseline, the squared difference of
    latent and baseline latent per channel (``residual``: its mean over ``count`` values)."""

    latents: RunningStats
    residual: np.ndarray
    count: float = 0.0

    @classmethod
    def empty(cls, channels: int) -> LatentStats:
        return cls(RunningStats.empty(channels), np.zeros(channels))

    def update(self, latents: np.ndarray, baseline: np.ndarray | None) -> None:
        self.latents.update(latents)
        if baseline is not None:
            diff = latents.astype(np.float64) - baseline
            self.residual += np.square(diff).sum(axis=(0, 2, 3))
            self.count += diff.shape[0] * diff.shape[2] * diff.shape[3]

    @staticmethod
    def merged(parts: list[LatentStats]) -> LatentStats:
        return LatentStats(merged([p.latents for p in parts]), np.sum([p.residual for p in parts], axis=0),
                           float(sum(p.count for p in parts)))


def encode_shard(model: torch.nn.Module, setup: EncodeSetup, split: str, shard: Any, *, folder: Path,
                 batch_size: int, device: torch.device, stats: LatentStats | None) -> None:
    """One source shard -> the un-normalized latent shard of the same name: the posterior means, the
    conditions by :func:`~hpcdiff.data.latent.block_mean` and, with a baseline, its posterior means after
    them; ``stats`` accumulates the latents (training split)."""
    manifest, f = setup.manifest, setup.factor
    verify_shard(manifest.root, shard)
    cl, cc = setup.spec.latent_channels, len(manifest.conditions)
    extra = cl if setup.baseline is not None else 0
    with open_shard(manifest.root / shard.path) as src, \
            create_shard(folder / shard.path, n=shard.n, channels={"target": cl, "cond": cc + extra},
                         hw=setup.grid, chunk=manifest.batch_chunk) as dst:
        dst["time"][...] = src["time"][...]
        for start in range(0, shard.n, batch_size):
            cond = src["cond"][start:start + batch_size]
            latents = encode_means(model, src["target"][start:start + batch_size], device)
            rows = slice(start, start + len(latents))
            dst["target"][rows] = latents
            dst["cond"][rows, :cc] = block_mean(cond, f)
            base = None
            if setup.baseline is not None:
                base = encode_means(model, baseline_fields(setup.baseline, cond), device)
                dst["cond"][rows, cc:] = base
            if stats is not None:
                stats.update(latents, base)


def encode_means(model: torch.nn.Module, fields: np.ndarray, device: torch.device) -> np.ndarray:
    """The encoder's posterior means ``[N, Cl, h, w]`` float32 of normalized target fields
    ``[N, Ct, H, W]``."""
    with torch.no_grad():
        mean, _ = model.encode(torch.from_numpy(np.ascontiguousarray(fields, np.float32)).to(device))
    return mean.float().cpu().numpy()


def baseline_fields(residual: Residual, cond: np.ndarray) -> np.ndarray:
    """The targets' ERA5 baseline in their normalization, ``[N, Ct, H, W]``, from the normalized dynamic
    conditions ``cond [N, Cc, H, W]`` (:meth:`~hpcdiff.data.residual.Residual.baseline`)."""
    return residual.baseline(torch.from_numpy(np.ascontiguousarray(cond, np.float32))).numpy()


def write_static(setup: EncodeSetup, path: Path) -> None:
    """The source's ``static.h5`` on the latent grid: block means of the fields (the land-sea mask becomes
    the land fraction), the cells' mean ``x`` / ``y``."""
    f = setup.factor
    with h5py.File(setup.manifest.root / setup.manifest.static_path, "r") as src, h5py.File(path, "w") as dst:
        for name in STATIC_FIELDS:
            values = block_mean(src[name][...].astype(np.float64), f).astype(np.float32)
            dst.create_dataset(name, data=values).attrs.update(dict(src[name].attrs))
        for name, axis in (("y", 0), ("x", 1)):
            coord = src[name][...].astype(np.float64)
            values = block_mean(coord[:, None] if axis == 0 else coord[None, :], f).ravel()
            dst.create_dataset(name, data=values).attrs.update(dict(src[name].attrs))


def build_manifest(setup: EncodeSetup, *, stats: list[dict[str, Any]], residual_rms: list[float] | None,
                   entries: list[dict[str, Any]], static_sha256: str, file_sha256_: str,
                   run_dir: Path) -> dict[str, Any]:
    """The source's manifest with the latent targets (and encoded baseline conditions), grid, shards and
    the ``latent`` section."""
    source = setup.manifest
    raw = {k: v for k, v in source.raw.items() if k != "manifest_sha256"}
    names = latent_names(setup.spec.latent_channels)
    rms = residual_rms or [None] * len(names)
    targets = [{"name": name, "units": "1", "stats": s, "bounds": [None, None], "residual_rms": r}
               for name, s, r in zip(names, stats, rms, strict=True)]
    conditions = list(raw["conditions"])
    if setup.baseline is not None:  # named and normalized as the latents: the residual's map is the identity
        conditions += [{"name": name, "units": "1", "source_units": "1", "kind": "encoded baseline",
                        "stats": s} for name, s in zip(names, stats, strict=True)]
    (y0, _), (x0, _) = source.grid.window
    f = setup.factor
    grid = {**raw["grid"], "shape": list(setup.grid),
            "full_shape": list(latent_grid(tuple(source.grid.full_shape), f)),
            "window": {"y": [y0 // f, y0 // f + setup.grid[0]], "x": [x0 // f, x0 // f + setup.grid[1]]}}
    splits = {}
    for name, split in source.splits.items():
        shards = [{k: e[k] for k in ("path", "n", "sha256", "bytes")} for e in entries if e["split"] == name]
        splits[name] = {"n": split.n, "shards": shards, "dates": list(split.dates)}
    latent = {"factor": setup.factor, "conditions": "block_mean",
              "source": {"dataset": str(source.root.resolve()),
                         "manifest_sha256": source.raw["manifest_sha256"],
                         "fingerprint": source.fingerprint(), "shape": list(source.grid.shape),
                         "targets": source.raw["targets"]},
              "autoencoder": {"run": str(Path(run_dir).resolve()), "checkpoint": str(setup.checkpoint),
                              "step": setup.step, "spec": setup.spec.to_state()},
              "file": {"path": AUTOENCODER_FILE, "sha256": file_sha256_},
              "baseline": None if setup.baseline is None else setup.baseline.to_state()}
    return {**raw, "provenance": provenance(), "targets": targets, "conditions": conditions, "grid": grid,
            "static": {"path": "static.h5", "sha256": static_sha256}, "splits": splits, "latent": latent}


def publish(setup: EncodeSetup, tmp: Path, out: Path, *, run_dir: Path, weights: dict[str, torch.Tensor],
            stats: list[dict[str, Any]], residual_rms: list[float] | None,
            entries: list[dict[str, Any]]) -> None:
    """Rank 0: statics, the autoencoder's weights, the manifest (last), then the rename onto ``out``."""
    write_static(setup, tmp / "static.h5")
    torch.save({"spec": setup.spec.to_state(), "weights": weights}, tmp / AUTOENCODER_FILE)
    recipe = setup.manifest.root / "recipe.yaml"
    if recipe.is_file():
        shutil.copyfile(recipe, tmp / "recipe.yaml")
    manifest = build_manifest(setup, stats=stats, residual_rms=residual_rms, entries=entries,
                              static_sha256=file_sha256(tmp / "static.h5"),
                              file_sha256_=file_sha256(tmp / AUTOENCODER_FILE), run_dir=run_dir)
    write_manifest(tmp, manifest)
    replace_dir(tmp, out)


def finalize(setup: EncodeSetup, mine: list[tuple[str, Any]], *, folder: Path,
             stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalize this rank's latent shards in place; their manifest entries."""
    entries = []
    for split, shard in mine:
        path = folder / shard.path
        cond = [{"mean": 0.0, "std": 1.0}] * len(setup.manifest.conditions)  # normalized already
        cond += stats if setup.baseline is not None else []
        standardize_shard(path, stats={"target": stats, "cond": cond}, attrs={"split": split, "latent": True})
        entries.append({"split": split, "path": shard.path, "n": shard.n, "sha256": file_sha256(path),
                        "bytes": path.stat().st_size})
    return entries


def run_encode(run_dir: Path, dataset: Path, out: Path, *, env: DistEnv, checkpoint: str = "latest",
               batch_size: int = 16, baseline: bool = True, progress: bool = True) -> Path:
    """Encode ``dataset`` with the autoencoder run ``run_dir`` into the latent dataset ``out`` on this rank of
    ``env`` (all ranks call this)."""
    if batch_size < 1:
        raise HpcdiffError(f"--batch-size must be positive, got {batch_size}")
    coll = Collective.connect(env)
    out = Path(out).absolute()
    setup = coll.agreed(lambda: prepare(run_dir, Path(dataset), checkpoint=checkpoint, baseline=baseline))
    model, weights = load_autoencoder(setup)
    device = torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    everything = setup.shards()
    mine = everything[coll.rank::coll.world_size]
    extra = setup.spec.latent_channels if setup.baseline is not None else 0
    per_sample = 4 * (2 * setup.spec.latent_channels + len(setup.manifest.conditions) + extra) * \
        setup.grid[0] * setup.grid[1]  # float32 target + cond, and a margin as large as the targets
    needed = per_sample * sum(s.n for _, s in everything)
    tmp = coll.on_root(lambda: make_temp_dir(out, needed=needed))
    try:
        stats = LatentStats.empty(setup.spec.latent_channels)

        def encode_mine() -> None:
            bar = _bar(progress and coll.is_root, total=sum(s.n for _, s in mine))
            for split, shard in mine:
                encode_shard(model, setup, split, shard, folder=tmp, batch_size=batch_size, device=device,
                             stats=stats if split == "train" else None)
                if bar is not None:
                    bar.update(shard.n)
            if bar is not None:
                bar.close()

        coll.agreed(writing(out, encode_mine))
        everyone = LatentStats.merged(coll.allgather(stats))
        total = everyone.latents
        fitted = coll.agreed(lambda: channel_stats(total, kinds=["zscore"] * total.count.size,
                                                   scales=[1.0] * total.count.size,
                                                   names=latent_names(total.count.size)))
        # the RMS of the normalized latents' residual to the normalized baseline's (the residual's scale)
        residual_rms = (None if setup.baseline is None else
                        [float(v) for v in np.sqrt(everyone.residual / max(everyone.count, 1.0)) / total.std])
        entries = coll.agreed(writing(out, lambda: finalize(setup, mine, folder=tmp, stats=fitted)))
        gathered = [e for part in coll.allgather(entries) for e in part]
        coll.on_root(writing(out, lambda: publish(setup, tmp, out, run_dir=run_dir, weights=weights,
                                                  stats=fitted, residual_rms=residual_rms,
                                                  entries=gathered)))
    except BaseException:
        if coll.is_root:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _bar(enabled: bool, *, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="encode", unit="sample", dynamic_ncols=True, file=sys.stderr)

