"""The conditions of single dates of a preprocessed dataset, wherever (split, shard, row) they lie.

Sampling needs exactly what the training loader gives the network (:class:`hpcdiff.data.loader.
ShardDataset`): the normalized dynamic ERA5 channels of the date, then the normalized static channels,
and the day of year. Planning (which row holds which date) is separate from reading; HDF5 handles open
on first use and are closed by :meth:`ConditionReader.close`.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from hpcdiff.data.loader import normalized_statics, read_statics
from hpcdiff.data.manifest import Manifest, read_manifest
from hpcdiff.data.shards import open_shard, read_rows
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
    """Normalized conditions ``[Cc + Cs, H, W]`` and the day of year of any date the dataset holds; with
    ``positions``, the two position channels follow the statics (as the run's spec says)."""

    def __init__(self, dataset: Path, *, positions: bool = False) -> None:
        self.root = Path(dataset)
        self.manifest = read_manifest(self.root)
        self.index = date_index(self.manifest)
        self.static = normalized_statics(read_statics(self.manifest), self.manifest, positions=positions)
        self.dynamic = len(self.manifest.conditions)
        self._files: dict[Path, h5py.File] = {}

    @property
    def channels(self) -> int:
        return self.dynamic + self.static.shape[0]

    def read(self, date: str) -> tuple[np.ndarray, float]:
        """``(cond [Cc + Cs, H, W] float32, day of year)`` of ``date`` (ISO)."""
        if date not in self.index:
            raise HpcdiffError(f"{self.root}: holds no sample for {date}")
        path, row = self.index[date]
        if path not in self._files:
            self._files[path] = open_shard(path)
        cond = np.empty((1, self.channels, *self.static.shape[1:]), np.float32)
        read_rows(self._files[path]["cond"], cond, row)  # dynamic channels first, then the statics
        cond[0, self.dynamic:] = self.static
        return cond[0], float(calendar_day_of_year([self.day_number(date)], self.manifest.calendar)[0])

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
