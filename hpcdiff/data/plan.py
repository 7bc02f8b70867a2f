"""Index planning for preprocessing: which files exist, which dates go to which split, rank, shard and
read block. Only coordinates are read here; every rank computes the same plan independently.

A rank gets a contiguous share of each split's (sorted) dates, so concatenating the shards of a split
in rank order gives the dates in order whatever the number of ranks. Reads happen in *blocks*: runs
of consecutive days within one ERA5 file, one target file and one shard, at most :data:`READ_DAYS`
long, so memory is bounded by a block, not by the number of years.
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcdiff.data.recipe import CONDITIONS_SPLIT, PreprocessRecipe
from hpcdiff.data.sources import Era5File, TargetFile, TargetGrid, read_target_grid, scan_era5, scan_target
from hpcdiff.data.split import SPLITS, split_dates
from hpcdiff.data.statics import check_same_grid
from hpcdiff.errors import HpcdiffError

READ_DAYS = 8  # days per read block: bounds memory (hourly ERA5: 744 steps x grid per variable)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The scanned input files (coordinates only) and the target grid."""

    era5: list[Era5File]
    targets: list[TargetFile]
    grid: TargetGrid
    static: Path


@dataclasses.dataclass(frozen=True)
class Block:
    """Consecutive days read together. ``era5_index`` ``[n, steps_per_day]`` and ``target_index``
    ``[n]`` are time indices into ``inputs.era5[era5]`` and ``inputs.targets[target]`` (``target`` -1 and
    ``target_index`` empty for a conditions-only recipe); the samples go to positions
    ``offset .. offset + n`` of shard ``shard``."""

    split: str
    shard: int
    offset: int
    dates: np.ndarray
    era5: int
    era5_index: np.ndarray
    target: int
    target_index: np.ndarray


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    split: str
    rank: int
    index: int
    dates: np.ndarray  # datetime64[D] [n]


def find_files(root: Path, patterns: Sequence[str], *, what: str) -> list[Path]:
    """Sorted files matching glob ``patterns`` (relative to ``root``); an error if none match."""
    paths: set[Path] = set()
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        paths.update(Path(p) for p in glob.glob(full) if Path(p).is_file())
    if not paths:
        raise HpcdiffError(f"{what}: no files match {list(patterns)} under {root}")
    return sorted(paths)


def scan_inputs(recipe: PreprocessRecipe) -> Inputs:
    """Scan every ERA5 and target file: time axes, grids, variables and units (no values). Without a
    target (a conditions-only recipe) the grid is the static file's."""
    root = recipe.root
    era5_vars = {v.name: v.units for v in recipe.era5.variables}
    target_vars = {v.name: v.units for v in recipe.target.variables} if recipe.target is not None else {}
    era5 = [scan_era5(p, frequency=recipe.era5.frequency, variables=era5_vars)
            for p in find_files(root, recipe.era5.files, what="era5.files")]
    for info in era5[1:]:
        if not (np.array_equal(info.lat, era5[0].lat) and np.array_equal(info.lon, era5[0].lon)):
            raise HpcdiffError(f"{info.path}: ERA5 grid differs from {era5[0].path}'s")
        if info.step_s != era5[0].step_s:
            raise HpcdiffError(f"{info.path}: time step {info.step_s} s differs from {era5[0].path}'s")
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


def _locate(files: Sequence[Era5File] | Sequence[TargetFile], dates_of: str) -> dict[np.datetime64, int]:
    """date → index of the file that holds it; a date in two files is an error."""
    where: dict[np.datetime64, int] = {}
    for i, info in enumerate(files):
        dates = info.complete_dates() if dates_of == "era5" else info.dates
        for date in dates.tolist():
            if date in where:
                raise HpcdiffError(f"{info.path}: date {date} is also in {files[where[date]].path}")
            where[date] = i
    return where


