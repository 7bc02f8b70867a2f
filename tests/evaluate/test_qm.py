"""The quantile-mapping baseline: xsdba's mapping on hand-made shifts, per group and pooled, and on the
tiny synthetic dataset's training split."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.data.manifest import read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate import baselines, qm
from hpcdiff.evaluate.truth import read_static

JANUARY, JULY = np.datetime64("1991-01-01"), np.datetime64("1991-07-01")


def shifted_case(rng: np.random.Generator, n: int = 60):
    """Training dates half in January, half in July; two pixels; the truth is the bilinear field shifted
    by +1 (January) / +5 (July) on pixel 0 and by +2 / +6 on pixel 1."""
    dates = np.concatenate([JANUARY + np.arange(n // 2), JULY + np.arange(n // 2)])
    hist = rng.normal(size=(n, 1, 2))
    shift = np.where((np.arange(n) < n // 2)[:, None, None], [[[1.0, 2.0]]], [[[5.0, 6.0]]])
    return dates, hist, hist + shift


def test_a_shift_per_season_and_pixel_is_recovered_exactly():
    rng = np.random.default_rng(0)
    train_dates, hist, ref = shifted_case(rng)
    dates = np.array([JANUARY + 40, JULY + 40])
    sim = np.stack([hist[:30].mean(axis=0), hist[30:].mean(axis=0)])  # inside each season's range
    land = np.ones((1, 2), bool)
    mapped = qm.quantile_map(ref, hist, sim, train_dates=train_dates, dates=dates, units="K", land=land)
    assert mapped - sim == pytest.approx(np.array([[[1.0, 2.0]], [[5.0, 6.0]]]), abs=1e-9)
    pooled = qm.quantile_map(ref, hist, sim, train_dates=train_dates, dates=dates, units="K", land=land,
                             pooling="land")
    assert (pooled - sim)[0].mean() == pytest.approx(1.5, abs=0.5)  # one mapping for both pixels
    assert (pooled - sim)[1].mean() == pytest.approx(5.5, abs=0.5)
    only_first = np.array([[True, False]])  # pooled over "land" = pixel 0 only: its shift everywhere
    pooled = qm.quantile_map(ref, hist, sim, train_dates=train_dates, dates=dates, units="K",
                             land=only_first, pooling="land")
    assert pooled - sim == pytest.approx(np.array([[[1.0, 1.0]], [[5.0, 5.0]]]), abs=1e-9)


def test_a_season_without_training_dates_is_a_one_line_error():
    with pytest.raises(HpcdiffError, match="no date in month.s. 4 of the evaluated dates"):
        qm.check_groups(np.array([JANUARY, JULY]), np.array([JANUARY + 100]), group="month", where="ds")


def test_the_training_stride_keeps_every_nth_date(tiny):
    manifest = read_manifest(tiny[1])
    every, third = qm.read_training(manifest), qm.read_training(manifest, stride=3)
    assert np.array_equal(third.dates, every.dates[::3]) and third.dates.size == 18
    assert np.array_equal(third.truth["tp"], every.truth["tp"][::3])


def test_qm_reproduces_the_truth_quantiles_on_the_training_split(tiny):
    """Fitted on the training split and applied to the same dates, the mapped field has the truth's
    distribution per season and pixel: quantiles match to a small fraction of the truth's spread, where
    the bilinear field's did not. Precipitation is looser: days the bilinear field has (near) zero are
    ties that one mapping cannot spread over the truth's dry and light days."""
    manifest = read_manifest(tiny[1])
    land = read_static(manifest).land
    training = qm.read_training(manifest)
    bilinear = baselines.bilinear(manifest, training.dates)
    mapped = qm.qm_baseline(manifest, training, training.dates, bilinear=bilinear, land=land)
    levels = np.linspace(0.1, 0.9, 9)
    seasons = qm._labels(training.dates, "season")
    for name, tolerance in (("t2m", 0.02), ("e", 0.02), ("tp", 0.05)):
        truth, after, before = training.truth[name], [], []
        for season in np.unique(seasons):
            rows = seasons == season
            want = np.quantile(truth[rows][:, land], levels, axis=0)  # [levels, land pixels]
            after.append(np.abs(np.quantile(mapped[name][rows, 0][:, land], levels, axis=0) - want).mean())
            before.append(np.abs(np.quantile(bilinear[name][rows, 0][:, land], levels, axis=0) - want).mean())
        spread = truth[:, land].std()
        assert np.mean(after) < tolerance * spread, (name, after, spread)
        assert np.mean(after) < 0.3 * np.mean(before), (name, after, before)
    assert mapped["tp"].min() >= 0.0  # clipped to the physical bounds
