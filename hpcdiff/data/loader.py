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

Integrity: constructing a dataset checks that every shard of the split exists with the manifest's byte
size (one ``stat`` each), so a deleted or truncated shard fails before any work starts. A shard's SHA-256
is verified when a process first opens it (:func:`verify_shard`): a full read of the shard (about
0.4 GB/s per core), done once per shard per process. :meth:`ShardDataset.verify` does it for the whole
split up front; a dataset pickled afterwards carries what it verified, so DataLoader worker processes
(recreated every epoch) do not read every shard again.

HDF5 handles open lazily in each worker process and are dropped when the dataset is pickled. Call
:meth:`ShardDataset.set_epoch` before creating the DataLoader iterator of each epoch (workers get a
copy of the plan; use ``persistent_workers=False``).

Items are dicts of tensors: ``target [B, Ct, H, W]`` and ``cond [B, Cc + Cs, H, W]`` float32
(normalized; ``cond`` = dynamic ERA5 channels, those of the neighbouring days the run reads, then the
normalized static channels lsm, orography, sdf, then the two position channels when asked for, then
the pixels' places in the context box with a spatial context: :class:`SampleLayout`), with a spatial
context ``context [B, Cx · S, Hx, Wx]`` (the box at the selected days, never cropped), ``doy [B]``
float (day of year, 1..366), ``time [B]`` int64 (days since 1970-01-01), ``index [B]`` int64 (global
sample index in the split) and ``window [B, 2]`` int64 (the top-left corner of each sample's window in
the grid; zeros for whole fields).

Patch training (``patch=(h, w)``): each sample is a window of target, conditions and statics, placed by
the sample's own seed (:func:`hpcdiff.data.windows.window_origins`, from the epoch and the global
index), and read as one hyperslab per dataset: only the chunks the window touches are read (the recipe's
``shards.chunk_hw`` makes those few). Since every sample is its own read anyway, a batch is any
``batch_size`` samples of the split (:func:`plan_samples`: the whole split shuffled, cut into batches
and dealt to ranks by the same striding), not a run of one shard: every sample is used every epoch
however few samples a shard of a large grid holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from hpcdiff.data.context import (
    BOX_CHANNELS,
    ContextSelection,
    box_coordinates,
    channel_name,
    require_context,
)
from hpcdiff.data.manifest import MANIFEST, Manifest, Shard, read_manifest
from hpcdiff.data.shards import ARRAYS, file_sha256, open_shard, read_rows
from hpcdiff.data.transforms import forward
from hpcdiff.data.windows import POSITION_CHANNELS, check_patch, position_fields, window_origins
from hpcdiff.errors import HpcdiffError
from hpcdiff.seeding import SHUFFLE, mix_seed
from hpcdiff.timeaxis import day_of_year

__all__ = ["ShardDataset", "check_shard_size", "day_of_year", "plan_epoch", "plan_samples", "verify_shard"]

# (path, sha256) of the shards this process has hashed: a shard is read for its checksum once per process,
# however many datasets (a validation split is reopened at every validation) open it.
_VERIFIED: set[tuple[str, str]] = set()


def check_shard_size(root: Path, shard: Shard) -> Path:
    """The path of ``shard`` of the dataset ``root``; a one-line error naming it when it is missing or its
    size differs from the manifest's (a truncated or replaced file). Costs one ``stat``."""
    path = Path(root) / shard.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise HpcdiffError(f"{path}: missing (listed in {Path(root) / MANIFEST}); restore it or preprocess "
                           "again") from None
    except OSError as err:
        raise HpcdiffError(f"{path}: cannot read the shard ({err.strerror})") from None
    if shard.bytes is not None and size != shard.bytes:
        raise HpcdiffError(f"{path}: {size} bytes, the manifest says {shard.bytes} (truncated or replaced "
                           "after preprocessing); restore it or preprocess again")
    return path


def verify_shard(root: Path, shard: Shard) -> None:
    """Check ``shard``'s size, then its SHA-256 against the manifest: a one-line error naming the shard
    when it changed after preprocessing. The hash reads the whole file, once per shard per process."""
    path = check_shard_size(root, shard)
    key = (str(path.absolute()), shard.sha256)
    if key in _VERIFIED:
        return
    if file_sha256(path) != shard.sha256:
        raise HpcdiffError(f"{path}: sha256 mismatch (the file changed after preprocessing; "
                           "hpcdiff check tells more)")
    _VERIFIED.add(key)


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


