"""The split by years: train and validation take every date of their years, the test split a seeded
random sample of dates from its years (the poster: train 1991–1999, val 2000, test = 100 random
dates of 2001–2005)."""

from __future__ import annotations

import numpy as np

from hpcdiff.data.recipe import SplitSection
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import year_of

SPLITS = ("train", "val", "test")


def split_dates(available: np.ndarray, split: SplitSection, *, where: str) -> dict[str, np.ndarray]:
    """Sorted datetime64[D] dates per split from the ``available`` target dates. Every configured year
    must have data; the test sample is drawn with ``split.test_seed`` (independent of ranks)."""
    available = np.unique(available)
    years = year_of(available)
    out = {}
    for name, wanted in split.years().items():
        missing = sorted(set(wanted) - set(years.tolist()))
        if missing:
            raise HpcdiffError(f"{where}: split.{name}_years lists {missing} but the target files have no "
                               f"dates there (years present: {_span(years)})")
        out[name] = available[np.isin(years, wanted)]
    n_test = split.test_dates
    if n_test is not None and n_test < out["test"].size:
        rng = np.random.default_rng(split.test_seed)
        out["test"] = np.sort(rng.choice(out["test"], size=n_test, replace=False))
    return out


def _span(years: np.ndarray) -> str:
    if years.size == 0:
        return "none"
    return f"{years.min()}–{years.max()}"
