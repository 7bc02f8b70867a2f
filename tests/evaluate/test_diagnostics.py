"""Curves behind the plots: shapes, normalization, and which methods they cover."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.evaluate.diagnostics import QQ_LEVELS, variable_diagnostics


def test_curves_of_one_variable():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(5, 16, 16))
    methods = {"model": rng.normal(size=(5, 4, 16, 16)), "bilinear": rng.normal(size=(5, 1, 16, 16))}
    land = np.zeros((16, 16), bool)
    land[4:12, 4:12] = True
    curves = variable_diagnostics(methods, truth, land=land, dx_km=2.5)
    ranks = curves["rank_histogram"]
    assert list(ranks["land"]) == ["model"]  # a deterministic method has no rank histogram
    assert sum(ranks["land"]["model"]) == 5 * 64 and sum(ranks["all_pixels"]["model"]) == 5 * 256
    spectrum = curves["spectrum"]
    assert len(spectrum["k_cycles_per_km"]) == 8 and set(spectrum["psd"]) == {"truth", "model", "bilinear"}
    assert spectrum["k_cycles_per_km"][-1] == pytest.approx(1 / (2 * 2.5))  # Nyquist
    quantiles = curves["quantiles"]
    assert quantiles["levels"] == QQ_LEVELS.tolist() and {0.99, 0.999} <= set(quantiles["levels"])
    assert np.all(np.diff(quantiles["land"]["model"]) >= 0)
    assert quantiles["land"]["truth"][-1] == pytest.approx(np.quantile(truth[:, land], 0.999))
    histogram = curves["histogram"]
    widths = np.diff(histogram["edges"])
    for region in ("land", "all_pixels"):
        for density in histogram[region].values():
            assert np.sum(np.asarray(density) * widths) == pytest.approx(1.0)
