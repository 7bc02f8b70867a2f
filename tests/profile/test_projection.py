"""The projection: closed-form ring all-reduce cases, buckets, interconnect profiles, efficiency curves
and the advice where efficiency falls below 90 %."""

from __future__ import annotations

import dataclasses

import pytest

from hpcdiff.errors import HpcdiffError
from hpcdiff.profile.commfit import AlphaBeta
from hpcdiff.profile.projection import (
    GPU_COUNTS,
    Interconnect,
    Link,
    Setting,
    StepModel,
    advice,
    buckets,
    first_below,
    load_interconnect,
    project,
    ring_allreduce_s,
    shipped_interconnects,
)

FLAT = Interconnect(name="flat", gpus_per_node=10**9, intra_node=Link(10.0, 10.0),
                    inter_node=Link(10.0, 10.0))


def test_ring_allreduce_closed_form():
    # 4 ranks, 100 MB, alpha 10 us, 10 GB/s: 6 steps x 10 us + 2*3/4 * 100e6 B / 10e9 B/s = 60 us + 15 ms
    assert ring_allreduce_s(100e6, 4, alpha_s=10e-6, beta_s_per_byte=1e-10) == pytest.approx(60e-6 + 15e-3)
    # 2 ranks: 2 steps, the whole message once: 2 alpha + S beta
    assert ring_allreduce_s(1e6, 2, alpha_s=1e-5, beta_s_per_byte=1e-9) == pytest.approx(2e-5 + 1e-3)
    # many ranks: the bandwidth term tends to 2 S beta, the latency term grows linearly
    t = ring_allreduce_s(1e9, 1024, alpha_s=0.0, beta_s_per_byte=1e-10)
    assert t == pytest.approx(2 * 1023 / 1024 * 0.1)
    assert ring_allreduce_s(1e9, 1, alpha_s=1.0, beta_s_per_byte=1.0) == 0.0


def test_buckets_split_the_gradient_and_add_latency_per_bucket():
    assert buckets(10, 4) == [4, 4, 2]
    assert buckets(8, 4) == [4, 4]
    assert buckets(3, 100) == [3]
    model = StepModel(0.0, 0.0, 0.0, 0.0, grad_bytes=100_000_000, bucket_bytes=25_000_000)
    comm, last = model.comm_s(4, FLAT)
    one = ring_allreduce_s(25e6, 4, alpha_s=10e-6, beta_s_per_byte=1e-10)
    assert comm == pytest.approx(4 * one) and last == pytest.approx(one)
    whole = ring_allreduce_s(100e6, 4, alpha_s=10e-6, beta_s_per_byte=1e-10)
    assert comm - whole == pytest.approx(3 * 6 * 10e-6)  # three more buckets, six ring steps each


def test_interconnect_uses_the_network_across_nodes():
    ic = load_interconnect("4gpu-nvlink-ib200")
    assert ic.gpus_per_node == 4
    alpha, beta = ic.alpha_beta(4)
    assert (alpha, beta) == pytest.approx((4e-6, 1 / 230e9))
    alpha, beta = ic.alpha_beta(8)
    assert (alpha, beta) == pytest.approx((8e-6, 1 / 25e9))  # one 200 Gb/s NIC per node
    eight = load_interconnect("8gpu-nvlink-4xib200")
    assert eight.alpha_beta(16)[1] == pytest.approx(1 / 100e9)  # four NICs
    assert set(shipped_interconnects()) >= {"4gpu-nvlink-ib200", "8gpu-nvlink-4xib200"}


def test_interconnect_file_errors_name_the_problem(tmp_path):
    with pytest.raises(HpcdiffError, match="no such interconnect file or shipped profile"):
        load_interconnect("infiniband-9000")
    bad = tmp_path / "ic.yaml"
    bad.write_text("name: x\ngpus_per_node: 4\nintra_node: {latency_us: 1, bandwith_gb_per_s: 2}\n"
                   "inter_node: {latency_us: 1, bandwidth_gb_per_s: 2}\n")
    with pytest.raises(HpcdiffError, match="bandwith_gb_per_s.*bandwidth_gb_per_s"):
        load_interconnect(str(bad))


