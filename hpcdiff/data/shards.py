"""HDF5 shards: the layout writer and reader agree on, writing (un-normalized, then normalized in
place) and reading.

A shard ``shards/<split>-<rank>-<k>.h5`` holds ``n`` consecutive samples of one split:

- ``target`` ``[n, Ct, H, W]`` float32, normalized (see :mod:`hpcdiff.data.transforms`);
- ``cond`` ``[n, Cc, H, W]`` float32, the normalized *dynamic* ERA5 conditions on the target grid
  (static channels are not repeated; the loader appends them from ``static.h5``);
- ``time`` ``[n]`` int64, days since 1970-01-01 (the date of the daily value);
- with a recipe ``context:`` (:mod:`hpcdiff.data.context`), ``temporal`` ``[n, Cc · D', H, W]`` (the
  neighbouring days' conditions) and ``context`` ``[n, Cx · D, Hx, Wx]`` (the large-domain box).

``target`` and ``cond`` are chunked ``[batch_chunk, C, H, W]``: a batch of ``batch_chunk`` aligned
samples is one chunk per dataset, and uncompressed chunks written in order lie back to back in the
file, so any run of consecutive samples is one contiguous read. For patch training the recipe may chunk
in y/x too (``shards.chunk_hw``, ``[batch_chunk, C, h, w]``): a window then reads only the chunks it
touches.

Preprocessing first writes each shard un-normalized (``g(x)``, uncompressed) while the training
statistics accumulate, then normalizes it in place, and rewrites it compressed if the recipe asks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import TIME_UNITS

ARRAYS = ("target", "cond", "temporal", "context")  # the sample arrays a shard may hold, besides time
CONTEXT = "context"
COPY_SAMPLES = 16  # samples per read/write while normalizing or compressing a shard (bounded memory)


def shard_name(split: str, rank: int, index: int) -> str:
    return f"shards/{split}-{rank}-{index}.h5"


def samples_per_shard(*, sample_bytes: int, samples: int | None, shard_mb: float | None, chunk: int) -> int:
    """Samples per shard from a count or a size in MiB, rounded down to whole chunks (at least one)."""
    n = samples if samples is not None else int(shard_mb * 2**20 // sample_bytes)
    return max(chunk, n // chunk * chunk)


def compression_options(kind: str | None) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords for a compression name (None: uncompressed)."""
    if kind is None:
        return {}
    filters = {"lz4": lambda: dict(hdf5plugin.LZ4()), "zstd": lambda: dict(hdf5plugin.Zstd(clevel=3)),
               "gzip": lambda: {"compression": "gzip", "compression_opts": 4}}
    return {**filters[kind](), "shuffle": True}


def create_shard(path: Path, *, n: int, channels: Mapping[str, int], hw: tuple[int, int],
                 chunk: int, chunk_hw: tuple[int, int] | None = None,
                 box: tuple[int, tuple[int, int]] | None = None) -> h5py.File:
    """An open, uncompressed shard: float32 arrays ``[n, C, H, W]`` named by ``channels`` (``target``,
    ``cond``, ``temporal``) chunked ``[chunk, C, H, W]`` (``[chunk, C, *chunk_hw]`` with spatial chunks:
    a training window then reads only the chunks it touches), with ``box`` ``(C, (Hx, Wx))`` a
    ``context`` array ``[n, C, Hx, Wx]`` chunked whole per sample run, and ``time`` ``[n]`` int64 (days
    since 1970-01-01)."""
    f = h5py.File(path, "w")
    tile = hw if chunk_hw is None else (min(chunk_hw[0], hw[0]), min(chunk_hw[1], hw[1]))
    for name, c in channels.items():
        f.create_dataset(name, shape=(n, c, *hw), dtype=np.float32, chunks=(min(chunk, n), c, *tile))
    if box is not None:
        c, box_hw = box
        f.create_dataset(CONTEXT, shape=(n, c, *box_hw), dtype=np.float32, chunks=(min(chunk, n), c, *box_hw))
    f.create_dataset("time", shape=(n,), dtype=np.int64).attrs["units"] = TIME_UNITS
    return f


