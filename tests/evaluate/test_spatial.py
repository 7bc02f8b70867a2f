"""FSS and POD / FAR / CSI from the scores package against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.evaluate import spatial


def test_fss_of_a_displaced_event():
    """Truth: one event at (0, 0) of a 4 x 4 grid; forecast: one at (1, 1). Window 1: no overlap, FSS 0.
    Window 3 (four windows, no padding): forecast fractions 1/9 in all four, truth 1/9 in one, so
    FSS = 1 - (3/81) / (4/81 + 1/81) = 0.4."""
    obs = np.zeros((1, 4, 4))
    obs[0, 0, 0] = 3.0
    ens = np.zeros((1, 1, 4, 4))
    ens[0, 0, 1, 1] = 3.0
    out = spatial.fss(ens, obs, support=np.ones((4, 4), bool), threshold=1.0, windows=(1, 3, 5))
    assert out["member"] == pytest.approx({"1": 0.0, "3": 0.4})  # window 5 is not smaller than the grid
    assert out["probability"] == pytest.approx(out["member"])  # one member: probabilities are 0 or 1


def test_fss_of_members_and_of_the_exceedance_probability():
    """Two members on a 2 x 3 grid (window 1). Members pooled: squared differences 2 + 2 over 4 + 4, FSS
    0.5. Probability field [[.5, .5, .5], [.5, 0, 0]] against [[0, 1, 0], [1, 0, 0]]: 1 - 1 / (1 + 2)."""
    obs = np.array([[[0.0, 2, 0], [12, 0, 0]]])
    ens = np.array([[[[0.0, 2, 2], [0, 0, 0]], [[5.0, 0, 0], [11, 0, 0]]]])
    out = spatial.fss(ens, obs, support=np.ones((2, 3), bool), threshold=1.0, windows=(1,))
    assert out["member"] == pytest.approx({"1": 0.5}) and out["probability"] == pytest.approx({"1": 2 / 3})
    outside = np.array([[True, True, True], [False, True, True]])  # (1, 0) leaves the support: no event
    out = spatial.fss(ens, obs, support=outside, threshold=1.0, windows=(1,))
    assert out["member"]["1"] == pytest.approx(1 - 3 / 5)  # differences 1 + 2 over (2 + 1) + (1 + 1)


def test_pod_far_csi_of_a_hand_counted_table():
    """Same fields, events >= 1: hits 2, false alarms 2, misses 2 (members pooled)."""
    obs = np.array([[[0.0, 2, 0], [12, 0, 0]]])
    ens = np.array([[[[0.0, 2, 2], [0, 0, 0]], [[5.0, 0, 0], [11, 0, 0]]]])
    out = spatial.categorical(ens, obs, support=np.ones((2, 3), bool), threshold=1.0)
    assert out == pytest.approx({"pod": 0.5, "far": 0.5, "csi": 1 / 3, "frequency_bias": 1.0})
    out = spatial.categorical(ens, obs, support=np.ones((2, 3), bool), threshold=10.0)  # member 1 hits,
    assert out == pytest.approx({"pod": 0.5, "far": 0.0, "csi": 0.5, "frequency_bias": 0.5})  # 0 misses
    out = spatial.categorical(ens, obs, support=np.ones((2, 3), bool), threshold=20.0)  # no event at all
    assert np.isnan(out["pod"]) and np.isnan(out["csi"])


def test_thresholds_are_amounts_for_precipitation_and_percentiles_otherwise():
    obs = np.arange(101.0).reshape(1, 1, 101)
    support = np.ones((1, 101), bool)
    assert spatial.thresholds_of(obs, support, precipitation=True) == {"1": 1.0, "5": 5.0, "10": 10.0,
                                                                      "20": 20.0}
    assert spatial.thresholds_of(obs, support, precipitation=False) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
