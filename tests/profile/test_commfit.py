"""All-reduce bandwidth as nccl-tests defines it, and the alpha-beta fit recovering known values."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.profile.commfit import AlphaBeta, algbw, busbw, fit_alpha_beta, sweep_sizes


def test_algbw_and_busbw_follow_nccl_tests():
    assert algbw(1e9, 0.5) == 2e9
    assert busbw(1e9, 0.5, 2) == 2e9  # 2 (n-1)/n = 1 on two ranks
    assert busbw(1e9, 0.5, 8) == pytest.approx(2e9 * 2 * 7 / 8)
    assert busbw(1e9, 0.5, 1) == 2e9


def test_sweep_is_powers_of_two_from_1_kib_to_256_mib():
    sizes = sweep_sizes(1 << 10, 1 << 28)
    assert sizes[0] == 1024 and sizes[-1] == 1 << 28 and len(sizes) == 19
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:], strict=False))
    with pytest.raises(ValueError):
        sweep_sizes(1 << 20, 1 << 10)


def test_fit_recovers_alpha_and_beta_exactly_from_model_timings():
    alpha, beta = 35e-6, 1 / 12.5e9  # 35 us, 12.5 GB/s
    sizes = sweep_sizes(1 << 10, 1 << 28)
    fit = fit_alpha_beta(sizes, [alpha + beta * s for s in sizes], ranks=4)
    assert fit.alpha_s == pytest.approx(alpha, rel=1e-9)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=1e-9)
    assert fit.residual < 1e-9


def test_fit_recovers_alpha_and_beta_from_noisy_timings():
    rng = np.random.default_rng(3)
    alpha, beta = 500e-6, 1 / 0.6e9
    sizes = sweep_sizes(1 << 10, 1 << 26)
    times = [(alpha + beta * s) * (1 + 0.05 * rng.standard_normal()) for s in sizes]
    fit = fit_alpha_beta(sizes, times, ranks=2)
    assert fit.alpha_s == pytest.approx(alpha, rel=0.1)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=0.1)
    assert 0.01 < fit.residual < 0.1  # the 5 % noise, as RMS relative error


def test_per_hop_inverts_the_ring_formula():
    fit = AlphaBeta(alpha_s=6e-5, beta_s_per_byte=1.5e-9, residual=0.0, ranks=4)
    hop_alpha, hop_beta = fit.per_hop()
    assert 2 * 3 * hop_alpha == pytest.approx(6e-5)  # 2 (n-1) steps
    assert 2 * 3 / 4 * hop_beta == pytest.approx(1.5e-9)
    with pytest.raises(ValueError):
        AlphaBeta(1.0, 1.0, 0.0, ranks=1).per_hop()


def test_latency_bound_noise_never_gives_a_negative_beta():
    sizes = [1024, 2048, 4096, 8192]
    fit = fit_alpha_beta(sizes, [9e-4, 8e-4, 7e-4, 6e-4], ranks=2)  # times that fall with size
    assert fit.beta_s_per_byte == 0.0 and fit.alpha_s > 0
    assert fit.bandwidth_gb_per_s == float("inf")
