"""Climate indices from xclim against hand-computed values, over contiguous and scattered dates."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.evaluate import indices

START = np.datetime64("2001-03-01")
TRUTH = np.array([0.0, 2.0, 12.0, 0.5, 25.0])  # kg m-2 per day on five consecutive days


def case():
    """One support pixel (a second one off the support); member 0 is the truth, member 1 rains 3 mm
    every day. Training days 0, 2, .., 10 at both pixels: wet days (> 1 mm) 2..10, 95th percentile 9.6."""
    obs = TRUTH[:, None, None] * np.ones((1, 1, 2))
    ens = np.stack([obs, np.full_like(obs, 3.0)], axis=1)
    train = np.arange(0.0, 11.0, 2.0)[:, None, None] * np.ones((1, 1, 2))
    return obs, ens, train, np.array([[True, False]])


def test_precipitation_indices_of_a_hand_computed_case():
    obs, ens, train, support = case()
    out = indices.climate_indices({"model": ens}, obs, dates=START + np.arange(5), support=support,
                                  variable="tp", train_truth=train)
    assert out["contiguous"] and "contiguous period 2001-03-01 .. 2001-03-05" in out["period"]
    found = out["indices"]
    truth = {k: v["model"]["truth_mean"] for k, v in found.items()}
    # Rx1day 25; R10mm: 12 and 25; wet days >= 1: 2, 12, 25 of 5; longest dry spell 1 (0 | 0.5), wet 2;
    # R95pTOT: of the wet total 39, the days above 9.6 bring 37.
    assert truth == pytest.approx({"rx1day": 25.0, "r95ptot": 37 / 39, "r10mm": 2.0, "wet_day_frequency": 0.6,
                                   "cdd": 1.0, "cwd": 2.0})
    # member 1 (3 mm every day): Rx1day 3, R95pTOT 0, R10mm 0, wet frequency 1, CDD 0, CWD 5
    assert found["rx1day"]["model"]["mean"] == pytest.approx((25 + 3) / 2)
    assert found["cwd"]["model"]["bias"] == pytest.approx(((2 - 2) + (5 - 2)) / 2)
    assert found["r95ptot"]["model"]["mean"] == pytest.approx(37 / 39 / 2)
    assert all(v["model"]["in_range"] == 1.0 for v in found.values())  # member 0 is the truth


def test_scattered_dates_drop_the_spells_and_count_days_not_gaps():
    obs, ens, train, support = case()
    dates = START + np.array([0, 2, 3, 9, 10])
    out = indices.climate_indices({"model": ens}, obs, dates=dates, support=support, variable="tp",
                                  train_truth=train)
    assert not out["contiguous"] and "CDD and CWD are absent" in out["period"]
    assert set(out["indices"]) == {"rx1day", "r95ptot", "r10mm", "wet_day_frequency"}
    assert out["indices"]["r10mm"]["model"]["truth_mean"] == 2.0  # two days, whatever the gaps between them


def test_temperature_extremes_bias_and_range():
    tas = np.array([270.0, 275.0, 280.0, 271.0, 290.0])[:, None, None] * np.ones((1, 2, 2))
    ens = np.stack([tas - 1.0, tas + 2.0], axis=1)  # the truth always lies between the two members
    out = indices.climate_indices({"model": ens, "bilinear": ens[:, :1]}, tas, dates=START + np.arange(5),
                                  support=np.ones((2, 2), bool), variable="t2m")
    assert out["indices"]["tg_max"]["model"] == pytest.approx({"mean": 290.5, "truth_mean": 290.0,
                                                               "bias": 0.5, "in_range": 1.0})
    assert out["indices"]["tg_min"]["bilinear"] == pytest.approx({"mean": 269.0, "truth_mean": 270.0,
                                                                  "bias": -1.0, "in_range": 0.0})
    assert indices.climate_indices({"model": ens}, tas, dates=START + np.arange(5),
                                   support=np.ones((2, 2), bool), variable="e") == {}


def test_contiguity():
    assert indices.contiguous(START + np.array([2, 0, 1]))
    assert not indices.contiguous(START + np.array([0, 2]))
    assert not indices.contiguous(START + np.array([0]))