def check_era5_covers(dates: np.ndarray, inputs: Inputs, *, era5_at: dict, target_at: dict) -> None:
    """Every target date of the splits needs a complete ERA5 day (mismatched time axes otherwise). The
    error names the ERA5 file whose time span is nearest to the date and the target file."""
    for date in dates.tolist():
        if date not in era5_at:
            moment = np.datetime64(date, "s")
            zero = np.timedelta64(0, "s")
            gaps = [max(f.times[0] - moment, moment - f.times[-1], zero) for f in inputs.era5]
            nearest = inputs.era5[int(np.argmin(gaps))]
            raise HpcdiffError(f"{nearest.path}: no complete ERA5 day {date} (file spans {nearest.times[0]} "
                               f".. {nearest.times[-1]}) for the target date in "
                               f"{inputs.targets[target_at[date]].path} (mismatched time axes)")


def era5_dates(inputs: Inputs) -> np.ndarray:
    """The sorted dates (datetime64[D]) for which the ERA5 files hold a complete day."""
    return np.array(sorted(_locate(inputs.era5, "era5")), dtype="datetime64[D]")


def plan_splits(recipe: PreprocessRecipe, inputs: Inputs) -> dict[str, np.ndarray]:
    """Sorted dates (datetime64[D]) per split, each with a target value and a complete ERA5 day. A
    conditions-only recipe puts every complete ERA5 day in the one split :data:`CONDITIONS_SPLIT`."""
    if recipe.target is None:
        dates = era5_dates(inputs)
        if dates.size == 0:
            raise HpcdiffError(f"{inputs.era5[0].path.parent}: the ERA5 files hold no complete day")
        return {CONDITIONS_SPLIT: dates}
    available = np.concatenate([t.dates for t in inputs.targets])
    where = f"target files {inputs.targets[0].path.parent}"
    splits = split_dates(available, recipe.split, where=where)
    era5_at, target_at = _locate(inputs.era5, "era5"), _locate(inputs.targets, "target")
    for dates in splits.values():
        check_era5_covers(dates, inputs, era5_at=era5_at, target_at=target_at)
    return splits


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
    """Read blocks for ``shards``: runs of consecutive days in one ERA5 file, one target file and one
    shard, at most :data:`READ_DAYS` long."""
    era5_at, target_at = _locate(inputs.era5, "era5"), _locate(inputs.targets, "target")
    if not inputs.targets:  # conditions-only: no target file to keep a block within
        target_at = {date.item(): -1 for shard in shards for date in shard.dates}
    blocks = []
    for k, shard in enumerate(shards):
        start = 0
        for stop in range(1, shard.dates.size + 1):
            at_end = stop == shard.dates.size
            if at_end or _breaks(shard.dates, start, stop, era5_at, target_at):
                blocks.append(_block(shard, k, start, stop, inputs, era5_at, target_at))
                start = stop
    return blocks


def _breaks(dates: np.ndarray, start: int, stop: int, era5_at: dict, target_at: dict) -> bool:
    """Whether a block ``dates[start:stop]`` must end before ``dates[stop]``."""
    prev, nxt = dates[stop - 1].item(), dates[stop].item()
    return (stop - start >= READ_DAYS or (dates[stop] - dates[stop - 1]) != np.timedelta64(1, "D")
            or era5_at[prev] != era5_at[nxt] or target_at[prev] != target_at[nxt])


def _block(shard: ShardPlan, k: int, start: int, stop: int, inputs: Inputs, era5_at: dict,
           target_at: dict) -> Block:
    dates = shard.dates[start:stop]
    e, t = era5_at[dates[0].item()], target_at[dates[0].item()]
    target_index = np.searchsorted(inputs.targets[t].dates, dates) if t >= 0 else np.zeros(0, np.int64)
    return Block(split=shard.split, shard=k, offset=start, dates=dates, era5=e,
                 era5_index=inputs.era5[e].day_index(dates), target=t, target_index=target_index)
