"""The conditions of single dates of a preprocessed dataset, wherever (split, shard, row) they lie.

Sampling needs exactly what the training loader gives the network (:class:`hpcdiff.data.loader.
ShardDataset`): the normalized dynamic ERA5 channels of the date (and of the neighbouring days the run
reads), then the normalized static channels, the context box when the run reads one, and the day of
year. A date the dataset left out because its context was incomplete is an error naming the day it
lacked. Planning (which row holds which date) is separate from reading; HDF5 handles open
on first use and are closed by :meth:`ConditionReader.close`.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from hpcdiff.data.context import ContextSelection
from hpcdiff.data.loader import SampleLayout
from hpcdiff.data.manifest import Manifest, read_manifest
from hpcdiff.data.shards import ARRAYS, open_shard
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import calendar_day_of_year, day_numbers, iso_dates


def date_index(manifest: Manifest) -> dict[str, tuple[Path, int]]:
    """ISO date -> (shard path, row), read from every shard's ``time [n]`` (days since 1970-01-01 of the
    dataset's calendar)."""
    index: dict[str, tuple[Path, int]] = {}
    for split in manifest.splits.values():
        for shard in split.shards:
            path = manifest.root / shard.path
            with open_shard(path) as f:
                days = f["time"][...]
            index.update({d: (path, row) for row, d in enumerate(iso_dates(days, manifest.calendar))})
    return index


class ConditionReader:
    """Normalized conditions ``[C, H, W]``, the context box ``[Cx · S, Hx, Wx]`` (``None`` without a spatial
    context) and the day of year of any date the dataset holds, assembled by the
    :class:`~hpcdiff.data.loader.SampleLayout` the run's spec asks for (``positions``, ``context``), as
    the training loader assembles them."""

    def __init__(self, dataset: Path, *, positions: bool = False,
                 context: ContextSelection | None = None) -> None:
        self.root = Path(dataset)
        self.manifest = read_manifest(self.root)
        self.index = date_index(self.manifest)
        self.layout = SampleLayout(self.manifest, positions=positions, context=context)
        self._files: dict[Path, h5py.File] = {}

    @property
    def channels(self) -> int:
        return self.layout.cond_channels

    def read(self, date: str) -> tuple[np.ndarray, np.ndarray | None, float]:
        """``(cond [C, H, W] float32, context [Cx · S, Hx, Wx] or None, day of year)`` of ``date`` (ISO)."""
        if date not in self.index:
            dropped = self.manifest.context.dropped if self.manifest.context is not None else {}
            if date in dropped:
                raise HpcdiffError(f"{self.root}: {date} was left out at preprocessing: "
                                   f"{dropped[date].reason()}")
            raise HpcdiffError(f"{self.root}: holds no sample for {date}")
        path, row = self.index[date]
        if path not in self._files:
            self._files[path] = open_shard(path)
        f = self._files[path]
        cond = np.empty((1, self.channels, *self.manifest.grid.shape), np.float32)
        shape = self.layout.context_shape
        context = None if shape is None else np.empty((1, *shape), np.float32)
        arrays = {name: f[name] for name in ARRAYS if name in f}
        self.layout.read(arrays, row, cond=cond, origin=(0, 0), context=context)
        doy = float(calendar_day_of_year([self.day_number(date)], self.manifest.calendar)[0])
        return cond[0], None if context is None else context[0], doy

    def day_number(self, date: str) -> int:
        """Days since 1970-01-01 of the dataset's calendar (the seeds' and the merged file's time axis)."""
        return int(day_numbers([date], self.manifest.calendar, where=str(self.root))[0])

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __enter__(self) -> ConditionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
