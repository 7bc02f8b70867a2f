"""The preprocessing recipe (``preprocess/*.yaml``): typed sections, loaded by
:func:`hpcdiff.config.load_config`.

Paths: ``root`` is resolved against the recipe's folder when relative; every file pattern is resolved
against ``root``. Units are checked against the files' ``units`` attributes (``m s**-1`` and ``m s-1``
are the same). Accumulated ERA5 variables (``kind: accumulation``, in metres of water) are summed per
day and converted to ``kg m-2``; states are averaged per day and keep their units. The ``slurm:`` section
is read only by ``hpcdiff submit preprocess`` (each SLURM task is one MPI rank).

A ``context:`` section (:class:`ContextSection`) also stores the conditions of neighbouring days and the
ERA5 fields over a larger box (:mod:`hpcdiff.data.context`).

A recipe with ``target: null`` makes a *conditions-only* dataset (dates without truth: a later period,
a climate projection): it has no ``split`` (every complete ERA5 day goes to the split
:data:`CONDITIONS_SPLIT`) and names, under ``normalization.dataset``, the training dataset whose
statistics it reuses, so that a run trained there samples it. A relative ``normalization.dataset`` is
taken from the recipe's folder, like ``root``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from hpcdiff.launch.slurm import CpuSlurmSection

TransformKind = Literal["zscore", "log1p", "asinh"]
CONDITIONS_SPLIT = "all"  # the one split of a conditions-only dataset
MAX_SHARD_MB = 65536.0  # 64 GiB: a larger shard is a unit mistake (GB written as MB), not a plan


@dataclasses.dataclass(frozen=True)
class Era5Variable:
    """One dynamic condition channel read from the ERA5 (or other coarse) inputs."""

    name: str  # channel name: t2m, tp, e, msl, u10, v10, ...
    units: str  # units the values are converted to (pint), e.g. K, m, Pa, m s-1
    kind: Literal["state", "accumulation", "flux"] = "state"
    transform: TransformKind = "zscore"
    scale: float = 1.0  # transform scale in the daily output units (kg m-2 for accumulations and fluxes)
    source: str | None = None  # name in the files when it differs (e.g. pr); default: name or GRIB short name
    multiply: float = 1.0  # after unit conversion; -1: CMOR's evspsbl (upward) as ERA5's e (downward)
    # hours after 00 UTC of the date whose hourly values make the day, first and last included;
    # null: 00..23 for states and fluxes, 01..24 for accumulations (stamped at the end of their hour)
    window: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale of {self.name} must be positive")
        if self.multiply == 0:
            raise ValueError(f"multiply of {self.name} must not be 0")
        if self.window is not None:
            if len(self.window) != 2:
                raise ValueError(f"window of {self.name} must be [first, last] hours")
            first, last = self.window
            if not (-24 <= first <= last <= 48 and last - first < 48):
                raise ValueError(f"window of {self.name} must be [first, last] hours with first <= last, "
                                 f"got {list(self.window)}")


@dataclasses.dataclass(frozen=True)
class TargetVariable:
    """One high-resolution target channel."""

    name: str
    units: str  # units the target files must carry: K, kg m-2
    transform: TransformKind = "zscore"
    scale: float = 1.0  # transform scale in ``units``: log1p(x / scale), asinh(x / scale)

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale of {self.name} must be positive")


@dataclasses.dataclass(frozen=True)
class Era5Source:
    files: list[str]  # glob patterns relative to root, e.g. era5/era5_*.nc
    variables: list[Era5Variable]
    frequency: Literal["auto", "1h", "1D"] = "auto"  # time step of the files; auto: from the time axis


@dataclasses.dataclass(frozen=True)
class TargetSource:
    files: list[str]  # glob patterns relative to root, e.g. danra/danra_*.nc
    variables: list[TargetVariable]


@dataclasses.dataclass(frozen=True)
class StaticSource:
    file: str  # relative to root; on the target grid, with 2-D lat/lon
    lsm: str = "lsm"  # land-sea mask variable (fraction or 0/1; land where >= 0.5)
    orography: str = "orography"
    orography_units: str = "m"


@dataclasses.dataclass(frozen=True)
class Domain:
    """Index ranges ``[start, stop)`` of the target grid to keep (file order)."""

    y: tuple[int, int]
    x: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("y", "x"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1]:
                raise ValueError(f"domain.{name} must be [start, stop) with 0 <= start < stop, got {bounds}")


@dataclasses.dataclass(frozen=True)
class SplitSection:
    """Split by years; the test split is ``test_dates`` seeded random dates of the test years
    (all of them when null)."""

    train_years: list[int]
    val_years: list[int]
    test_years: list[int]
    test_dates: int | None = 100
    test_seed: int = 0

    def __post_init__(self) -> None:
        years = [*self.train_years, *self.val_years, *self.test_years]
        if len(set(years)) != len(years):
            raise ValueError("a year appears in more than one split")
        if not self.train_years:
            raise ValueError("train_years is empty: the statistics come from the training split")
        if self.test_dates is not None and self.test_dates <= 0:
            raise ValueError("test_dates must be positive or null")

    def years(self) -> dict[str, list[int]]:
        return {"train": list(self.train_years), "val": list(self.val_years), "test": list(self.test_years)}


@dataclasses.dataclass(frozen=True)
class ShardSection:
    """Shard size by samples or by megabytes (one of them), HDF5 chunk size, compression."""

    samples_per_shard: int | None = None
    shard_mb: float | None = 256.0
    batch_chunk: int = 8  # samples per HDF5 chunk: a batch of this size is one chunk read
    # y/x chunk [h, w] for patch training (a window reads only the chunks it touches; with batch_chunk 1
    # a sample's window reads no other sample's bytes); null: whole fields per chunk
    chunk_hw: tuple[int, int] | None = None
    compression: Literal["lz4", "zstd", "gzip"] | None = None

    def __post_init__(self) -> None:
        if (self.samples_per_shard is None) == (self.shard_mb is None):
            raise ValueError("set exactly one of samples_per_shard and shard_mb (the other to null)")
        if self.samples_per_shard is not None and self.samples_per_shard <= 0:
            raise ValueError("samples_per_shard must be positive")
        if self.shard_mb is not None and not 0 < self.shard_mb <= MAX_SHARD_MB:
            raise ValueError(f"shard_mb must be in (0, {MAX_SHARD_MB:g}], got {self.shard_mb}")
        if self.batch_chunk <= 0:
            raise ValueError("batch_chunk must be positive")
        if self.chunk_hw is not None and (len(self.chunk_hw) != 2 or min(self.chunk_hw) <= 0):
            raise ValueError(f"chunk_hw must be two positive integers [h, w] or null, got "
                             f"{list(self.chunk_hw)}")


@dataclasses.dataclass(frozen=True)
class ContextBox:
    """The large-domain box of the spatial context, on the ERA5 inputs' own latitude-longitude grid:
    ``lon`` ``[west, east]`` and ``lat`` ``[south, north]`` (degrees; longitudes in -180..180, so a box
    across 0 deg E has a negative west), optionally coarsened by block means of ``coarsen`` x ``coarsen``
    cells. ``variables``: the ERA5 variables (names of ``era5.variables``) stored over the box; null:
    all of them."""

    lon: tuple[float, float]
    lat: tuple[float, float]
    coarsen: int = 1
    variables: list[str] | None = None

    def __post_init__(self) -> None:
        for name, (lo, hi), limit in (("lon", self.lon, 180.0), ("lat", self.lat, 90.0)):
            if not -limit <= lo < hi <= limit:
                raise ValueError(f"context.box.{name} must be [low, high] with -{limit:g} <= low < high "
                                 f"<= {limit:g}, got {list((lo, hi))}")
        if self.coarsen < 1:
            raise ValueError(f"context.box.coarsen must be a positive integer, got {self.coarsen}")
        repeats = self.variables is not None and len(set(self.variables)) != len(self.variables)
        if self.variables is not None and (not self.variables or repeats):
            raise ValueError("context.box.variables must be null or a non-empty list without repeats")


@dataclasses.dataclass(frozen=True)
class ContextSection:
    """Large-scale context stored with every sample (:mod:`hpcdiff.data.context`). ``days``: offsets from
    each date (0 included; e.g. [-2, -1, 0], +1 allowed) whose ERA5 conditions are stored on the target
    grid (the array ``temporal``) and, with a ``box``, over the box (the array ``context``).
    ``neighbours``: ``split``: a neighbouring day must lie in a year of the date's own split (no split
    sees another's days); ``any``: any complete ERA5 day. A date whose days cannot all be had is dropped
    and counted in the manifest, never filled."""

    days: list[int] = dataclasses.field(default_factory=lambda: [0])
    neighbours: Literal["split", "any"] = "split"
    box: ContextBox | None = None

    def __post_init__(self) -> None:
        if 0 not in self.days or len(set(self.days)) != len(self.days):
            raise ValueError(f"context.days must list 0 and no offset twice, got {list(self.days)}")
        if any(abs(d) > 31 for d in self.days):
            raise ValueError(f"context.days are offsets of at most 31 days, got {list(self.days)}")

    @property
    def offsets(self) -> list[int]:
        """The neighbouring days: ``days`` without 0, in the recipe's order (the ``temporal`` array's)."""
        return [d for d in self.days if d != 0]


@dataclasses.dataclass(frozen=True)
class NormalizationSection:
    """The training dataset whose normalization a conditions-only dataset reuses (its conditions', static
    channels' and targets' statistics): a run trained on it samples the new dataset."""

    dataset: Path


@dataclasses.dataclass(frozen=True)
class PreprocessRecipe:
    root: Path
    era5: Era5Source
    static: StaticSource
    target: TargetSource | None = None  # null: a conditions-only dataset (needs ``normalization``)
    split: SplitSection | None = None  # required with a target; none without
    normalization: NormalizationSection | None = None  # only without a target
    shards: ShardSection = ShardSection()
    domain: Domain | None = None
    context: ContextSection | None = None  # null: the same day's conditions on the target grid only
    slurm: CpuSlurmSection = CpuSlurmSection()  # for ``hpcdiff submit preprocess``: one task per rank

    def __post_init__(self) -> None:
        sections = [("era5", self.era5.variables)]
        sections += [("target", self.target.variables)] if self.target is not None else []
        for section, variables in sections:
            names = [v.name for v in variables]
            if not names:
                raise ValueError(f"{section}.variables is empty")
            if len(set(names)) != len(names):
                raise ValueError(f"{section}.variables lists a name twice")
        self._check_conditions_only()
        box = self.context.box if self.context is not None else None
        if box is not None and box.variables is not None:
            unknown = sorted(set(box.variables) - {v.name for v in self.era5.variables})
            if unknown:
                raise ValueError(f"context.box.variables {unknown} are not in era5.variables")

    def _check_conditions_only(self) -> None:
        if self.target is not None:
            if self.split is None:
                raise ValueError("split is required when the recipe has a target")
            if self.normalization is not None:
                raise ValueError("normalization is only for a conditions-only recipe (target: null); a "
                                 "recipe with a target fits its statistics on its own training split")
            return
        if self.normalization is None:
            raise ValueError("target is null (a conditions-only dataset): set normalization.dataset to the "
                             "training dataset whose statistics to reuse")
        if self.split is not None:
            raise ValueError(f"split: a conditions-only recipe (target: null) has no split (every complete "
                             f"ERA5 day goes to split {CONDITIONS_SPLIT!r}); set split: null")

    @property
    def conditions_only(self) -> bool:
        """No target: conditions for dates without truth, normalized like ``normalization.dataset``."""
        return self.target is None


def resolve_root(recipe: PreprocessRecipe, recipe_path: Path | None) -> PreprocessRecipe:
    """The recipe with ``root`` (and ``normalization.dataset``) absolute: relative paths are taken from the
    recipe's folder (or the working directory when the recipe did not come from a file)."""
    # absolute(), not resolve(): a recipe reached through a symbolic link keeps the link's folder
    base = Path(recipe_path).absolute().parent if recipe_path is not None else Path.cwd()
    root = Path(recipe.root).expanduser()
    recipe = dataclasses.replace(recipe, root=(root if root.is_absolute() else base / root).resolve())
    if recipe.normalization is not None:
        dataset = Path(recipe.normalization.dataset).expanduser()
        dataset = (dataset if dataset.is_absolute() else base / dataset).resolve()
        recipe = dataclasses.replace(recipe, normalization=NormalizationSection(dataset=dataset))
    return recipe