def test_from_fit_predicts_the_fitted_times_at_the_fitted_rank_count():
    fit = AlphaBeta(alpha_s=5e-4, beta_s_per_byte=1.7e-9, residual=0.1, ranks=2)
    ic = Interconnect.from_fit(fit)
    alpha, beta = ic.alpha_beta(2)
    for size in (1e3, 1e6, 1e8):
        predicted = ring_allreduce_s(size, 2, alpha_s=alpha, beta_s_per_byte=beta)
        assert predicted == pytest.approx(fit.time_s(size))


def test_weak_efficiency_is_compute_over_compute_plus_comm():
    model = StepModel(forward_s_per_sample=0.01, backward_s_per_sample=0.02, other_s_per_sample=0.0,
                      optimizer_s=0.0, grad_bytes=400_000_000, bucket_bytes=2_000_000_000)
    rows = project(model, Setting("weak", micro_batch=8), FLAT)
    assert [r["gpus"] for r in rows] == list(GPU_COUNTS)
    compute = 8 * 0.03
    for r in rows:
        comm = ring_allreduce_s(400e6, r["gpus"], alpha_s=10e-6, beta_s_per_byte=1e-10)
        assert r["step_ms"] == pytest.approx((compute + comm) * 1e3)
        assert r["efficiency"] == pytest.approx(compute / (compute + comm))
        assert r["global_batch"] == 8 * r["gpus"]


def test_overlap_hides_all_but_the_last_bucket_behind_backward():
    model = StepModel(0.0, 0.05, 0.0, 0.0, grad_bytes=100_000_000, bucket_bytes=25_000_000, overlap=True)
    pred = model.predict(4, micro_batch=1, accum_steps=1, ic=FLAT)
    comm, last = model.comm_s(4, FLAT)
    assert pred["exposed_s"] == pytest.approx(max(last, comm - 0.05))
    assert pred["exposed_s"] < comm


def test_strong_scaling_stops_where_ranks_outnumber_the_global_batch():
    model = StepModel(0.01, 0.02, 0.0, 0.005, grad_bytes=4_000_000, bucket_bytes=2_000_000_000)
    rows = project(model, Setting("strong", micro_batch=16, global_batch=16), FLAT)
    assert rows[-1]["gpus"] == 16 and all(r["global_batch"] == pytest.approx(16) for r in rows)
    assert rows[0]["efficiency"] == 1.0
    assert all(a["efficiency"] > b["efficiency"] for a, b in zip(rows, rows[1:], strict=False))


def test_advice_names_the_first_count_below_90_percent_and_what_lifts_it():
    ic = load_interconnect("4gpu-nvlink-ib200")
    model = StepModel(forward_s_per_sample=1e-3, backward_s_per_sample=2e-3, other_s_per_sample=0.0,
                      optimizer_s=0.0, grad_bytes=200_000_000, bucket_bytes=100_000_000)
    setting = Setting("weak", micro_batch=8)
    rows = project(model, setting, ic)
    below = first_below(rows)
    assert below is not None and below["gpus"] == 8  # the first step onto the network
    text = advice(model, setting, ic, rows)
    assert "falls below 90% at 8 GPUs" in text and "accumulation steps x" in text
    fast = StepModel(1.0, 2.0, 0.0, 0.0, grad_bytes=1000, bucket_bytes=1000)
    assert "stays at or above 90% up to 1024 GPUs" in advice(fast, setting, ic, project(fast, setting, ic))


def test_zero1_splits_the_optimizer_step_and_keeps_the_communication():
    model = StepModel(0.01, 0.02, 0.0, optimizer_s=0.08, grad_bytes=4_000_000, bucket_bytes=2_000_000_000)
    plain = model.predict(8, micro_batch=4, accum_steps=1, ic=FLAT)
    zero1 = dataclasses.replace(model, shard_optimizer=True)
    sharded = zero1.predict(8, micro_batch=4, accum_steps=1, ic=FLAT)
    assert plain["step_s"] - sharded["step_s"] == pytest.approx(0.08 - 0.01)
    assert plain["exposed_s"] == sharded["exposed_s"]
