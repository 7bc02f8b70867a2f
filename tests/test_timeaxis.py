"""The one time axis: ISO dates <-> day numbers since 1970-01-01, day of year and year, in leap and
common years, before and after the epoch."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import (
    EPOCH,
    TIME_UNITS,
    as_dates,
    dates_of_year,
    day_of_year,
    days_since_epoch,
    fractional_day_of_year,
    from_days,
    iso_date,
    parse_date,
    to_days,
    year_of,
)


def test_epoch_and_units_agree() -> None:
    assert TIME_UNITS.split(" since ") == ["days", str(EPOCH)]
    assert days_since_epoch(str(EPOCH)) == 0 and iso_date(0) == "1970-01-01"


@pytest.mark.parametrize(("date", "days"), [("1970-01-02", 1), ("1969-12-31", -1), ("1900-01-01", -25567),
                                            ("2000-02-29", 11016), ("2001-09-08", 11573),
                                            ("2100-03-01", 47541)])
def test_iso_dates_and_day_numbers_round_trip(date: str, days: int) -> None:
    assert days_since_epoch(date) == days and iso_date(days) == date
    assert to_days([date]).tolist() == [days] and str(from_days([days])[0]) == date


def test_every_day_of_a_long_span_round_trips() -> None:
    days = np.arange(-40_000, 60_000, 7)  # 1860 .. 2134: leap years, 1900 and 2100 (not leap), 2000 (leap)
    dates = from_days(days)
    np.testing.assert_array_equal(to_days(dates), days)
    assert all(days_since_epoch(iso_date(int(d))) == d for d in days[::97])


def test_to_days_takes_strings_datetimes_and_other_epochs() -> None:
    assert to_days("2000-01-01").tolist() == [10957]
    assert to_days(np.datetime64("2000-01-01T18:00")).tolist() == [10957]  # the date of an instant
    assert to_days(["1990-01-03"], epoch=np.datetime64("1990-01-01")).tolist() == [2]
    assert as_dates(["2001-09-08", "1969-12-31"]).dtype == np.dtype("datetime64[D]")


def test_day_of_year_of_the_last_day_in_leap_and_common_years() -> None:
    dates = ["2000-12-31", "2001-12-31", "1900-12-31", "1968-12-31", "2000-01-01", "2001-03-01", "2000-03-01"]
    got = day_of_year(to_days(dates))
    assert got.dtype == np.float32
    assert got.tolist() == [366.0, 365.0, 365.0, 366.0, 1.0, 60.0, 61.0]


def test_fractional_day_of_year() -> None:
    times = np.array(["1999-01-01T00:00:00", "1999-01-01T12:00:00", "1968-12-31T18:00:00"], "datetime64[s]")
    np.testing.assert_array_equal(fractional_day_of_year(times), [1.0, 1.5, 366.75])


def test_year_of_datetimes_and_day_numbers() -> None:
    dates = as_dates(["1969-12-31", "1970-01-01", "2000-12-31", "2001-01-01"])
    assert year_of(dates).tolist() == [1969, 1970, 2000, 2001]
    assert year_of(to_days(dates)).tolist() == [1969, 1970, 2000, 2001]
    assert int(year_of(np.datetime64("1999-07-01T06:00"))) == 1999
    with pytest.raises(TypeError):
        year_of(np.array([1.5]))


def test_dates_of_year() -> None:
    for year, size in ((1900, 365), (1996, 366), (2000, 366), (2001, 365)):
        dates = dates_of_year(year)
        assert dates.size == size and str(dates[0]) == f"{year}-01-01" and str(dates[-1]) == f"{year}-12-31"


def test_parse_date_normalizes_and_refuses_in_one_line() -> None:
    assert parse_date(" 2001-09-08 ", where="job.yaml") == "2001-09-08"
    for bad in ("2001-13-01", "2001-02-29", "yesterday", "", "NaT", "2001", "2001-09-08T12:00"):
        with pytest.raises(HpcdiffError) as err:
            parse_date(bad, where="job.yaml: dates")
        message = str(err.value)
        assert message.startswith("job.yaml: dates: ") and "is not an ISO date" in message
        assert "\n" not in message
