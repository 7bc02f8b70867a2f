"""Autoencoder runs for real (DeepSpeed on CPU, jobs/autoencoder_train.yaml with the tiny preset): the run
spec says what was trained, the validation writes finite reconstruction metrics, 2 ranks train exactly
like 1 rank accumulating, a run killed after its first checkpoint and resumed repeats the uninterrupted
one bit for bit, and a diffusion job cannot resume it, nor can sampling use it. A job is refused when it
sets what its kind of run does not use, and the memory pre-flight estimates an autoencoder job."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from trainrun import AUTOENCODER_JOB, REPO, TRAIN_JOB, kill_after_first_checkpoint, run_train, torchrun

from hpcdiff.cli import main
from hpcdiff.config import load_config
from hpcdiff.data.manifest import read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate.reconstruction import metric_names
from hpcdiff.memory import training_job_estimate
from hpcdiff.runspec import AutoencoderSpec, spec_from_state
from hpcdiff.train.checkpoint import latest, list_checkpoints, load_state
from hpcdiff.train.job import TrainJob
from hpcdiff.train.metrics_log import read_csv

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

MICRO = ("train.micro_batch=2",)


def losses(run: Path) -> list[tuple[int, float, float, float]]:
    return [(int(r["step"]), float(r["loss"]), float(r["mse"]), float(r["kl"]))
            for r in read_csv(run / "train.csv")]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    path = latest(run / "checkpoints") / "engine.pt"
    return torch.load(path, map_location="cpu", weights_only=True)["module"]


@pytest.fixture(scope="module")
def one_rank(tiny_dataset, tmp_path_factory) -> Path:
    """1 rank, micro-batch 2, accumulation 2 (global batch 4)."""
    out = tmp_path_factory.mktemp("ae-one") / "run"
    proc = run_train(tiny_dataset, out, *MICRO, job=AUTOENCODER_JOB)
    assert "global batch 4 = micro-batch 2 x accumulation 2 x 1 rank" in proc.stderr
    return out


def test_the_checkpoint_records_an_autoencoder_run(one_rank, tiny_dataset):
    assert [p.name for p in list_checkpoints(one_rank / "checkpoints")] == [
        "step-00000002", "step-00000004", "step-00000006"]
    state = load_state(latest(one_rank / "checkpoints"))
    spec = spec_from_state(state["run_spec"], where="test")
    assert isinstance(spec, AutoencoderSpec) and state["run_spec"]["kind"] == "autoencoder"
    assert (spec.preset, spec.factor, spec.latent_channels, spec.kl_weight) == ("tiny", 2, 4, 1e-6)
    assert spec.targets == ["t2m", "tp", "e"] and spec.image_shape == (32, 32)
    assert spec.normalization == read_manifest(tiny_dataset).fingerprint()
    model = spec.build_model()
    model.load_state_dict(state["ema"])  # the EMA weights are the spec's network
    rows = losses(one_rank)
    assert [s for s, *_ in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(v) for row in rows for v in row[1:]) and all(kl > 0 for *_, kl in rows)


def test_validation_writes_finite_reconstruction_metrics(one_rank):
    rows = read_csv(one_rank / "val.csv")
    assert [int(r["step"]) for r in rows] == [3, 6]
    metrics = metric_names(["t2m", "tp", "e"])
    assert {"tp_q999_error", "tp_dry_leakage", "t2m_rmse", "e_psd_high_ratio"} <= set(metrics)
    for row in rows:
        assert int(row["val_samples"]) > 0 and float(row["val_loss"]) > 0
        for key in ("val_mse", "val_kl", *metrics):
            assert math.isfinite(float(row[key])), (key, row[key])
        assert 0.0 <= float(row["tp_dry_leakage"]) <= 1.0 and float(row["t2m_rmse"]) > 0


def test_two_ranks_match_one_rank_with_the_same_global_batch(tiny_dataset, one_rank, tmp_path):
    two = tmp_path / "two"
    proc = run_train(tiny_dataset, two, *MICRO, launcher=torchrun(2), job=AUTOENCODER_JOB)
    assert "global batch 4 = micro-batch 2 x accumulation 1 x 2 ranks" in proc.stderr
    a, b = losses(one_rank), losses(two)
    assert [s for s, *_ in a] == [s for s, *_ in b]
    np.testing.assert_allclose([x[1:] for x in b], [x[1:] for x in a], rtol=2e-5)
    wa, wb = final_weights(one_rank), final_weights(two)
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=2e-6, msg=key)


def test_resume_after_sigkill_repeats_the_uninterrupted_run(tiny_dataset, one_rank, tmp_path):
    out = tmp_path / "killed"
    killed_at = kill_after_first_checkpoint(tiny_dataset, out, *MICRO, job=AUTOENCODER_JOB)
    assert killed_at < 6, "the run finished before it could be killed"
    run_train(tiny_dataset, out, *MICRO, job=AUTOENCODER_JOB)
    assert losses(out) == losses(one_rank)  # bit for bit, logged with full precision
    assert read_csv(out / "val.csv") == read_csv(one_rank / "val.csv")
    wa, wb = final_weights(one_rank), final_weights(out)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_a_diffusion_job_cannot_resume_an_autoencoder_run(tiny_dataset, one_rank, capsys):
    code = main(["train", str(TRAIN_JOB), "--out", str(one_rank), "--set", f"data.dataset={tiny_dataset}",
                 "--set", "model.preset=tiny", "--set", "train.max_steps=8", "--set", "train.global_batch=4",
                 "--set", "train.micro_batch=2", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "the checkpoint's run differs from the job's (kind: 'autoencoder' vs 'diffusion')" in err
    assert len(err.strip().splitlines()) == 1, err


def test_sampling_an_autoencoder_run_is_a_one_line_error(one_rank, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(one_rank), "--out", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    said = f"{one_rank} is an autoencoder run; it encodes datasets (hpcdiff encode), it does not sample"
    assert said in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize(("job", "overrides", "unused"), [
    (TRAIN_JOB, ["model.kind=autoencoder"], "diffusion, model.dropout"),
    (AUTOENCODER_JOB, ["context.temporal=[-1]", "data.position_channels=true"],
     "context, data.position_channels"),
    (TRAIN_JOB, ["autoencoder.kl_weight=1.0e-4"], "autoencoder"),
])
def test_a_job_is_refused_when_it_sets_what_its_kind_does_not_use(tiny_dataset, job, overrides, unused):
    with pytest.raises(HpcdiffError, match=f"does not use {unused} \\(set in the job\\)"):
        load_config(TrainJob, job, overrides=[f"data.dataset={tiny_dataset}", *overrides])


def test_the_memory_preflight_estimates_an_autoencoder_job(tiny_dataset):
    def estimate(micro: int, *extra: str):
        job = load_config(TrainJob, AUTOENCODER_JOB, overrides=[
            f"data.dataset={tiny_dataset}", "train.global_batch=8", f"train.micro_batch={micro}", *extra])
        return training_job_estimate(job, read_manifest(tiny_dataset), world_size=1)

    small, large = estimate(2), estimate(8)
    assert 0 < small.parts["activations"] < large.parts["activations"]
    assert small.parts["weights"] == 4 * 605675  # the small preset's parameters, fp32
    assert "small, 0.6M parameters" in small.describe()
    # the spectral term's FFTs trace on the meta device too (they do not raise the peak, which is elsewhere)
    assert estimate(2, "autoencoder.spectral_weight=0.1").parts["activations"] >= small.parts["activations"]
