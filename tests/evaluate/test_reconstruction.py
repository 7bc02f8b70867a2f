"""Reconstruction metrics of an autoencoder's validation: exact percentiles from the ranks' largest values
merged by sums only (simulated ranks in threads), and known values for perfect, dry-leaking and smoothed
reconstructions."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hpcdiff.evaluate.reconstruction import (
    QUANTILE,
    ReconstructionTally,
    metric_names,
    quantile_of_top,
    top_needed,
)


class ThreadReduce:
    """An all-reduce (sum) among ``n`` threads, each one a simulated rank."""

    def __init__(self, n: int) -> None:
        self.n, self.barrier, self.parts = n, threading.Barrier(n), {}

    def for_rank(self, rank: int):
        def reduce(values: np.ndarray) -> np.ndarray:
            self.parts[rank] = np.array(values, np.float64)
            self.barrier.wait()
            total = sum(self.parts[r] for r in range(self.n))
            self.barrier.wait()  # everyone has read the parts before the next call writes them
            return total

        return reduce


def results_of_ranks(tallies: list[ReconstructionTally]) -> list[dict[str, float]]:
    reduce, out = ThreadReduce(len(tallies)), [None] * len(tallies)

    def run(rank: int) -> None:
        out[rank] = tallies[rank].result(reduce.for_rank(rank), rank=rank, world_size=len(tallies))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(tallies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


@pytest.mark.parametrize("count", [1, 2, 999, 1000, 1001, 12345])
def test_a_quantile_from_the_largest_values_is_numpys(count):
    values = np.random.default_rng(count).gamma(0.5, 3.0, count)
    top = np.sort(values)[-top_needed(count, QUANTILE):]
    assert quantile_of_top(top, count, QUANTILE) == pytest.approx(np.quantile(values, QUANTILE), rel=1e-12)


def test_ranks_merge_to_the_metrics_of_all_fields_at_once():
    rng = np.random.default_rng(0)
    truth = rng.gamma(0.3, 4.0, size=(10, 2, 16, 20)).astype(np.float32)  # tp-like, and a second variable
    recon = (truth * rng.uniform(0.5, 1.5, truth.shape)).astype(np.float32)
    land = rng.uniform(size=(10, 16, 20)) > 0.3
    names = ["tp", "t2m"]
    whole = ReconstructionTally(names, shape=(16, 20), pixels=10 * 16 * 20)
    whole.add(recon, truth, land)
    expected = whole.result(lambda a: a)
    # three ranks with uneven shares, one batch each or none (a rank may have nothing to validate)
    tallies = [ReconstructionTally(names, shape=(16, 20), pixels=10 * 16 * 20) for _ in range(4)]
    for tally, part in zip(tallies, (slice(0, 1), slice(1, 7), slice(7, 10), slice(0, 0)), strict=True):
        if part.stop > part.start:
            tally.add(recon[part], truth[part], land[part])
    for got in results_of_ranks(tallies):
        assert got.keys() == expected.keys() == set(metric_names(names))
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-9), key
    tp = truth[:, 0][land]
    assert expected["tp_q999_error"] == pytest.approx(np.quantile(recon[:, 0][land], QUANTILE)
                                                      - np.quantile(tp, QUANTILE))
    err = (recon[:, 1] - truth[:, 1])[land]
    assert expected["t2m_rmse"] == pytest.approx(np.sqrt(np.mean(err.astype(np.float64) ** 2)))


def test_known_values_perfect_leaking_and_smooth():
    rng = np.random.default_rng(1)
    truth = np.where(rng.uniform(size=(4, 1, 32, 32)) < 0.5, 0.0, rng.gamma(1.0, 5.0, (4, 1, 32, 32)))
    land = np.ones((4, 32, 32), bool)
    perfect = ReconstructionTally(["tp"], shape=(32, 32), pixels=4 * 32 * 32)
    perfect.add(truth, truth, land)
    assert perfect.result(lambda a: a) == {"tp_rmse": 0.0, "tp_psd_high_ratio": 1.0, "tp_q999_error": 0.0,
                                           "tp_dry_leakage": 0.0}
    leaking = ReconstructionTally(["tp"], shape=(32, 32), pixels=4 * 32 * 32)
    leaking.add(truth + 0.2, truth, land)  # every dry pixel comes back wet
    assert leaking.result(lambda a: a)["tp_dry_leakage"] == 1.0
    smooth = (truth + np.roll(truth, 1, -1) + np.roll(truth, -1, -1)) / 3
    smoothed = ReconstructionTally(["tp"], shape=(32, 32), pixels=4 * 32 * 32)
    smoothed.add(smooth, truth, land)
    assert smoothed.result(lambda a: a)["tp_psd_high_ratio"] < 0.5