def plan_samples(total: int, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int,
                 shuffle: bool = True, drop_last: bool = True) -> list[np.ndarray]:
    """This rank's batches of one epoch as arrays of global sample indices, for samples read one by one
    (patch training): the ``total`` samples of the split, shuffled by ``(seed, SHUFFLE, epoch)`` (the
    same on every rank), cut into batches of ``batch_size`` and dealt to ranks by striding, as
    :func:`plan_epoch` deals runs. Without ``drop_last`` the last batch may be short and the list is
    padded by wrapping around."""
    order = np.arange(total, dtype=np.int64)
    if shuffle:
        order = np.random.default_rng(mix_seed(seed, SHUFFLE, epoch)).permutation(total)
    count = total // batch_size if drop_last else math.ceil(total / batch_size)
    batches = [order[k * batch_size:(k + 1) * batch_size] for k in range(count)]
    per_rank = len(batches) // world_size if drop_last else math.ceil(len(batches) / world_size)
    if not drop_last and batches:
        batches = [batches[k % len(batches)] for k in range(per_rank * world_size)]
    return batches[:per_rank * world_size][rank::world_size]


def read_statics(manifest: Manifest, *, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The static channels of the manifest as stored in ``static.h5`` (physical units), by name, and the
    fields ``extra`` (e.g. ``lat``, ``lon``)."""
    path = manifest.root / manifest.static_path
    try:
        with h5py.File(path, "r") as f:
            return {name: f[name][...] for name in [*(c.name for c in manifest.static_channels), *extra]}
    except (OSError, KeyError) as err:
        raise HpcdiffError(f"{path}: cannot read the static fields ({err})") from None


def normalized_statics(fields: dict[str, np.ndarray], manifest: Manifest, *, positions: bool = False,
                       box: bool = False) -> np.ndarray:
    """The normalized static channels ``[Cs, H, W]`` float32 in the manifest's order, then the two
    position channels when ``positions``, then each pixel's place in the context box when ``box``
    (``fields`` then holds ``lat`` and ``lon``), as appended to every ``cond``."""
    static = [forward(fields[c.name], c.stats).astype(np.float32) for c in manifest.static_channels]
    if positions:
        static += list(position_fields(tuple(manifest.grid.shape)))
    if box:
        info = manifest.context
        static += list(box_coordinates(fields["lat"], fields["lon"], box_lat=np.asarray(info.box_lat),
                                       box_lon=np.asarray(info.box_lon)))
    return np.stack(static)


def condition_names(manifest: Manifest, *, positions: bool, context: ContextSelection | None) -> list[str]:
    """The names of the condition channels a :class:`SampleLayout` assembles, in order: ``t2m``, ...,
    ``t2m@-1``, ..., ``lsm``, ``orography``, ``sdf`` [, ``pos_y``, ``pos_x``] [, ``ctx_y``, ``ctx_x``]."""
    selection = context or ContextSelection()
    dynamic = [c.name for c in manifest.conditions]
    names = dynamic + [channel_name(n, o) for o in selection.temporal for n in dynamic]
    names += [c.name for c in manifest.static_channels]
    names += list(POSITION_CHANNELS) if positions else []
    return names + (list(BOX_CHANNELS) if selection.spatial else [])


class SampleLayout:
    """What a network reads of one sample of a dataset, and how it is assembled: ``cond`` = the same-day
    dynamic channels, the selected neighbouring days' (``temporal``), the normalized statics, the position
    channels (``positions``) and, with a spatial context, the pixels' places in the box; ``context`` = the
    box at the selected days ``[Cx · S, Hx, Wx]``. The loader and sampling's condition reader both read
    through it, so training and sampling feed a network the same channels."""

    def __init__(self, manifest: Manifest, *, positions: bool = False,
                 context: ContextSelection | None = None) -> None:
        self.manifest, self.selection = manifest, context or ContextSelection()
        self.info, self.dynamic = manifest.context, len(manifest.conditions)
        if not self.selection.empty:
            require_context(self.info, temporal=self.selection.temporal, spatial=self.selection.spatial,
                            where=str(manifest.root))
        spatial = bool(self.selection.spatial)
        self.fields = read_statics(manifest, extra=("lat", "lon") if spatial else ())
        self.static = normalized_statics(self.fields, manifest, positions=positions, box=spatial)
        self.positions = positions

    @property
    def names(self) -> list[str]:
        """The condition channels' names, in order (:func:`condition_names`)."""
        return condition_names(self.manifest, positions=self.positions, context=self.selection)

    @property
    def cond_channels(self) -> int:
        return self.dynamic * (1 + len(self.selection.temporal)) + self.static.shape[0]

    @property
    def context_shape(self) -> tuple[int, int, int] | None:
        """``(Cx · S, Hx, Wx)`` of the context a sample carries; ``None`` without a spatial context."""
        if not self.selection.spatial:
            return None
        return (len(self.info.box_variables) * len(self.selection.spatial), *self.info.box_shape)

    def read(self, arrays: dict[str, h5py.Dataset], row: int, *, cond: np.ndarray, origin: tuple[int, int],
             context: np.ndarray | None) -> None:
        """Samples ``row .. row + n`` of a shard's ``arrays`` into ``cond`` ``[n, C, h, w]`` (the windows at
        ``origin``) and ``context`` ``[n, Cx · S, Hx, Wx]`` (when the layout has one)."""
        h, w = cond.shape[-2:]
        read_rows(arrays["cond"], cond, row, origin=origin)
        for k, offset in enumerate(self.selection.temporal):
            read_rows(arrays["temporal"], cond, row, origin=origin, into=self.dynamic * (1 + k),
                      channels=self.info.temporal_channels(offset, self.dynamic))
        first = self.dynamic * (1 + len(self.selection.temporal))
        cond[:, first:] = self.static[:, origin[0]:origin[0] + h, origin[1]:origin[1] + w]
        per_day = len(self.info.box_variables) if self.info is not None else 0
        for k, offset in enumerate(self.selection.spatial):
            read_rows(arrays["context"], context, row, channels=self.info.box_channels_of(offset),
                      into=per_day * k)


class ShardDataset(torch.utils.data.Dataset):
    """Batches of split ``split`` of the preprocessed ``dataset`` for rank ``rank`` of ``world_size``."""

    def __init__(self, dataset: Path, split: str, *, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 patch: tuple[int, int] | None = None, positions: bool = False,
                 context: ContextSelection | None = None) -> None:
        assert batch_size > 0 and 0 <= rank < world_size, (batch_size, rank, world_size)
        self.root = Path(dataset)
        self.manifest: Manifest = read_manifest(self.root)
        if self.manifest.conditions_only:
            raise HpcdiffError(f"{self.root}: a conditions-only dataset (no targets) cannot be trained on; "
                               f"train on {self.manifest.normalization_from.dataset}, whose normalization it "
                               "uses, and sample this one")
        splits = self.manifest.splits
        if split not in splits or not splits[split].shards:
            raise HpcdiffError(f"{self.root}: split {split!r} has no samples (splits: {', '.join(splits)})")
        self.shards = splits[split].shards
        self.paths = [check_shard_size(self.root, s) for s in self.shards]  # before any work: cheap
        self.split, self.batch_size, self.rank, self.world_size = split, batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.grid = tuple(self.manifest.grid.shape)
        if patch is not None:
            check_patch(patch, self.grid, where=str(self.root))
        self.patch = patch
        self.sizes = [s.n for s in self.shards]
        self.chunk = self.manifest.batch_chunk
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.layout = SampleLayout(self.manifest, positions=positions, context=context)
        self.mask = torch.from_numpy(self.layout.fields["lsm"].astype(np.float32))[None, None]
        self.sdf_km = self.layout.fields["sdf"].astype(np.float64)  # [H, W], km, positive on land
        self._files: dict[int, tuple[dict[str, h5py.Dataset], np.ndarray]] = {}
        self._verified: set[int] = set()  # shards whose checksum this object (or its pickler) verified
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.patch is not None:  # samples read one by one: any samples of the split make a batch
            self._plan = plan_samples(sum(self.sizes), batch_size=self.batch_size, seed=self.seed,
                                      epoch=epoch, rank=self.rank, world_size=self.world_size,
                                      shuffle=self.shuffle, drop_last=self.drop_last)
            return
        self._plan = plan_epoch(self.sizes, batch_size=self.batch_size, chunk=self.chunk,
                                seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size,
                                shuffle=self.shuffle, drop_last=self.drop_last)

    def __len__(self) -> int:
        return len(self._plan)

    def verify(self) -> None:
        """Verify the checksum of every shard of the split now (:func:`verify_shard`): a read of the whole
        split, once per process. Call it before handing the dataset to DataLoader workers, which then
        skip the shards it verified."""
        for shard in range(len(self.shards)):
            self._verify(shard)

    def _verify(self, shard: int) -> None:
        if shard not in self._verified:
            verify_shard(self.root, self.shards[shard])
            self._verified.add(shard)

    def _shard(self, shard: int) -> tuple[dict[str, h5py.Dataset], np.ndarray]:
        """The arrays of a shard by name and its ``time`` ``[n]``, opened on first use in this process
        (looking a dataset up by name costs tens of microseconds: done once). The shard's checksum is
        verified first, unless already done in this process or before pickling."""
        if shard not in self._files:
            self._verify(shard)
            f = open_shard(self.paths[shard])
            self._files[shard] = ({name: f[name] for name in ARRAYS if name in f}, f["time"][...])
        return self._files[shard]

    def _empty(self, n: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
        """Uninitialized ``target``, ``cond`` (and ``context``) arrays of a batch of ``n`` windows ``hw``."""
        out = {"target": np.empty((n, len(self.manifest.targets), *hw), np.float32),
               "cond": np.empty((n, self.layout.cond_channels, *hw), np.float32)}
        if self.layout.context_shape is not None:
            out["context"] = np.empty((n, *self.layout.context_shape), np.float32)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.patch is not None:
            return self._windows(self._plan[i])
        shard, start, stop = (int(v) for v in self._plan[i])
        arrays, days = self._shard(shard)
        out = self._empty(stop - start, self.grid)
        read_rows(arrays["target"], out["target"], start)
        self.layout.read(arrays, start, cond=out["cond"], origin=(0, 0), context=out.get("context"))
        days = days[start:stop]
        return {**{k: torch.from_numpy(v) for k, v in out.items()},
                "doy": torch.from_numpy(day_of_year(days)), "time": torch.from_numpy(days.copy()),
                "index": torch.arange(start, stop, dtype=torch.int64) + int(self.offsets[shard]),
                "window": torch.zeros((stop - start, 2), dtype=torch.int64)}

    def _windows(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """The batch of the samples with global indices ``index [B]``, each a window placed by its own seed
        and read as one hyperslab per dataset."""
        origins = window_origins(index, seed=self.seed, epoch=self.epoch, grid=self.grid, patch=self.patch)
        shards = np.searchsorted(self.offsets, index, side="right") - 1
        out = self._empty(len(index), self.patch)
        days = np.empty(len(index), np.int64)
        for k, (shard, (r, c)) in enumerate(zip(shards.tolist(), origins.tolist(), strict=True)):
            arrays, shard_days = self._shard(shard)
            row = int(index[k] - self.offsets[shard])
            read_rows(arrays["target"], out["target"][k:k + 1], row, origin=(r, c))
            context = out["context"][k:k + 1] if "context" in out else None
            self.layout.read(arrays, row, cond=out["cond"][k:k + 1], origin=(r, c), context=context)
            days[k] = shard_days[row]
        return {**{k: torch.from_numpy(v) for k, v in out.items()},
                "doy": torch.from_numpy(day_of_year(days)), "time": torch.from_numpy(days),
                "index": torch.from_numpy(np.asarray(index, np.int64).copy()),
                "window": torch.from_numpy(origins)}

    def close(self) -> None:
        for arrays, _ in self._files.values():
            next(iter(arrays.values())).file.close()
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}  # h5py handles do not survive pickling: each worker opens its own
        return state
