"""Dates and calendars: the one time axis every stage shares.

Daily values are identified by their date. Inside hpcdiff a date is either an ISO string
``YYYY-MM-DD`` (plans, part names, configs), a ``datetime64[D]`` value, or an integer day number since
:data:`EPOCH` (shards' ``time``, merged ensembles, seeds), whose CF units are :data:`TIME_UNITS`.
Every conversion between these forms, and every calendar question (day of year, year), goes through
this module.

Calendars: a dataset has one, recorded in its manifest (``standard`` unless its inputs say otherwise;
EURO-CORDEX runs use ``360_day`` or ``noleap``). Day numbers count days since 1970-01-01 *in that
calendar* (``cftime``), and ISO strings are dates of that calendar (``2050-02-30`` exists in
``360_day``), so dates stay in the source calendar from the inputs through sampling to the merged
NetCDF, which carries the calendar. Functions below take ``calendar=`` (default standard, where
numpy's datetime64 does the work); the preprocessing keeps dates as datetime64[D] values
``EPOCH + day number`` for arithmetic only, and names them through :func:`iso_dates`.
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
CALENDAR_ALIASES = {"standard": "standard", "gregorian": "standard", "proleptic_gregorian": "standard",
                    "noleap": "noleap", "365_day": "noleap", "360_day": "360_day", "all_leap": "all_leap",
                    "366_day": "all_leap"}


def calendar_name(calendar: str | None, *, where: str = "calendar") -> str:
    """The canonical name of a CF calendar: ``standard`` (also gregorian and proleptic_gregorian, which
    agree after 1582), ``noleap``, ``360_day`` or ``all_leap``; a one-line error for others."""
    name = CALENDAR_ALIASES.get(str(calendar or "standard").strip().lower())
    if name is None:
        raise HpcdiffError(f"{where}: calendar {calendar!r} is not supported "
                           f"({', '.join(sorted(set(CALENDAR_ALIASES)))})")
    return name


def _cftime_dates(days: np.ndarray, calendar: str) -> np.ndarray:
    import cftime

    return np.atleast_1d(cftime.num2date(np.asarray(days, np.int64), TIME_UNITS, calendar))


def iso_dates(days: np.ndarray | Sequence[int], calendar: str = CALENDAR) -> list[str]:
    """ISO strings of day numbers since 1970-01-01 of ``calendar``."""
    calendar = calendar_name(calendar)
    if calendar == "standard":
        return [str(d) for d in from_days(days)]
    return [f"{d.year:04d}-{d.month:02d}-{d.day:02d}" for d in _cftime_dates(np.asarray(days), calendar)]


def day_numbers(dates: Sequence[str], calendar: str = CALENDAR, *, where: str = "dates") -> np.ndarray:
    """Day numbers ``[n]`` int64 since 1970-01-01 of ``calendar`` of ISO ``dates``; a one-line error for a
    date the calendar does not have."""
    calendar = calendar_name(calendar)
    if calendar == "standard":
        return to_days([parse_date(d, where=where) for d in dates])
    import cftime

    out = []
    for text in dates:
        try:
            year, month, day = (int(part) for part in str(text).strip().split("-"))
            date = cftime.datetime(year, month, day, calendar=calendar)
        except (ValueError, TypeError):
            raise HpcdiffError(f"{where}: {text!r} is not a date of the {calendar} calendar (YYYY-MM-DD)") \
                from None
        out.append(int(cftime.date2num(date, TIME_UNITS, calendar)))
    return np.asarray(out, np.int64)


def calendar_day_of_year(days: np.ndarray | Sequence[int], calendar: str = CALENDAR) -> np.ndarray:
    """Day of year ``[n]`` float32 of day numbers in ``calendar``, scaled to a 365.25-day year for the
    non-standard calendars (day 180 of a 360-day year is 182.6): the network's seasonal input means the
    same point of the seasonal cycle in every calendar."""
    calendar = calendar_name(calendar)
    if calendar == "standard":
        return day_of_year(days)
    dates = _cftime_dates(np.asarray(days), calendar)
    length = {"noleap": 365.0, "360_day": 360.0, "all_leap": 366.0}[calendar]
    doy = np.array([d.dayofyr for d in dates], np.float64)
    return (1.0 + (doy - 1.0) * 365.25 / length).astype(np.float32)


def decode_cf_seconds(values: np.ndarray, units: str | None, calendar: str | None, *,
                      where: str) -> tuple[np.ndarray, str]:
    """Seconds since 1970-01-01 of ``calendar`` (int64, same shape) of a CF time coordinate's raw numbers,
    and the calendar's canonical name. datetime64 values (cfgrib) are standard-calendar seconds."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return values.astype("datetime64[s]").astype(np.int64), "standard"
    name = calendar_name(calendar, where=where)
    if name == "standard":
        return decode_cf_times(values, units, calendar, where=where).astype(np.int64), name
    if units is None or "since" not in str(units):
        raise HpcdiffError(f"{where}: time coordinate has no 'units since reference' attribute")
    import cftime

    try:
        dates = cftime.num2date(np.asarray(values, np.float64).ravel(), str(units), name)
        seconds = cftime.date2num(dates, "seconds since 1970-01-01 00:00:00", name)
    except (ValueError, TypeError, OverflowError) as err:
        raise HpcdiffError(f"{where}: cannot decode time units {units!r} ({err})") from None
    return np.round(np.asarray(seconds, np.float64)).astype(np.int64).reshape(values.shape), name


def iso_instant(seconds: int, calendar: str = CALENDAR) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of seconds since 1970-01-01 of ``calendar`` (for messages)."""
    day, rest = divmod(int(seconds), SECONDS_PER_DAY)
    return f"{iso_dates([day], calendar)[0]}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
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
