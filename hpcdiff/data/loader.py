"""A rank-aware, map-style dataset over the *batches* of a preprocessed split.

Use it with ``DataLoader(ds, batch_size=None, num_workers=k)``. A batch is a run of ``batch_size``
consecutive samples of one shard, read with one contiguous read per dataset (``target``, ``cond``);
the epoch's plan shuffles the order of the runs and, when ``batch_size > batch_chunk``, shifts where
runs start by a random multiple of ``batch_chunk`` (so batch composition changes between epochs while
reads stay chunk-aligned). The plan of epoch ``e`` depends only on ``(seed, e, rank, world_size)``:
training resumes mid-epoch from (epoch, batch index). Ranks take disjoint strided shares of the
same shuffled run list (rank r gets runs r, r + W, r + 2W, ...), all of the same length (``drop_last``;
without it the list is padded by wrapping around, as ``DistributedSampler`` does). Striding makes the
runs of global step k the same whether W ranks take one each or one rank accumulates W of them, so
2 ranks x 1 micro-batch train exactly like 1 rank x 2 accumulation steps.

HDF5 handles open lazily in each worker process and are dropped when the dataset is pickled. Call
:meth:`ShardDataset.set_epoch` before creating the DataLoader iterator of each epoch (workers get a
copy of the plan; use ``persistent_workers=False``).

Items are dicts of tensors: ``target [B, Ct, H, W]`` and ``cond [B, Cc + Cs, H, W]`` float32
(normalized; ``cond`` = dynamic ERA5 channels, then the normalized static channels lsm, orography,
sdf), ``doy [B]`` float (day of year, 1..366), ``time [B]`` int64 (days since 1970-01-01) and
``index [B]`` int64 (global sample index in the split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from hpcdiff.data.manifest import Manifest, read_manifest
from hpcdiff.data.shards import open_shard, read_rows
from hpcdiff.data.transforms import forward
from hpcdiff.errors import HpcdiffError
from hpcdiff.seeding import SHUFFLE, mix_seed
from hpcdiff.timeaxis import day_of_year

__all__ = ["ShardDataset", "day_of_year", "plan_epoch"]


def plan_epoch(sizes: Sequence[int], *, batch_size: int, chunk: int, seed: int, epoch: int, rank: int,
               world_size: int, shuffle: bool = True, drop_last: bool = True) -> np.ndarray:
    """This rank's batches of one epoch as rows ``(shard, start, stop)`` ``[n_batches, 3]`` int64, from
    shard sizes ``sizes`` (samples). The number of batches is the same on every rank and every epoch."""
    rng = np.random.default_rng(mix_seed(seed, SHUFFLE, epoch))  # the same on every rank: shares are disjoint
    shift = shuffle and drop_last and chunk < batch_size
    max_phase = chunk * (math.ceil(batch_size / chunk) - 1) if shift else 0
    runs = []
    for shard, n in enumerate(sizes):
        phase = chunk * int(rng.integers(max_phase // chunk + 1)) if shift else 0
        count = (n - max_phase) // batch_size if drop_last else math.ceil(n / batch_size)
        starts = phase + batch_size * np.arange(max(count, 0))
        runs += [(shard, s, min(s + batch_size, n)) for s in starts.tolist()]
    runs_array = np.array(runs, dtype=np.int64).reshape(-1, 3)
    if shuffle:
        runs_array = runs_array[rng.permutation(len(runs_array))]
    if drop_last:
        per_rank = len(runs_array) // world_size
    else:
        per_rank = math.ceil(len(runs_array) / world_size)
        runs_array = np.resize(runs_array, (per_rank * world_size, 3))  # wraps around
    return runs_array[:per_rank * world_size][rank::world_size]


def read_statics(manifest: Manifest) -> dict[str, np.ndarray]:
    """The static channels of the manifest as stored in ``static.h5`` (physical units), by name."""
    path = manifest.root / manifest.static_path
    try:
        with h5py.File(path, "r") as f:
            return {c.name: f[c.name][...] for c in manifest.static_channels}
    except (OSError, KeyError) as err:
        raise HpcdiffError(f"{path}: cannot read the static fields ({err})") from None


def normalized_statics(fields: dict[str, np.ndarray], manifest: Manifest) -> np.ndarray:
    """The normalized static channels ``[Cs, H, W]`` float32 in the manifest's order, as appended to
    every ``cond``."""
    return np.stack([forward(fields[c.name], c.stats).astype(np.float32) for c in manifest.static_channels])


class ShardDataset(torch.utils.data.Dataset):
    """Batches of split ``split`` of the preprocessed ``dataset`` for rank ``rank`` of ``world_size``."""

    def __init__(self, dataset: Path, split: str, *, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True) -> None:
        assert batch_size > 0 and 0 <= rank < world_size, (batch_size, rank, world_size)
        self.root = Path(dataset)
        self.manifest: Manifest = read_manifest(self.root)
        splits = self.manifest.splits
        if split not in splits or not splits[split].shards:
            raise HpcdiffError(f"{self.root}: split {split!r} has no samples (splits: {', '.join(splits)})")
        shards = splits[split].shards
        self.split, self.batch_size, self.rank, self.world_size = split, batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.paths = [self.root / s.path for s in shards]
        self.sizes = [s.n for s in shards]
        self.chunk = self.manifest.batch_chunk
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self._load_static()
        self._files: dict[int, tuple[h5py.Dataset, h5py.Dataset, np.ndarray]] = {}
        self.set_epoch(0)

    def _load_static(self) -> None:
        """Normalized static channels ``[Cs, H, W]``, the land mask and the coast distance."""
        fields = read_statics(self.manifest)
        self._static = normalized_statics(fields, self.manifest)
        self.mask = torch.from_numpy(fields["lsm"].astype(np.float32))[None, None]
        self.sdf_km = fields["sdf"].astype(np.float64)  # [H, W], km, positive on land

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._plan = plan_epoch(self.sizes, batch_size=self.batch_size, chunk=self.chunk,
                                seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size,
                                shuffle=self.shuffle, drop_last=self.drop_last)

    def __len__(self) -> int:
        return len(self._plan)

    def _shard(self, shard: int) -> tuple[h5py.Dataset, h5py.Dataset, np.ndarray]:
        """``(target, cond, time)`` of a shard, opened on first use in this process; ``time`` ``[n]`` is
        read whole (looking a dataset up by name costs tens of microseconds: done once)."""
        if shard not in self._files:
            f = open_shard(self.paths[shard])
            self._files[shard] = (f["target"], f["cond"], f["time"][...])
        return self._files[shard]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        shard, start, stop = (int(v) for v in self._plan[i])
        target_ds, cond_ds, days = self._shard(shard)
        n, hw = stop - start, self._static.shape[1:]
        target = np.empty((n, target_ds.shape[1], *hw), np.float32)
        read_rows(target_ds, target, start)
        cond = np.empty((n, cond_ds.shape[1] + self._static.shape[0], *hw), np.float32)
        read_rows(cond_ds, cond, start)  # dynamic channels first, then the statics
        cond[:, cond_ds.shape[1]:] = self._static
        days = days[start:stop]
        return {"target": torch.from_numpy(target), "cond": torch.from_numpy(cond),
                "doy": torch.from_numpy(day_of_year(days)), "time": torch.from_numpy(days.copy()),
                "index": torch.arange(start, stop, dtype=torch.int64) + int(self.offsets[shard])}

    def close(self) -> None:
        for target_ds, _, _ in self._files.values():
            target_ds.file.close()
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}  # h5py handles do not survive pickling: each worker opens its own
        return state
