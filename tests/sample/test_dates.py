"""Date selection against the dataset's dates, and the job-array chunks."""

from __future__ import annotations

import pytest

from hpcdiff.errors import HpcdiffError
from hpcdiff.sample.dates import chunks, select_dates
from hpcdiff.sample.job import DateSelection
from hpcdiff.timeaxis import days_since_epoch, iso_date

SPLITS = {"train": ["1991-01-01", "1991-01-02"], "val": ["2000-06-01"],
          "test": ["2001-09-09", "2001-09-08", "2002-12-14", "2003-03-26"]}


def test_split_is_the_default_sorted_and_limited():
    assert select_dates(DateSelection(), SPLITS, where="ds") == ["2001-09-08", "2001-09-09", "2002-12-14",
                                                                  "2003-03-26"]
    assert select_dates(DateSelection(split="val"), SPLITS, where="ds") == ["2000-06-01"]
    assert select_dates(DateSelection(limit=2), SPLITS, where="ds") == ["2001-09-08", "2001-09-09"]
    with pytest.raises(HpcdiffError, match="no split 'tset'"):
        select_dates(DateSelection(split="tset"), SPLITS, where="ds")


def test_a_list_may_take_any_split_and_names_dates_the_dataset_lacks():
    got = select_dates(DateSelection(dates=["2000-06-01", "1991-01-01", "2000-06-01"]), SPLITS, where="ds")
    assert got == ["1991-01-01", "2000-06-01"]  # sorted, de-duplicated
    with pytest.raises(HpcdiffError) as err:
        select_dates(DateSelection(dates=["1991-01-01", "1999-12-31", "2010-01-01"]), SPLITS, where="ds")
    message = str(err.value)
    assert "2 requested date(s) not in the dataset: 1999-12-31, 2010-01-01" in message
    assert "\n" not in message
    with pytest.raises(HpcdiffError, match="'2001-13-01' is not an ISO date"):
        select_dates(DateSelection(dates=["2001-13-01"]), SPLITS, where="ds")


def test_many_missing_dates_are_truncated_with_a_count():
    wanted = [iso_date(days_since_epoch("2020-01-01") + k) for k in range(25)]
    with pytest.raises(HpcdiffError, match=r"25 requested .*2020-01-10, \.\.\. and 15 more"):
        select_dates(DateSelection(dates=wanted), SPLITS, where="ds")


def test_range_keeps_the_dates_held_inside_it_and_file(tmp_path):
    assert select_dates(DateSelection(start="1991-01-02", end="2001-09-08"), SPLITS, where="ds") == \
        ["1991-01-02", "2000-06-01", "2001-09-08"]
    with pytest.raises(HpcdiffError, match="no date in 2010-01-01 .. 2010-02-01"):
        select_dates(DateSelection(start="2010-01-01", end="2010-02-01"), SPLITS, where="ds")
    path = tmp_path / "dates.txt"
    path.write_text("# dates to downscale\n2003-03-26\n\n2001-09-09  # a comment\n")
    assert select_dates(DateSelection(file=path), SPLITS, where="ds") == ["2001-09-09", "2003-03-26"]


@pytest.mark.parametrize(("n", "count", "sizes"), [(10, 3, [4, 3, 3]), (2, 4, [1, 1]), (6, 1, [6]),
                                                   (0, 2, [])])
def test_chunks_are_contiguous_and_balanced(n, count, sizes):
    dates = [iso_date(k) for k in range(n)]
    got = chunks(dates, count)
    assert [len(c) for c in got] == sizes
    assert [d for c in got for d in c] == dates


def test_unquoted_yaml_dates_load_as_strings(tmp_path):
    from hpcdiff.config import load_config
    from hpcdiff.sample.job import SampleJob

    path = tmp_path / "job.yaml"
    path.write_text("dates: {dates: [2001-09-08, 2003-03-26]}\n")
    job = load_config(SampleJob, path, overrides=["dates.limit=1"])
    assert job.dates.dates == ["2001-09-08", "2003-03-26"] and job.dates.limit == 1
    job = load_config(SampleJob, path, overrides=["dates.dates=[]", "dates.start=2001-01-01",
                                                  "dates.end=2001-12-31"])
    assert (job.dates.start, job.dates.end) == ("2001-01-01", "2001-12-31")
