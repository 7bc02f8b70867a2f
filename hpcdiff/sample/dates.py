"""Which dates a sampling run covers: a :class:`~hpcdiff.sample.job.DateSelection` resolved against the
dates a dataset holds, and the split of a date list into job-array chunks.

Dates are ISO strings ``YYYY-MM-DD`` everywhere in plans and part names; seeds use the integer day
number since 1970-01-01, the dataset's own time axis (:mod:`hpcdiff.timeaxis` converts between them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hpcdiff.errors import HpcdiffError
from hpcdiff.sample.job import DateSelection
from hpcdiff.timeaxis import day_numbers, iso_dates

SHOW = 10  # dates named in an error message before "... and N more"


def name_some(items: Sequence[str], *, show: int = SHOW) -> str:
    """``"a, b, c"`` or ``"a, b, ... and 7 more"``."""
    head = ", ".join(items[:show])
    return head if len(items) <= show else f"{head}, ... and {len(items) - show} more"


def parse_date(text: str, *, where: str, calendar: str = "standard") -> str:
    """One ISO date of ``calendar``, canonical (surrounding blanks removed); a one-line error otherwise."""
    return iso_dates(day_numbers([text], calendar, where=where), calendar)[0]


def read_date_file(path: Path, *, calendar: str = "standard") -> list[str]:
    """One ISO date per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise HpcdiffError(f"{path}: cannot read the date file ({err.strerror})") from None
    texts = [line.split("#", 1)[0].strip() for line in lines]
    return [parse_date(t, where=f"{path} line {i + 1}", calendar=calendar)
            for i, t in enumerate(texts) if t]


def select_dates(selection: DateSelection, splits: Mapping[str, Sequence[str]], *, where: str,
                 calendar: str = "standard", dropped: Mapping[str, str] | None = None) -> list[str]:
    """The sorted, de-duplicated dates ``selection`` asks for, out of ``splits`` (split name -> ISO dates
    the dataset at ``where`` holds, in its ``calendar``). An explicit list, range or file wins over
    ``split`` and may take dates from any split; a listed date that the dataset lacks is an error naming
    it (``dropped``: date -> why preprocessing left it out, e.g. its context was incomplete), while a range
    keeps the dataset's dates inside it. ``limit`` keeps the first N (chronologically)."""
    held = sorted({d for dates in splits.values() for d in dates})
    if selection.dates or selection.file is not None:
        raw = selection.dates if selection.dates else read_date_file(selection.file, calendar=calendar)
        wanted = sorted({parse_date(d, where=f"{where}: dates", calendar=calendar) for d in raw})
        lacking = sorted(set(wanted) - set(held))
        left_out = [d for d in lacking if d in (dropped or {})]
        if left_out:
            raise HpcdiffError(f"{where}: requested date {left_out[0]} was left out at preprocessing: "
                               f"{dropped[left_out[0]]}" + (f" ({len(left_out) - 1} more requested dates "
                                                           "likewise)" if len(left_out) > 1 else ""))
        if lacking:
            span = f"{held[0]} .. {held[-1]}" if held else "none"
            raise HpcdiffError(f"{where}: {len(lacking)} requested date(s) not in the dataset: "
                               f"{name_some(lacking)} (it holds {len(held)} dates, {span})")
    elif selection.start is not None:
        start, end = (parse_date(d, where=f"{where}: dates", calendar=calendar)
                      for d in (selection.start, selection.end))
        wanted = [d for d in held if start <= d <= end]
        if not wanted:
            raise HpcdiffError(f"{where}: the dataset holds no date in {start} .. {end}")
    elif selection.split is not None:
        if selection.split not in splits:
            raise HpcdiffError(f"{where}: no split {selection.split!r} (splits: {', '.join(splits)})")
        wanted = sorted(set(splits[selection.split]))
        if not wanted:
            raise HpcdiffError(f"{where}: split {selection.split!r} holds no dates")
    else:
        raise HpcdiffError(f"{where}: no dates selected: set dates.split, dates.dates, dates.start/end or "
                           "dates.file")
    return wanted[:selection.limit] if selection.limit is not None else wanted


def chunks(dates: Sequence[str], count: int) -> list[list[str]]:
    """Split ``dates`` into at most ``count`` contiguous, non-empty chunks whose sizes differ by at
    most one (the job array's tasks)."""
    assert count > 0, count
    n = min(count, len(dates))
    if n == 0:
        return []
    size, extra = divmod(len(dates), n)
    bounds = np.cumsum([0] + [size + (k < extra) for k in range(n)])
    return [list(dates[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
