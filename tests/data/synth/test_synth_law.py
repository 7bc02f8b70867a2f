"""The law's parameters survive ``world.json``, and presets pick their dates from the calendar."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hpcdiff.data.synth.law import PRESETS, Law, Preset, get_preset, law_from_dict
from hpcdiff.errors import HpcdiffError


def test_law_round_trips_through_json() -> None:
    law = Law()
    assert law_from_dict(json.loads(json.dumps(dataclasses.asdict(law)))) == law


def test_preset_dates_are_whole_years_or_blocks_that_visit_every_season() -> None:
    every = Preset("x", shape=(8, 8), years=(1996, 1997))
    assert every.dates(1996).size == 366 and every.dates(1997).size == 365
    assert str(every.dates(1996)[-1]) == "1996-12-31"
    demo = PRESETS["demo"]
    starts = [int((demo.dates(y)[0] - np.datetime64(f"{y}-01-01")).astype(int)) for y in demo.years]
    assert all(demo.dates(y).size == demo.days_per_year for y in demo.years)
    assert np.all(np.diff(demo.dates(1996)) == np.timedelta64(1, "D"))
    assert {s // 91 for s in starts} == {0, 1, 2, 3}  # every quarter of the year starts a block


def test_unknown_preset_is_a_one_line_error() -> None:
    assert get_preset("tiny").shape == (32, 32)
    with pytest.raises(HpcdiffError, match="'huge'.*tiny, demo, bench"):
        get_preset("huge")