def standardize_shard(path: Path, *, stats: Mapping[str, Sequence[Mapping[str, float]]],
                      attrs: Mapping[str, Any]) -> None:
    """In place: ``(g - mean) / std`` per channel of each dataset named in ``stats`` (``stats[name][c]``
    has ``mean`` and ``std``), a few chunks at a time; then set the file attributes ``attrs``."""
    with h5py.File(path, "r+") as f:
        for name, channel_stats in stats.items():
            ds = f[name]
            step = ds.chunks[0] * max(1, COPY_SAMPLES // ds.chunks[0])
            for start in range(0, ds.shape[0], step):
                block = ds[start:start + step]
                standardize_(block, channel_stats)
                ds[start:start + block.shape[0]] = block
        f.attrs.update(dict(attrs))


def compress_shard(path: Path, *, compression: str) -> None:
    """Rewrite the shard ``path`` with its ``target``/``cond`` chunks compressed (same chunk shape)."""
    tmp = path.with_suffix(".compressing")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for name in [n for n in ARRAYS if n in src]:  # a conditions-only shard has no target
            ds = dst.create_dataset(name, shape=src[name].shape, dtype=np.float32, chunks=src[name].chunks,
                                    **compression_options(compression))
            step = ds.chunks[0] * max(1, COPY_SAMPLES // ds.chunks[0])
            for start in range(0, ds.shape[0], step):
                ds[start:start + step] = src[name][start:start + step]
        src.copy(src["time"], dst, name="time")
        dst.attrs.update(dict(src.attrs))
    tmp.replace(path)


def standardize_(block: np.ndarray, stats: Sequence[Mapping[str, float]]) -> None:
    """``block`` ``[n, C, H, W]`` float32 ← ``(block - mean) / std`` per channel, in place, in float32.
    The float64 mean is applied as two float32 parts (hi + lo), so its rounding adds no bias: the
    error is that of float32 arithmetic on the result (~1e-7 relative)."""
    for c, s in enumerate(stats):
        hi = np.float32(s["mean"])
        lo = np.float32(s["mean"] - float(hi))
        view = block[:, c]
        view -= hi
        view -= lo
        view *= np.float32(1.0 / s["std"])


def file_sha256(path: Path, *, block_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def open_shard(path: Path) -> h5py.File:
    """Open a shard for reading. No chunk cache: reads are whole runs of samples, decompressed once."""
    try:
        return h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as err:  # missing, truncated or not HDF5: h5py says which in the first line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HpcdiffError(f"{path}: cannot open shard ({reason}); run hpcdiff check on its dataset") \
            from None


def read_rows(dataset: h5py.Dataset, out: np.ndarray, start: int, *, origin: tuple[int, int] = (0, 0),
              channels: slice | None = None, into: int = 0) -> None:
    """Read samples ``start .. start + len(out)`` of ``dataset`` ``[N, C, H, W]`` (its ``channels``, all
    by default) into ``out`` ``[n, C', h, w]`` from channel ``into`` on: one hyperslab read straight into
    ``out``, of the window ``origin .. origin + (h, w)`` (the whole field when ``out`` is ``H x W``), so
    only the chunks the window touches are read. (h5py's low-level calls: ``read_direct`` costs ~50 us
    more per call in Python selection code.)"""
    first, stop, _ = (channels or slice(0, dataset.shape[1])).indices(dataset.shape[1])
    count = (out.shape[0], stop - first, *out.shape[2:])
    assert into + count[1] <= out.shape[1], (into, count, out.shape)
    file_space = dataset.id.get_space()
    file_space.select_hyperslab((start, first, *origin), count)
    mem_space = h5py.h5s.create_simple(out.shape)
    mem_space.select_hyperslab((0, into, 0, 0), count)
    dataset.id.read(mem_space, file_space, out)
