"""Index planning for preprocessing: which files exist, which dates go to which split, rank, shard and
read block. Only coordinates are read here; every rank computes the same plan independently.

A rank gets a contiguous share of each split's (sorted) dates, so concatenating the shards of a split
in rank order gives the dates in order whatever the number of ranks. Reads happen in *blocks*: runs
of consecutive days within one target file and one shard, at most :data:`READ_DAYS` long, so memory is
bounded by a block, not by the number of years. A block's ERA5 days may span several ERA5 files
(:mod:`hpcdiff.data.era5` assembles them).
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcdiff.data.context import plan_context
from hpcdiff.data.era5 import Era5Inputs, scan_era5_inputs
from hpcdiff.data.formats import is_zarr_store
from hpcdiff.data.recipe import CONDITIONS_SPLIT, PreprocessRecipe
from hpcdiff.data.sources import TargetFile, TargetGrid, read_target_grid, scan_target
from hpcdiff.data.split import SPLITS, split_dates
from hpcdiff.data.statics import check_same_grid
from hpcdiff.errors import HpcdiffError

READ_DAYS = 8  # days per read block: bounds memory (hourly ERA5: 744 steps x grid per variable)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The scanned input files (coordinates only) and the target grid."""

    era5: Era5Inputs
    targets: list[TargetFile]
    grid: TargetGrid
    static: Path


@dataclasses.dataclass(frozen=True)
class Block:
    """Consecutive days read together. ``target_index`` ``[n]`` are time indices into
    ``inputs.targets[target]`` (``target`` -1 and ``target_index`` empty for a conditions-only recipe);
    the samples go to positions ``offset .. offset + n`` of shard ``shard``."""

    split: str
    shard: int
    offset: int
    dates: np.ndarray
    target: int
    target_index: np.ndarray


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    split: str
    rank: int
    index: int
    dates: np.ndarray  # datetime64[D] [n]


def find_files(root: Path, patterns: Sequence[str], *, what: str) -> list[Path]:
    """Sorted inputs matching glob ``patterns`` (relative to ``root``): files, and folders that are Zarr
    stores; an error if none match."""
    paths: set[Path] = set()
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        paths.update(Path(p) for p in glob.glob(full) if Path(p).is_file() or is_zarr_store(Path(p)))
    if not paths:
        raise HpcdiffError(f"{what}: no files match {list(patterns)} under {root}")
    return sorted(paths)


def scan_inputs(recipe: PreprocessRecipe) -> Inputs:
    """Scan every ERA5 and target file: time axes, grids, variables and units (no values). Without a
    target (a conditions-only recipe) the grid is the static file's."""
    root = recipe.root
    target_vars = {v.name: v.units for v in recipe.target.variables} if recipe.target is not None else {}
    era5 = scan_era5_inputs(find_files(root, recipe.era5.files, what="era5.files"), recipe.era5.variables,
                            frequency=recipe.era5.frequency)
    static = root / recipe.static.file
    if recipe.target is None:  # conditions-only: the static file gives the target grid
        return Inputs(era5=era5, targets=[], grid=read_target_grid(static), static=static)
    target_paths = find_files(root, recipe.target.files, what="target.files")
    grid = read_target_grid(target_paths[0])
    for path in target_paths[1:]:
        check_same_grid(grid, read_target_grid(path), path=path)
    targets = [scan_target(p, variables=target_vars) for p in target_paths]
    return Inputs(era5=era5, targets=targets, grid=grid, static=static)


def domain_window(recipe: PreprocessRecipe, grid: TargetGrid) -> tuple[slice, slice]:
    """The (y, x) slices of the domain cut; the whole grid when ``domain`` is null."""
    height, width = grid.lat.shape
    if recipe.domain is None:
        return slice(0, height), slice(0, width)
    (y0, y1), (x0, x1) = recipe.domain.y, recipe.domain.x
    if y1 > height or x1 > width:
        raise HpcdiffError(f"domain y={list(recipe.domain.y)}, x={list(recipe.domain.x)} exceeds the target "
                           f"grid (y, x) = ({height}, {width})")
    return slice(y0, y1), slice(x0, x1)


def _locate(files: Sequence[TargetFile]) -> dict[np.datetime64, int]:
    """date → index of the target file that holds it; a date in two files is an error."""
    where: dict[np.datetime64, int] = {}
    for i, info in enumerate(files):
        for date in info.dates.tolist():
            if date in where:
                raise HpcdiffError(f"{info.path}: date {date} is also in {files[where[date]].path}")
            where[date] = i
    return where


def era5_dates(inputs: Inputs) -> np.ndarray:
    """The dates ``[n]`` datetime64[D] on which every ERA5 variable is complete."""
    return inputs.era5.complete_dates()


def check_era5_covers(dates: np.ndarray, inputs: Inputs, *, target_at: dict) -> None:
    """Every target date of the splits needs a complete ERA5 day (mismatched time axes otherwise). The
    error names the ERA5 file nearest to the first missing value, the variable, the hour and the
    target file."""
    complete = inputs.era5.complete(dates)
    if not complete.all():
        date = dates[np.flatnonzero(~complete)[0]]
        raise HpcdiffError(f"{inputs.era5.missing(date)}; the target date is in "
                           f"{inputs.targets[target_at[date.item()]].path} (mismatched time axes?)")


