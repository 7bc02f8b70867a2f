"""The metric table on constructed ensembles: an oracle against itself, a biased copy, a deterministic
method, seasons and regions."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.evaluate import metrics
from hpcdiff.evaluate.scores import season_index, variable_scores

DATES = np.array(["2001-01-15", "2001-04-15", "2001-07-15", "2001-10-15", "2002-02-01", "2002-08-01"] * 5,
                 "datetime64[D]")


@pytest.fixture(scope="module")
def world():
    """Truth and a calibrated "oracle" ensemble around a shared centre ``[T, ...]``, and a land mask."""
    rng = np.random.default_rng(0)
    centre = 280.0 + rng.normal(size=(DATES.size, 1, 12, 12))
    oracle = centre + rng.normal(size=(DATES.size, 6, 12, 12))
    truth = centre[:, 0] + rng.normal(size=(DATES.size, 12, 12))
    land = np.zeros((12, 12), bool)
    land[3:10, 2:8] = True
    return truth, oracle, land


def test_seasons_of_dates():
    index = season_index(np.array(["2001-12-31", "2002-01-01", "2002-06-30", "2002-09-01"], "datetime64[D]"))
    assert {k: v.tolist() for k, v in index.items()} == {"all": [0, 1, 2, 3], "DJF": [0, 1], "JJA": [2],
                                                         "SON": [3]}


def test_oracle_against_itself_and_a_biased_copy(world):
    truth, oracle, land = world
    scores = variable_scores({"model": oracle + 0.7, "copy": oracle.copy(), "oracle": oracle}, truth,
                             land=land, dates=DATES)
    table = scores["land"]["all"]
    assert table["copy"]["crps_ratio_to_oracle"] == 1.0 and table["oracle"]["crps_ratio_to_oracle"] == 1.0
    assert table["model"]["bias"] - table["oracle"]["bias"] == pytest.approx(0.7, abs=1e-9)
    assert table["model"]["crps"] > 1.2 * table["oracle"]["crps"]
    assert table["model"]["crps_ratio_to_oracle"] > 1.2
    assert table["oracle"]["spread_skill"] == pytest.approx(1.0, abs=0.1)
    assert table["model"]["spread_skill"] < table["oracle"]["spread_skill"]
    assert table["model"]["psd_high_ratio"] == pytest.approx(table["oracle"]["psd_high_ratio"])  # a shift


def test_regions_seasons_and_reference_values(world):
    truth, oracle, land = world
    scores = variable_scores({"oracle": oracle}, truth, land=land, dates=DATES)
    assert set(scores) == {"land", "all_pixels"}
    assert set(scores["land"]) == {"all", "DJF", "MAM", "JJA", "SON"}
    jja = np.flatnonzero(np.isin(DATES.astype("datetime64[M]").astype(int) % 12 + 1, [6, 7, 8]))
    season = scores["land"]["JJA"]["oracle"]
    assert season["crps"] == pytest.approx(metrics.crps_fair(oracle[jja], truth[jja], land))
    assert season["rmse"] == pytest.approx(np.sqrt(((oracle[jja].mean(1) - truth[jja])[:, land] ** 2).mean()))
    everywhere = scores["all_pixels"]["all"]["oracle"]
    assert everywhere["bias"] == pytest.approx((oracle.mean(1) - truth).mean())
    spatial = np.sqrt(np.mean([truth[t][land].var() for t in range(DATES.size)]))
    assert scores["land"]["all"]["oracle"]["truth_spatial_std"] == pytest.approx(spatial)
    assert everywhere["psd_high_ratio"] == scores["land"]["all"]["oracle"]["psd_high_ratio"]


def test_deterministic_method_crps_is_its_mae(world):
    truth, oracle, land = world
    table = variable_scores({"bilinear": oracle[:, :1]}, truth, land=land, dates=DATES)["land"]["all"]
    assert table["bilinear"]["crps"] == pytest.approx(table["bilinear"]["mae"])
    assert table["bilinear"]["spread_skill"] == 0.0
    assert "crps_ratio_to_oracle" not in table["bilinear"]


def test_precipitation_extras():
    rng = np.random.default_rng(1)
    dates = DATES[:6]
    ens = np.maximum(rng.normal(0.0, 3.0, size=(6, 4, 8, 8)), 0.0)
    truth = np.maximum(rng.normal(0.0, 3.0, size=(6, 8, 8)), 0.0)
    land = np.ones((8, 8), bool)
    table = variable_scores({"model": ens}, truth, land=land, dates=dates, precipitation=True)["land"]["all"]
    model = table["model"]
    assert model["wet_day_frequency"] == pytest.approx((ens >= 1.0).mean())
    assert model["wet_day_frequency_truth"] == pytest.approx((truth >= 1.0).mean())
    assert model["q999"] == pytest.approx(np.quantile(ens, 0.999))
    assert model["q99_truth"] == pytest.approx(np.quantile(truth, 0.99))
