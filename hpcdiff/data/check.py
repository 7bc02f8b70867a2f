"""``hpcdiff check``: verify a dataset against its manifest (files, checksums, counts, shapes, dates,
finite values). The first mismatch is an error naming the shard and the problem."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcdiff.data.latent import AUTOENCODER_FILE
from hpcdiff.data.manifest import Manifest, read_manifest
from hpcdiff.data.shards import COPY_SAMPLES, file_sha256, open_shard
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import to_days


def check_dataset(path: Path) -> str:
    """Check every shard and ``static.h5`` of the dataset ``path``; return a one-paragraph summary."""
    path = Path(path)
    manifest = read_manifest(path)
    height, width = manifest.grid.shape
    _check_file(path / manifest.static_path, manifest.static_sha256)
    if manifest.latent is not None:  # the autoencoder whose latents these are, and which decodes them
        _check_file(path / AUTOENCODER_FILE, manifest.latent.file_sha256)
    lines = []
    for name, split in manifest.splits.items():
        days = to_days(split.dates)
        in_shards = sum(s.n for s in split.shards)
        if in_shards != split.n or days.size != split.n:
            raise HpcdiffError(f"{path}/manifest.json: split {name!r} counts disagree "
                               f"(n {split.n}, dates {days.size}, shards {in_shards})")
        offset = 0
        for shard in split.shards:
            shapes = {"target": (shard.n, len(manifest.targets), height, width),
                      "cond": (shard.n, len(manifest.conditions), height, width)}
            if manifest.conditions_only:  # no truth: the shards hold no target
                del shapes["target"]
            shapes.update(_context_shapes(manifest, shard.n))
            _check_file(path / shard.path, shard.sha256)
            _check_shard(path / shard.path, shapes, days[offset:offset + shard.n])
            offset += shard.n
        lines.append(f"{name}: {split.n} samples in {len(split.shards)} shards")
    size_mb = sum(f.stat().st_size for f in path.rglob("*.h5")) / 2**20
    channels = (f"{len(manifest.conditions)} condition channels, no targets (conditions-only)"
                if manifest.conditions_only else
                f"{len(manifest.targets)} target + {len(manifest.conditions)} condition channels")
    if manifest.latent is not None:
        channels += (f"; latents of {manifest.latent.source_shape[0]} x {manifest.latent.source_shape[1]} "
                     f"fields, {manifest.latent.factor}x coarser per axis")
    return (f"{path}: OK ({', '.join(lines)}; grid {height} x {width}; {channels}; "
            f"{size_mb:.1f} MiB)")


def _context_shapes(manifest: Manifest, n: int) -> dict[str, tuple[int, ...]]:
    """The shapes of a shard's context arrays (none without a recipe ``context``)."""
    info, shapes = manifest.context, {}
    if info is not None and info.offsets:
        shapes["temporal"] = (n, len(manifest.conditions) * len(info.offsets), *manifest.grid.shape)
    if info is not None and info.has_box:
        shapes["context"] = (n, len(info.box_variables) * len(info.days), *info.box_shape)
    return shapes


def _check_file(path: Path, sha256: str) -> None:
    if not path.is_file():
        raise HpcdiffError(f"{path}: missing")
    if file_sha256(path) != sha256:
        raise HpcdiffError(f"{path}: sha256 mismatch (the file changed after preprocessing)")


def _check_shard(path: Path, shapes: Mapping[str, tuple[int, ...]], days: np.ndarray) -> None:
    """Shapes, dtypes, time stamps and finite values of one shard."""
    try:
        with open_shard(path) as f:
            for name, shape in shapes.items():
                _check_array(f, name, shape, path=path)
            if "time" not in f or not np.array_equal(f["time"][...], days):
                raise HpcdiffError(f"{path}: 'time' differs from the manifest's dates")
    except OSError as err:
        raise HpcdiffError(f"{path}: cannot read the shard ({err})") from None


def _check_array(f: h5py.File, name: str, shape: tuple[int, ...], *, path: Path) -> None:
    if name not in f:
        raise HpcdiffError(f"{path}: missing dataset {name!r}")
    ds: Any = f[name]
    if ds.shape != shape or ds.dtype != np.float32:
        raise HpcdiffError(f"{path}: {name!r} is {ds.dtype} {ds.shape}, the manifest says float32 {shape}")
    for start in range(0, shape[0], COPY_SAMPLES):
        if not np.isfinite(ds[start:start + COPY_SAMPLES]).all():
            raise HpcdiffError(f"{path}: {name!r} has non-finite values near sample {start}")
