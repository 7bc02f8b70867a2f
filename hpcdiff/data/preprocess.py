"""``hpcdiff preprocess``: NetCDF → packed HDF5 shards, as one process or as MPI ranks.

The steps, each agreed across ranks (:class:`~hpcdiff.data.collective.Collective`), so an error on
any rank makes every rank raise the same one-line error instead of hanging:

1. every rank scans the inputs and plans (:mod:`hpcdiff.data.plan`): splits, its contiguous share
   of each split, shards and read blocks; statics and the regridding weights are computed once;
2. rank 0 creates a temporary folder next to ``out`` (shared file system);
3. pass 1, per rank: read blocks of days, aggregate to daily, regrid, apply the transforms' shape
   function ``g``, write the shards (final chunked layout, un-normalized) and accumulate training
   statistics (float64);
4. the statistics are gathered and merged in rank order (same on every rank);
5. pass 2, per rank: normalize each shard in place (compress it, if asked); sha256 per shard;
6. rank 0 writes ``static.h5``, ``recipe.yaml`` and, last, ``manifest.json``, then renames the folder
   onto ``out`` (an old finished dataset is replaced only once the new one is complete).

Memory is bounded by one read block (:data:`hpcdiff.data.plan.READ_DAYS` days), not by the years.

A conditions-only recipe (``target: null``, :mod:`hpcdiff.data.conditions_only`) takes the same steps
without targets: shards hold ``cond`` and ``time`` only, pass 2 normalizes with the named training
dataset's statistics, and the manifest carries that dataset's channel entries.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
from tqdm import tqdm

from hpcdiff import __version__
from hpcdiff.config import dump_config, to_dict
from hpcdiff.data import plan as planning
from hpcdiff.data.collective import Collective
from hpcdiff.data.conditions_only import (
    borrowed_channels,
    borrowed_context,
    load_normalization,
    normalization_record,
)
from hpcdiff.data.context import BoxPlan, ContextInfo, Dropped, check_inside, needed_days, plan_box
from hpcdiff.data.era5 import units_of
from hpcdiff.data.formats import OpenInputs
from hpcdiff.data.manifest import SCHEMA_VERSION, Manifest, check_replaceable, write_manifest
from hpcdiff.data.recipe import PreprocessRecipe, TargetVariable, resolve_root
from hpcdiff.data.regrid import BilinearPlan, apply_bilinear, plan_bilinear, to_rotated_pole
from hpcdiff.data.residual import residual_pairs
from hpcdiff.data.shards import (
    TIME_UNITS,
    compress_shard,
    create_shard,
    file_sha256,
    samples_per_shard,
    shard_name,
    standardize_shard,
)
from hpcdiff.data.sources import read_target_days
from hpcdiff.data.statics import StaticFields, load_statics
from hpcdiff.data.transforms import RunningStats, channel_stats, merged, shape_forward
from hpcdiff.dist import DistEnv
from hpcdiff.fsutil import (
    create_temporary,
    ensure_writable_dir,
    replace_dir,
    require_free_space,
    write_errors,
)
from hpcdiff.provenance import provenance
from hpcdiff.timeaxis import iso_dates, to_days
from hpcdiff.variables import bounds_of

T = TypeVar("T")
STATIC_FIELDS = 5  # lat, lon, lsm, orography, sdf in static.h5, float32 [H, W]
SHARD_OVERHEAD_BYTES = 1 << 16  # HDF5 superblock, object headers and chunk index of a shard, at most


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything every rank plans before reading values."""

    recipe: PreprocessRecipe
    inputs: planning.Inputs
    splits: dict[str, np.ndarray]
    window: tuple[slice, slice]
    statics: StaticFields
    regrid: BilinearPlan
    per_shard: int
    normalization: Manifest | None = None  # the training dataset of a conditions-only recipe
    box: BoxPlan | None = None  # the context box on the ERA5 grid (recipe context.box)
    dropped: planning.DroppedDates = dataclasses.field(default_factory=list)  # context incomplete

    @property
    def target_variables(self) -> list[TargetVariable]:
        """The recipe's target variables (none for a conditions-only recipe)."""
        return list(self.recipe.target.variables) if self.recipe.target is not None else []

    @property
    def hw(self) -> tuple[int, int]:
        return self.statics.lsm.shape

    @property
    def offsets(self) -> list[int]:
        """The neighbouring days stored in ``temporal`` (recipe ``context.days`` without 0)."""
        return self.recipe.context.offsets if self.recipe.context is not None else []

    @property
    def days(self) -> list[int]:
        """Every stored day offset, 0 included (the ``context`` array's order)."""
        return list(self.recipe.context.days) if self.recipe.context is not None else [0]

    def sample_bytes(self) -> int:
        """Bytes of one sample in a shard: every channel float32 ``[H, W]`` (the neighbouring days' too),
        the context box's ``[Hx, Wx]`` and its time stamp."""
        return sample_bytes(self.recipe, hw=self.hw, box=self.box)

    def dataset_bytes(self) -> int:
        """What the dataset will take on disk, uncompressed (pass 1 writes it so): the samples, HDF5's own
        structures in every shard (a split's last shard on each rank may be short: one more per split),
        one shard of headroom for compressing a shard into a copy, and the static fields."""
        sizes = [int(dates.size) for dates in self.splits.values()]
        shards = sum(-(-n // self.per_shard) + 1 for n in sizes)
        return ((sum(sizes) + self.per_shard) * self.sample_bytes() + shards * SHARD_OVERHEAD_BYTES
                + STATIC_FIELDS * self.statics.lsm.size * 4)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """``(target, condition)`` channel pairs of a residual (see :mod:`hpcdiff.data.residual`)."""
        channels = [[(v.name, v.transform, v.scale) for v in variables]
                    for variables in (self.target_variables, self.recipe.era5.variables)]
        return residual_pairs(*channels)


def prepare(recipe: PreprocessRecipe) -> Setup:
    """Scan inputs, plan splits, load statics, plan the regridding (no dynamic values read)."""
    inputs = planning.scan_inputs(recipe)
    window = planning.domain_window(recipe, inputs.grid)
    statics = load_statics(inputs.static, recipe.static, grid=inputs.grid, window=window)
    era5 = inputs.era5
    lat, lon = statics.lat, statics.lon
    if era5.projection is not None:  # a rotated pole: regrid in its own coordinates
        lat, lon = to_rotated_pole(lat, lon, era5.projection, where=str(era5.files[0]))
    regrid = plan_bilinear(era5.lat, era5.lon, lat, lon, where=str(era5.files[0]))
    normalization = None
    if recipe.conditions_only:
        normalization = load_normalization(recipe, grid=inputs.grid, window=window, statics=statics)
    box = None
    if recipe.context is not None and recipe.context.box is not None:
        box = plan_box(recipe.context.box, lat=era5.lat, lon=era5.lon,
                       names=[v.name for v in recipe.era5.variables], where=str(era5.files[0]),
                       rotated=era5.projection is not None)
        check_inside(box, lat=statics.lat, lon=statics.lon, where="recipe")
        if normalization is not None:
            borrowed_context(normalization, recipe.context, box=box, where=str(recipe.normalization.dataset))
    per_shard = samples_per_shard(sample_bytes=sample_bytes(recipe, hw=statics.lsm.shape, box=box),
                                  samples=recipe.shards.samples_per_shard, shard_mb=recipe.shards.shard_mb,
                                  chunk=recipe.shards.batch_chunk)
    splits, dropped = planning.plan_splits(recipe, inputs)
    return Setup(recipe=recipe, inputs=inputs, splits=splits, window=window, statics=statics, regrid=regrid,
                 per_shard=per_shard, normalization=normalization, box=box, dropped=dropped)


def sample_bytes(recipe: PreprocessRecipe, *, hw: tuple[int, int], box: BoxPlan | None) -> int:
    """Bytes of one sample in a shard (see :meth:`Setup.sample_bytes`)."""
    days = len(recipe.context.days) if recipe.context is not None else 1
    channels = len(recipe.era5.variables) * days + (len(recipe.target.variables) if recipe.target else 0)
    boxed = 0 if box is None else len(box.variables) * days * box.shape[0] * box.shape[1]
    return (channels * hw[0] * hw[1] + boxed) * 4 + 8


def shaped(fields: np.ndarray, specs: list) -> np.ndarray:
    """``g`` of each channel of ``fields`` ``[n, C, ...]`` (the transforms' shape function), float32."""
    for c, spec in enumerate(specs):
        fields[:, c] = shape_forward(fields[:, c], kind=spec.transform, scale=spec.scale)
    return fields.astype(np.float32)


def read_block(setup: Setup, block: planning.Block, files: OpenInputs) -> dict[str, np.ndarray]:
    """One block's arrays in transformed (``g``, un-normalized) space, float32: ``cond`` ``[n, Cc, H, W]``,
    ``target`` ``[n, Ct, H, W]`` (not for a conditions-only recipe), with a context ``temporal``
    ``[n, Cc · D', H, W]`` (the neighbouring days) and, with a box, ``context`` ``[n, Cx · D, Hx, Wx]``."""
    recipe = setup.recipe
    days = needed_days(block.dates, setup.offsets)
    raw = setup.inputs.era5.read_days(files, days)
    regridded = shaped(apply_bilinear(setup.regrid, raw), list(recipe.era5.variables))
    rows = {o: np.searchsorted(days, block.dates + np.timedelta64(o, "D")) for o in setup.days}
    out = {"cond": regridded[rows[0]]}
    if setup.offsets:
        out["temporal"] = np.concatenate([regridded[rows[o]] for o in setup.offsets], axis=1)
    if setup.box is not None:
        specs = [recipe.era5.variables[i] for i in setup.box.variables]
        box = shaped(setup.box.cut(raw), specs)
        out["context"] = np.concatenate([box[rows[o]] for o in setup.days], axis=1)
    if recipe.target is not None:
        target = read_target_days(files, setup.inputs.targets[block.target], recipe.target.variables,
                                  index=block.target_index, window=setup.window)
        out["target"] = shaped(target, list(recipe.target.variables))
    return out


def write_unnormalized(setup: Setup, shards: list[planning.ShardPlan], blocks: list[planning.Block], *,
                       folder: Path, progress: bool) -> dict[str, RunningStats]:
    """Pass 1: shards ``folder/shards/<split>-<rank>-<k>.h5`` in ``g`` (un-normalized) space; training
    statistics of ``g`` (targets over land pixels, conditions over the whole domain) and of the
    residuals ``g_t - g_c`` of the :attr:`Setup.pairs` (whole domain)."""
    recipe = setup.recipe
    dynamic = len(recipe.era5.variables)
    channels = {"target": len(setup.target_variables), "cond": dynamic}
    if recipe.target is None:  # conditions-only: no target array
        del channels["target"]
    stats = {name: RunningStats.empty(c) for name, c in channels.items()}
    stats["residual"] = RunningStats.empty(len(setup.pairs))
    if setup.offsets:
        channels["temporal"] = dynamic * len(setup.offsets)
    box = None
    if setup.box is not None:
        box = (len(setup.box.variables) * len(setup.days), setup.box.shape)
        stats["context"] = RunningStats.empty(len(setup.box.variables))
    land = setup.statics.lsm > 0.5
    by_shard: dict[int, list[planning.Block]] = {}
    for block in blocks:
        by_shard.setdefault(block.shard, []).append(block)
    total = sum(s.dates.size for s in shards)
    with OpenInputs() as files, tqdm(total=total, disable=not progress, unit="day", file=sys.stderr,
                                    desc="preprocess") as bar:
        for k, shard in enumerate(shards):
            with create_shard(folder / shard_name(shard.split, shard.rank, shard.index), n=shard.dates.size,
                              channels=channels, hw=setup.hw, chunk=recipe.shards.batch_chunk,
                              chunk_hw=recipe.shards.chunk_hw, box=box) as f:
                f["time"][:] = to_days(shard.dates)
                for block in by_shard[k]:
                    arrays = read_block(setup, block, files)
                    rows = slice(block.offset, block.offset + block.dates.size)
                    for name, values in arrays.items():
                        f[name][rows] = values
                    if block.split == "train":
                        _update_stats(stats, arrays, setup=setup, land=land)
                    bar.update(block.dates.size)
    return stats


def _update_stats(stats: dict[str, RunningStats], arrays: dict[str, np.ndarray], *, setup: Setup,
                  land: np.ndarray) -> None:
    """Add a training block: targets over land, same-day conditions and the same-day box everywhere, and
    the residuals of :attr:`Setup.pairs`."""
    target, cond = arrays["target"], arrays["cond"]
    stats["target"].update(target, land)
    stats["cond"].update(cond)
    _update_residual(stats["residual"], setup.pairs, target=target, cond=cond)
    if "context" in stats:
        day0 = setup.days.index(0) * len(setup.box.variables)
        stats["context"].update(arrays["context"][:, day0:day0 + len(setup.box.variables)])


def _update_residual(stats: RunningStats, pairs: list[tuple[int, int]], *, target: np.ndarray,
                     cond: np.ndarray) -> None:
    """Add ``g_t - g_c`` ``[n, P, H, W]`` of the residual ``pairs`` to ``stats``."""
    if pairs:
        k, i = (list(idx) for idx in zip(*pairs, strict=True))
        stats.update(np.subtract(target[:, k], cond[:, i], dtype=np.float64))


def finalize_shards(setup: Setup, shards: list[planning.ShardPlan], *, folder: Path,
                    stats: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Pass 2: normalize each shard in place (then compress, if asked); checksums."""
    entries = []
    for shard in shards:
        name = shard_name(shard.split, shard.rank, shard.index)
        attrs = {"split": shard.split, "rank": shard.rank, "index": shard.index,
                 "schema_version": SCHEMA_VERSION}
        standardize_shard(folder / name, stats=shard_stats(setup, stats), attrs=attrs)
        if setup.recipe.shards.compression is not None:
            compress_shard(folder / name, compression=setup.recipe.shards.compression)
        entries.append({"split": shard.split, "path": name, "n": int(shard.dates.size),
                        "sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size})
    return entries


def shard_stats(setup: Setup, stats: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The statistics each array of a shard is normalized with: the neighbouring days' conditions with
    the same-day conditions' (per variable), every day's box with the same-day box's."""
    out = {k: stats[k] for k in ("target", "cond") if k in stats}
    if setup.offsets:
        out["temporal"] = list(stats["cond"]) * len(setup.offsets)
    if setup.box is not None:
        out["context"] = list(stats["box"]) * len(setup.days)
    return out


def fitted_channels(setup: Setup, parts: list[dict[str, RunningStats]]) -> dict[str, list[dict[str, Any]]]:
    """Statistics of the target and condition channels merged over ranks, and the residual RMS of each
    target (normalized units; ``None`` where it has no pair). A conditions-only recipe: the conditions'
    statistics of the training dataset it names (nothing was fitted)."""
    if setup.normalization is not None:
        out = {"cond": [e["stats"] for e in borrowed_channels(setup.normalization)["conditions"]]}
        if setup.box is not None:
            out["box"] = [dict(c["stats"]) for c in setup.normalization.context.box_channels]
        return out
    recipe, out = setup.recipe, {}
    for key, specs in (("target", setup.target_variables), ("cond", recipe.era5.variables)):
        total = merged([p[key] for p in parts])
        stats = channel_stats(total, kinds=[s.transform for s in specs], scales=[s.scale for s in specs],
                              names=[s.name for s in specs])
        out[key] = stats
    residual = merged([p["residual"] for p in parts])
    rms: list[float | None] = [None] * len(setup.target_variables)
    for j, (k, _) in enumerate(setup.pairs):
        mean_square = residual.m2[j] / max(residual.count[j], 1.0) + residual.mean[j] ** 2
        rms[k] = float(np.sqrt(mean_square) / out["target"][k]["std"])
    out["residual_rms"] = rms
    if setup.box is not None:
        specs = [recipe.era5.variables[i] for i in setup.box.variables]
        out["box"] = channel_stats(merged([p["context"] for p in parts]),
                                   kinds=[s.transform for s in specs], scales=[s.scale for s in specs],
                                   names=[f"context {s.name}" for s in specs])
    return out


def context_record(setup: Setup, channels: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The manifest's ``context`` (:class:`hpcdiff.data.context.ContextInfo`)."""
    section, box = setup.recipe.context, setup.box
    calendar = setup.inputs.era5.calendar
    dropped = {}
    for date, offset, why in setup.dropped:
        day, missing = iso_dates(to_days(np.array([date, date + np.timedelta64(offset, "D")])), calendar)
        dropped[day] = Dropped(date=day, offset=offset, missing=missing, why=why)
    names = [setup.recipe.era5.variables[i].name for i in box.variables] if box is not None else []
    entries = [{"name": n, "units": units_of(setup.recipe.era5.variables[i]), "stats": s}
               for n, i, s in zip(names, box.variables if box else [], channels.get("box", []), strict=True)]
    info = ContextInfo(days=tuple(section.days), neighbours=section.neighbours, box_variables=tuple(names),
                       box_channels=tuple(entries),
                       box_lat=tuple(float(v) for v in box.lat) if box is not None else (),
                       box_lon=tuple(float(v) for v in box.lon) if box is not None else (), dropped=dropped)
    return info.to_json()


def zscore_stats(field: np.ndarray) -> dict[str, Any]:
    """Identity-shape statistics of a field (a constant field keeps std 1)."""
    std = float(np.std(field))
    return {"transform": "zscore", "scale": 1.0, "mean": float(np.mean(field)),
            "std": std if std > 0 else 1.0}


def static_channels(statics: StaticFields) -> list[dict[str, Any]]:
    """Static channels and their normalization over the domain: lsm as is (0/1), orography and SDF
    z-scored."""
    identity = {"transform": "zscore", "scale": 1.0, "mean": 0.0, "std": 1.0}
    return [{"name": "lsm", "units": "1", "stats": identity},
            {"name": "orography", "units": "m", "stats": zscore_stats(statics.orography)},
            {"name": "sdf", "units": "km", "stats": zscore_stats(statics.sdf)}]


def write_static(path: Path, statics: StaticFields) -> None:
    """``static.h5``: ``lat``/``lon`` (degrees), ``lsm`` (0/1), ``orography`` (m), ``sdf`` (km) ``[H, W]``,
    ``x`` ``[W]`` / ``y`` ``[H]`` (m)."""
    units = {"lat": "degrees_north", "lon": "degrees_east", "lsm": "1", "orography": "m", "sdf": "km",
             "x": "m", "y": "m"}
    with h5py.File(path, "w") as f:
        for name, unit in units.items():
            dtype = np.float64 if name in ("x", "y") else np.float32
            f.create_dataset(name, data=np.asarray(getattr(statics, name), dtype)).attrs["units"] = unit


def build_manifest(setup: Setup, *, channels: dict[str, list[dict[str, Any]]],
                   entries: list[dict[str, Any]], static_sha256: str) -> dict[str, Any]:
    """The manifest (see the module docstring of :mod:`hpcdiff.data.loader` for the reader's view)."""
    recipe, grid = setup.recipe, setup.inputs.grid
    if setup.normalization is not None:  # conditions-only: the training dataset's entries, and its name
        borrowed = borrowed_channels(setup.normalization)
        targets, conditions = borrowed["targets"], borrowed["conditions"]
        statics = borrowed["static_channels"]
        extra = {"conditions_only": True, "normalization_from": normalization_record(setup.normalization)}
    else:
        targets, conditions = fitted_entries(setup, channels)
        statics, extra = static_channels(setup.statics), {}
    splits = {}
    for split, dates in setup.splits.items():
        shards = [{k: e[k] for k in ("path", "n", "sha256", "bytes")} for e in entries if e["split"] == split]
        splits[split] = {"n": int(dates.size), "shards": shards,
                         "dates": iso_dates(to_days(dates), setup.inputs.era5.calendar)}
    window = {name: [cut.start, cut.stop] for name, cut in zip(("y", "x"), setup.window, strict=True)}
    return {"schema_version": SCHEMA_VERSION, "hpcdiff_version": __version__, "provenance": provenance(),
            "time_units": TIME_UNITS, "calendar": setup.inputs.era5.calendar,
            "recipe": to_dict(recipe), "targets": targets, "conditions": conditions,
            "static_channels": statics, **extra,
            **({"context": context_record(setup, channels)} if recipe.context is not None else {}),
            "grid": {"shape": list(setup.hw), "full_shape": list(grid.lat.shape), "window": window,
                     "grid_mapping": grid.mapping_name, "projection": grid.mapping},
            "static": {"path": "static.h5", "sha256": static_sha256},
            "batch_chunk": recipe.shards.batch_chunk, "splits": splits}


def fitted_entries(setup: Setup, channels: dict[str, list[dict[str, Any]]]) -> tuple[list, list]:
    """The manifest's ``targets`` and ``conditions`` entries from the fitted ``channels``."""
    targets = [{"name": v.name, "units": v.units, "stats": s, "bounds": list(bounds_of(v.name)),
                "residual_rms": rms}
               for v, s, rms in zip(setup.target_variables, channels["target"], channels["residual_rms"],
                                    strict=True)]
    conditions = [{"name": v.name, "units": units_of(v),
                   "source_units": v.units, "kind": v.kind, "stats": s}
                  for v, s in zip(setup.recipe.era5.variables, channels["cond"], strict=True)]
    return targets, conditions


def make_temp_dir(out: Path, *, needed: int) -> Path:
    """A fresh temporary folder next to ``out`` with ``shards/``. Refuses to later replace
    an existing ``out`` that is not a dataset (a safety net against ``--out ~``), and to start when the
    file system has less than ``needed`` bytes free (an old ``out`` stays until the new one is done)."""
    check_replaceable(out)
    ensure_writable_dir(out.parent)
    require_free_space(out.parent, needed, what=f"the dataset {out.name}")
    tmp = create_temporary(out, suffix="", directory=True)  # removes this output's stale temporaries
    (tmp / "shards").mkdir()
    return tmp


def publish(setup: Setup, tmp: Path, out: Path, *, channels: dict[str, list[dict[str, Any]]],
            entries: list[dict[str, Any]]) -> None:
    """Rank 0: statics, resolved recipe, manifest (last), then the atomic rename onto ``out``."""
    write_static(tmp / "static.h5", setup.statics)
    dump_config(setup.recipe, tmp / "recipe.yaml")
    manifest = build_manifest(setup, channels=channels, entries=entries,
                              static_sha256=file_sha256(tmp / "static.h5"))
    write_manifest(tmp, manifest)
    replace_dir(tmp, out)


def writing(out: Path, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` with a full disk or another file-system refusal turned into a one-line error naming the
    dataset ``out`` (:func:`hpcdiff.fsutil.write_failure`), so that every rank reports it."""
    def run() -> T:
        with write_errors(out):
            return fn()
    return run


def run_preprocess(recipe: PreprocessRecipe, out: Path, *, env: DistEnv, recipe_path: Path | None = None,
                   progress: bool = True) -> Path:
    """Build the dataset ``out`` from ``recipe`` on this rank of ``env`` (all ranks call this)."""
    coll = Collective.connect(env)
    out = Path(out).absolute()
    recipe = resolve_root(recipe, recipe_path)
    setup = coll.agreed(lambda: prepare(recipe))
    shards = planning.plan_shards(setup.splits, rank=coll.rank, world_size=coll.world_size,
                                  per_shard=setup.per_shard)
    blocks = coll.agreed(lambda: planning.plan_blocks(shards, setup.inputs))
    tmp = coll.on_root(lambda: make_temp_dir(out, needed=setup.dataset_bytes()))
    try:
        stats = coll.agreed(writing(out, lambda: write_unnormalized(setup, shards, blocks, folder=tmp,
                                                                    progress=progress and coll.is_root)))
        parts = coll.allgather(stats)
        channels = coll.agreed(lambda: fitted_channels(setup, parts))
        entries = coll.agreed(writing(out, lambda: finalize_shards(setup, shards, folder=tmp,
                                                                   stats=channels)))
        everything = [e for rank_entries in coll.allgather(entries) for e in rank_entries]
        coll.on_root(writing(out, lambda: publish(setup, tmp, out, channels=channels, entries=everything)))
    except BaseException:
        if coll.is_root:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