DroppedDates = list[tuple[np.datetime64, int, str]]  # (date, offset, why): dates whose context is incomplete


def plan_splits(recipe: PreprocessRecipe, inputs: Inputs) -> tuple[dict[str, np.ndarray], DroppedDates]:
    """Sorted dates (datetime64[D]) per split, each with a target value and a complete ERA5 day, and the
    dates left out because their context (``recipe.context``: neighbouring days) is incomplete. A
    conditions-only recipe puts every complete ERA5 day in the one split :data:`CONDITIONS_SPLIT`. The
    test split's random dates are drawn among the dates that keep their context."""
    if recipe.target is None:
        dates = era5_dates(inputs)
        dropped: DroppedDates = []
        if recipe.context is not None:
            keep, dropped = plan_context(dates, section=recipe.context, complete=dates, allowed_years=None)
            dates = dates[keep]
        if dates.size == 0:
            raise HpcdiffError(f"{inputs.era5.files[0].parent}: the ERA5 inputs hold no complete day"
                               + (" with its context days" if dropped else ""))
        return {CONDITIONS_SPLIT: dates}, dropped
    if inputs.era5.calendar != "standard":
        raise HpcdiffError(f"{inputs.era5.files[0]}: the inputs use the {inputs.era5.calendar} calendar; "
                           "a dataset with targets needs standard-calendar inputs (DANRA's days). "
                           "Preprocess them as a conditions-only dataset (target: null, normalization: "
                           "{dataset: ...})")
    available = np.unique(np.concatenate([t.dates for t in inputs.targets]))
    where = f"target files {inputs.targets[0].path.parent}"
    available, dropped = _with_context(recipe, inputs, available)
    splits = split_dates(available, recipe.split, where=where)
    target_at = _locate(inputs.targets)
    for dates in splits.values():
        check_era5_covers(dates, inputs, target_at=target_at)
    return splits, dropped


def _with_context(recipe: PreprocessRecipe, inputs: Inputs,
                  available: np.ndarray) -> tuple[np.ndarray, DroppedDates]:
    """The ``available`` target dates whose context days can all be had, and the dropped ones (only dates
    of the splits' years count)."""
    if recipe.context is None or not recipe.context.offsets:
        return available, []
    complete = era5_dates(inputs)
    years = available.astype("datetime64[Y]").astype(int) + 1970
    keep = np.zeros(available.size, bool)
    dropped: DroppedDates = []
    for split_years in recipe.split.years().values():
        mine = np.isin(years, split_years)
        allowed = split_years if recipe.context.neighbours == "split" else None
        ok, lost = plan_context(available[mine], section=recipe.context, complete=complete,
                                allowed_years=allowed)
        keep[np.flatnonzero(mine)[ok]] = True
        dropped += lost
    outside = ~np.isin(years, [y for ys in recipe.split.years().values() for y in ys])
    keep |= outside  # dates of no split: split_dates ignores them
    return available[keep], sorted(dropped, key=lambda d: d[0])


def plan_shards(splits: dict[str, np.ndarray], *, rank: int, world_size: int,
                per_shard: int) -> list[ShardPlan]:
    """This rank's shards: a contiguous share of each split, cut into shards of ``per_shard`` samples."""
    shards = []
    for split in [*SPLITS, *sorted(set(splits) - set(SPLITS))]:
        if split not in splits:
            continue
        share = np.array_split(splits[split], world_size)[rank]
        for k, start in enumerate(range(0, share.size, per_shard)):
            shards.append(ShardPlan(split=split, rank=rank, index=k, dates=share[start:start + per_shard]))
    return shards


def plan_blocks(shards: Sequence[ShardPlan], inputs: Inputs) -> list[Block]:
    """Read blocks for ``shards``: runs of consecutive days in one target file and one shard, at most
    :data:`READ_DAYS` long."""
    target_at = _locate(inputs.targets)
    if not inputs.targets:  # conditions-only: no target file to keep a block within
        target_at = {date.item(): -1 for shard in shards for date in shard.dates}
    blocks = []
    for k, shard in enumerate(shards):
        start = 0
        for stop in range(1, shard.dates.size + 1):
            at_end = stop == shard.dates.size
            if at_end or _breaks(shard.dates, start, stop, target_at):
                blocks.append(_block(shard, k, start, stop, inputs, target_at))
                start = stop
    return blocks


def _breaks(dates: np.ndarray, start: int, stop: int, target_at: dict) -> bool:
    """Whether a block ``dates[start:stop]`` must end before ``dates[stop]``."""
    prev, nxt = dates[stop - 1].item(), dates[stop].item()
    return (stop - start >= READ_DAYS or (dates[stop] - dates[stop - 1]) != np.timedelta64(1, "D")
            or target_at[prev] != target_at[nxt])


def _block(shard: ShardPlan, k: int, start: int, stop: int, inputs: Inputs, target_at: dict) -> Block:
    dates = shard.dates[start:stop]
    t = target_at[dates[0].item()]
    target_index = np.searchsorted(inputs.targets[t].dates, dates) if t >= 0 else np.zeros(0, np.int64)
    return Block(split=shard.split, shard=k, offset=start, dates=dates, target=t, target_index=target_index)
