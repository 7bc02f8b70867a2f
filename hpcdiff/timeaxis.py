"""Dates and calendars: the one time axis every stage shares.

Daily values are identified by their date. Inside hpcdiff a date is either an ISO string
``YYYY-MM-DD`` (plans, part names, configs), a ``datetime64[D]`` value, or an integer day number since
:data:`EPOCH` (shards' ``time``, merged ensembles, seeds), whose CF units are :data:`TIME_UNITS`.
Every conversion between these forms, and every calendar question (day of year, year), goes through
this module.

Only the standard (proleptic Gregorian) calendar is supported today. This module is where
non-standard calendars (EURO-CORDEX's ``360_day`` and ``noleap``, through ``cftime``) will plug in:
the functions here would take the calendar and keep dates in it, and callers would not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpcdiff.errors import HpcdiffError

EPOCH = np.datetime64("1970-01-01", "D")
TIME_UNITS = "days since 1970-01-01"
CALENDAR = "standard"
SECONDS_PER_DAY = 86400

DateLike = str | np.datetime64 | Sequence[str] | np.ndarray


def as_dates(dates: DateLike) -> np.ndarray:
    """Dates ``[n]`` datetime64[D] from ISO strings, datetime64 values or datetimes (one or several)."""
    return np.atleast_1d(np.asarray(dates, dtype="datetime64[D]"))


def to_days(dates: DateLike, *, epoch: np.datetime64 = EPOCH) -> np.ndarray:
    """Day numbers ``[n]`` int64 of ``dates`` (see :func:`as_dates`), counted from ``epoch``."""
    return (as_dates(dates) - np.datetime64(epoch, "D")).astype(np.int64)


def from_days(days: np.ndarray | Sequence[int]) -> np.ndarray:
    """Dates ``[n]`` datetime64[D] of day numbers since :data:`EPOCH` ``[n]``."""
    return np.atleast_1d(np.asarray(days, np.int64)).astype("datetime64[D]")


def days_since_epoch(date: str | np.datetime64) -> int:
    """``"2001-09-08"`` -> 11573, the day number since 1970-01-01 (negative before)."""
    return int((np.datetime64(date, "D") - EPOCH).astype(np.int64))


def iso_date(days: int) -> str:
    """Day number since 1970-01-01 -> ``"YYYY-MM-DD"``."""
    return str(EPOCH + np.timedelta64(int(days), "D"))


def parse_date(text: str, *, where: str) -> str:
    """Validate one ISO date ``YYYY-MM-DD`` (surrounding blanks ignored); a one-line error naming
    ``where`` otherwise. numpy alone would read ``""`` as NaT and ``"2001"`` as 2001-01-01."""
    stripped = str(text).strip()
    try:
        value = np.datetime64(stripped, "D")
    except ValueError:
        value = np.datetime64("NaT")
    if np.isnat(value) or str(value) != stripped:
        raise HpcdiffError(f"{where}: {text!r} is not an ISO date (YYYY-MM-DD)")
    return stripped


def dates_of_year(year: int) -> np.ndarray:
    """Every date ``[365 or 366]`` datetime64[D] of the calendar year ``year``."""
    first = np.datetime64(year - 1970, "Y").astype("datetime64[D]")
    last = np.datetime64(year + 1 - 1970, "Y").astype("datetime64[D]")
    return np.arange(first, last, np.timedelta64(1, "D"))


def day_of_year(days: np.ndarray | Sequence[int]) -> np.ndarray:
    """Day of year ``[n]`` float32 (1 on 1 January, up to 366) of day numbers since 1970-01-01 ``[n]``."""
    dates = from_days(days)
    return ((dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1).astype(np.float32)


def fractional_day_of_year(times: np.ndarray) -> np.ndarray:
    """Day of year ``[n]`` float64 of instants ``times`` ``[n]`` datetime64[s]: 1.0 at 00:00 UTC on
    1 January, 1.5 at its noon."""
    times = np.asarray(times, "datetime64[s]")
    year_start = times.astype("datetime64[Y]").astype("datetime64[s]")
    return (times - year_start).astype(np.float64) / SECONDS_PER_DAY + 1.0


def year_of(when: np.ndarray | np.datetime64 | int | Sequence[int]) -> np.ndarray:
    """Calendar years (int64, same shape) of datetime64 values (any unit) or of day numbers since
    1970-01-01 (integers)."""
    values = np.asarray(when)
    if values.dtype.kind in "iu":
        values = values.astype(np.int64).astype("datetime64[D]")
    elif values.dtype.kind != "M":
        raise TypeError(f"year_of takes datetime64 values or integer day numbers, not {values.dtype}")
    return values.astype("datetime64[Y]").astype(np.int64) + 1970


STANDARD_CALENDARS = ("standard", "gregorian", "proleptic_gregorian")
DURATION_SECONDS = {"seconds": 1, "second": 1, "s": 1, "minutes": 60, "minute": 60, "min": 60,
                    "hours": 3600, "hour": 3600, "h": 3600, "days": 86400, "day": 86400, "d": 86400}


def decode_cf_times(values: np.ndarray, units: str | None, calendar: str | None, *, where: str) -> np.ndarray:
    """Instants ``[...]`` datetime64[s] (same shape) of a CF time coordinate's raw numbers with ``units``
    ``"<unit> since <reference>"``; values already datetime64 pass through. Standard calendars only."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return values.astype("datetime64[s]")
    if units is None or "since" not in str(units):
        raise HpcdiffError(f"{where}: time coordinate has no 'units since reference' attribute")
    calendar = str(calendar or "standard").lower()
    if calendar not in STANDARD_CALENDARS:
        raise HpcdiffError(f"{where}: time calendar {calendar!r} is not supported (standard calendars only)")
    import cftime

    try:
        dates = cftime.num2date(np.asarray(values, dtype=np.float64).ravel(), str(units), calendar,
                                only_use_cftime_datetimes=False, only_use_python_datetimes=True)
    except (ValueError, TypeError, OverflowError) as err:
        raise HpcdiffError(f"{where}: cannot decode time units {units!r} ({err})") from None
    return np.array(dates, dtype="datetime64[s]").reshape(values.shape)


def decode_cf_durations(values: np.ndarray, units: str | None, *, where: str) -> np.ndarray:
    """Durations ``[...]`` timedelta64[s] of a CF duration coordinate (cfgrib's forecast ``step``):
    numbers with ``units`` seconds, minutes, hours or days; timedelta64 values pass through."""
    values = np.asarray(values)
    if values.dtype.kind == "m":
        return values.astype("timedelta64[s]")
    seconds = DURATION_SECONDS.get(str(units).strip().lower()) if units is not None else None
    if seconds is None:
        raise HpcdiffError(f"{where}: duration units {units!r} are not seconds, minutes, hours or days")
    return np.round(np.asarray(values, np.float64) * seconds).astype(np.int64).astype("timedelta64[s]")
