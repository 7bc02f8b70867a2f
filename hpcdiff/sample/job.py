"""The sampling job config (``jobs/*sample*.yaml``): which dates, how many members, which sampler."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from hpcdiff.config import sides
from hpcdiff.launch.slurm import SlurmSection


@dataclasses.dataclass(frozen=True)
class DateSelection:
    """Dates to downscale. Exactly one way: a dataset ``split``, a list of ``dates`` (ISO), an inclusive
    ``start``/``end`` range, or a ``file`` with one ISO date per line. ``limit`` keeps the first N."""

    split: str | None = "test"
    dates: list[str] = dataclasses.field(default_factory=list)
    start: str | None = None
    end: str | None = None
    file: Path | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        ways = [self.dates != [], self.start is not None or self.end is not None, self.file is not None]
        if sum(ways) > 1:
            raise ValueError("give only one of dates, start/end, file")
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together")
        if self.limit is not None and self.limit <= 0:
            raise ValueError("limit must be positive")


@dataclasses.dataclass(frozen=True)
class SamplerSection:
    """How each date is sampled. ``steps``: ``None`` is the sampler's default
    (:data:`hpcdiff.diffusion.samplers.DEFAULT_STEPS`), chosen from the trained schedule by ``spacing``.
    ``batch_size`` rows of (date, member) pairs per network call, packed across dates. ``precision``:
    ``auto`` is bf16 autocast on a GPU that has it, fp16 on other GPUs, fp32 on CPU. ``checkpoint``:
    ``latest`` (of ``RUN/checkpoints``), a checkpoint folder name there, or a path."""

    members: int = 8
    sampler: str = "dpmpp_2m"
    steps: int | None = None
    spacing: Literal["logsnr", "uniform"] = "logsnr"
    eta: float = 0.0
    batch_size: int = 16
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint: str = "latest"
    # Full-domain sampling: null = the whole grid in one network call per step; an int or [h, w] =
    # overlapping tiles of that size, blended over tile_overlap pixels (hpcdiff.sample.tiles; null: a
    # quarter of the tile's shorter side)
    tile: int | tuple[int, int] | None = None
    tile_overlap: int | None = None

    def __post_init__(self) -> None:
        if self.members <= 0 or self.batch_size <= 0:
            raise ValueError("members and batch_size must be positive")
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise ValueError(f"tile_overlap must be 0 or more, got {self.tile_overlap}")
        sides(self.tile, name="tile")

    @property
    def tiles(self) -> tuple[int, int] | None:
        """The tile ``(h, w)``, or ``None`` for the whole grid in one call."""
        return sides(self.tile, name="tile")

    @property
    def overlap(self) -> int:
        """Pixels shared by neighbouring tiles (0 without tiles)."""
        if self.tiles is None:
            return 0
        return min(self.tiles) // 4 if self.tile_overlap is None else self.tile_overlap
        if self.steps is not None and self.steps <= 0:
            raise ValueError("steps must be positive (or null for the sampler's default)")


@dataclasses.dataclass(frozen=True)
class ArraySection:
    """The SLURM job array of ``hpcdiff submit sample``: dates split into ``tasks`` chunks, at most
    ``parallelism`` running at once."""

    tasks: int = 4
    parallelism: int = 4

    def __post_init__(self) -> None:
        if self.tasks <= 0 or self.parallelism <= 0:
            raise ValueError("tasks and parallelism must be positive")


@dataclasses.dataclass(frozen=True)
class SampleJob:
    dataset: Path | None = None  # default: the dataset the run was trained on
    dates: DateSelection = DateSelection()
    sample: SamplerSection = SamplerSection()
    array: ArraySection = ArraySection()
    slurm: SlurmSection = SlurmSection(gpus_per_node=1, cpus_per_task=4, time_limit_min=60)
