"""Latent diffusion for real, on the tiny world: an autoencoder run (DeepSpeed on CPU) encodes the dataset
(``hpcdiff encode``, one process and ``mpiexec -n 2``), a diffusion run trains on the latent dataset, and
``sample`` / ``merge`` / ``evaluate`` work on it as on a pixel run: samples on the pixel grid, the pixel
targets, physical bounds kept. The latent statistics round trip (normalized latents mapped back and
decoded equal the autoencoder's own reconstruction), the conditions and statics on the latent grid are
block means of the pixel ones, and what latent runs do not support is refused in one line."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
import torch
from trainrun import AUTOENCODER_JOB, REPO, child_env, run_train

from hpcdiff import memory
from hpcdiff.cli import main
from hpcdiff.config import load_config
from hpcdiff.data.latent import block_mean
from hpcdiff.data.manifest import read_manifest
from hpcdiff.data.residual import residual_from_manifest
from hpcdiff.models.unet import grid_padding
from hpcdiff.sample.ensemble import EnsembleSampler, make_plan
from hpcdiff.sample.job import SampleJob
from hpcdiff.sample.run import open_run
from hpcdiff.train.checkpoint import latest, load_state

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(400)]

LATENT_JOB = REPO / "jobs" / "latent_train.yaml"
SAMPLE_JOB = REPO / "jobs" / "demo_sample.yaml"
VENV_BIN = str(Path(sys.executable).parent)
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]))


def split_array(dataset: Path, split: str, key: str) -> np.ndarray:
    manifest = json.loads((dataset / "manifest.json").read_text())
    return np.concatenate([h5py.File(dataset / s["path"], "r")[key][...]
                           for s in manifest["splits"][split]["shards"]])


@pytest.fixture(scope="module")
def autoencoder(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("latent") / "ae"
    run_train(tiny_dataset, out, "train.micro_batch=2", job=AUTOENCODER_JOB)
    return out


@pytest.fixture(scope="module")
def latent_dataset(autoencoder, tiny_dataset) -> Path:
    out = autoencoder.parent / "latent"
    assert main(["encode", str(autoencoder), "--dataset", str(tiny_dataset), "--out", str(out),
                 "--batch-size", "5", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def latent_run(latent_dataset) -> Path:
    out = latent_dataset.parent / "ldm"
    run_train(latent_dataset, out, "diffusion.residual=true", job=LATENT_JOB)
    return out


def autoencoder_model(run: Path) -> torch.nn.Module:
    from hpcdiff.runspec import spec_from_state

    state = load_state(latest(run / "checkpoints"))
    model = spec_from_state(state["run_spec"], where="test").build_model()
    model.load_state_dict(state["ema"])
    return model.eval()


def test_block_mean_averages_the_source_pixels_under_each_padded_cell():
    rng = np.random.default_rng(0)
    for h, w, f in ((5, 7, 2), (9, 6, 4), (8, 8, 4), (3, 3, 4)):
        x = rng.normal(size=(2, h, w))
        got = block_mean(x, f)
        (top, _), (left, _) = grid_padding(h, f), grid_padding(w, f)
        assert got.shape == (2, -(-h // f), -(-w // f)) and got.dtype == np.float64
        for i in range(got.shape[1]):
            for j in range(got.shape[2]):
                rows = slice(max(i * f - top, 0), max((i + 1) * f - top, 0))
                cols = slice(max(j * f - left, 0), max((j + 1) * f - left, 0))
                np.testing.assert_allclose(got[:, i, j], x[:, rows, cols].mean(axis=(1, 2)), rtol=1e-12)
    assert block_mean(np.ones((7, 5), np.float32), 4).dtype == np.float32
    np.testing.assert_array_equal(block_mean(np.full((7, 5), 3.0), 4), 3.0)  # padding does not count


def test_the_latent_dataset_holds_normalized_posterior_means_and_block_mean_conditions(
        latent_dataset, tiny_dataset, autoencoder):
    manifest, source = read_manifest(latent_dataset), read_manifest(tiny_dataset)
    assert main(["check", str(latent_dataset)]) == 0
    info = manifest.latent
    assert info.factor == 2 and info.source_shape == (32, 32) and manifest.grid.shape == (16, 16)
    assert info.source_fingerprint == source.fingerprint() and info.target_names == ["t2m", "tp", "e"]
    assert manifest.target_names == ["z0", "z1", "z2", "z3"]
    assert manifest.split_dates() == source.split_dates()
    # statistics: the training split's latents are standardized with their own mean and std
    train = split_array(latent_dataset, "train", "target").astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=(0, 2, 3)), 1.0, rtol=1e-5)
    # the round trip: stored latents, mapped back with the recorded statistics, are the encoder's means
    model = autoencoder_model(autoencoder)
    pixels = split_array(tiny_dataset, "test", "target")
    with torch.no_grad():
        mean, _ = model.encode(torch.from_numpy(pixels))
    stored = split_array(latent_dataset, "test", "target")
    scale = np.array([[c.stats.std] for c in manifest.targets])[None, :, :, None]
    shift = np.array([[c.stats.mean] for c in manifest.targets])[None, :, :, None]
    np.testing.assert_allclose(stored * scale + shift, mean.numpy(), rtol=1e-5, atol=1e-5)
    # conditions and statics are block means of the source's, then the encoded ERA5 baseline of the targets
    source_cond = split_array(tiny_dataset, "val", "cond")
    cond = split_array(latent_dataset, "val", "cond")
    names = [c.name for c in source.conditions] + manifest.target_names
    assert [c.name for c in manifest.conditions] == names
    np.testing.assert_allclose(cond[:, :6], block_mean(source_cond, 2), atol=1e-6)
    with torch.no_grad():
        base, _ = model.encode(residual_from_manifest(source).baseline(torch.from_numpy(source_cond)))
    np.testing.assert_allclose(cond[:, 6:] * scale + shift, base.numpy(), rtol=1e-5, atol=1e-5)
    # the latent residual's scale: the RMS over the training split of latents minus baseline latents
    train_cond = split_array(latent_dataset, "train", "cond")[:, 6:].astype(np.float64)
    rms = np.sqrt(np.mean((train - train_cond) ** 2, axis=(0, 2, 3)))
    np.testing.assert_allclose([c.residual_rms for c in manifest.targets], rms, rtol=1e-4)
    assert residual_from_manifest(manifest).a == (1.0, 1.0, 1.0, 1.0)  # the same normalization: identity
    with h5py.File(latent_dataset / "static.h5") as lat, h5py.File(tiny_dataset / "static.h5") as pix:
        np.testing.assert_allclose(lat["lsm"][...], block_mean(pix["lsm"][...].astype(np.float64), 2),
                                   atol=1e-6)
        assert 0 < lat["lsm"][...].mean() < 1 and lat["x"].shape == (16,)
        np.testing.assert_allclose(lat["x"][...], pix["x"][...].reshape(16, 2).mean(axis=1))


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec")
def test_two_mpi_ranks_encode_like_one_process(autoencoder, tiny_dataset, tmp_path):
    def encode(out: Path, *launcher: str) -> Path:
        cmd = [*launcher, sys.executable, "-m", "hpcdiff.cli", "encode", str(autoencoder), "--dataset",
               str(tiny_dataset), "--out", str(out), "--batch-size", "5", "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=child_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        return out

    # both in child processes of one thread each: the same kernels, so the same latents bit for bit
    single, ranks = encode(tmp_path / "one"), encode(tmp_path / "two", MPIEXEC, "-n", "2")
    one, two = read_manifest(single), read_manifest(ranks)
    assert [c.stats for c in one.targets] == [c.stats for c in two.targets]
    for split in ("train", "val", "test"):
        for key in ("target", "cond", "time"):
            np.testing.assert_array_equal(split_array(ranks, split, key), split_array(single, split, key))
    assert one.latent == two.latent


def test_a_latent_run_samples_decodes_merges_and_evaluates_on_the_pixel_grid(latent_run, latent_dataset,
                                                                              tiny_dataset, tmp_path):
    state = load_state(latest(latent_run / "checkpoints"))
    assert state["run_spec"]["latent"]["factor"] == 2 and "autoencoder" in state
    assert state["run_spec"]["residual"]["a"] == [1.0] * 4 and state["run_spec"]["latent"]["baseline"]
    assert state["run_spec"]["image_shape"] in ([16, 16], (16, 16))
    samples = tmp_path / "samples"
    assert main(["sample", str(SAMPLE_JOB), "--run", str(latent_run), "--out", str(samples), "--set",
                 "sample.steps=4", "--set", "sample.members=2", "--set", "dates.limit=3", "--set",
                 "sample.batch_size=4", "--no-progress"]) == 0
    plan = json.loads((samples / "plan.json").read_text())
    assert Path(plan["dataset"]) == tiny_dataset.resolve()  # the pixel dataset the latents encode
    assert main(["merge", str(samples), "--no-progress"]) == 0
    with netCDF4.Dataset(samples.with_suffix(".nc")) as nc:
        assert {"t2m", "tp", "e"} <= set(nc.variables)
        tp = nc["tp"][...]
        assert tp.shape[-2:] == (32, 32) and tp.shape[:2] == (3, 2)
        assert np.all(np.isfinite(tp)) and tp.min() >= 0.0
    report = tmp_path / "report"
    assert main(["evaluate", str(samples.with_suffix(".nc")), "--dataset", str(tiny_dataset), "--out",
                 str(report), "--no-progress"]) == 0
    assert (report / "metrics.json").is_file()


def test_decoding_the_stored_latents_gives_the_autoencoder_reconstruction(latent_run, latent_dataset,
                                                                           autoencoder, tiny_dataset):
    job = load_config(SampleJob, SAMPLE_JOB, overrides=["dates.limit=2"])
    job, run = open_run(job, latent_run)
    sampler = EnsembleSampler(run, make_plan(job, run), device=torch.device("cpu"))
    stored = torch.from_numpy(split_array(latent_dataset, "test", "target")[:3])
    decoded = sampler.decode_latents(stored)
    model = autoencoder_model(autoencoder)
    with torch.no_grad():
        pixels = torch.from_numpy(split_array(tiny_dataset, "test", "target")[:3])
        mean, _ = model.encode(pixels)
        expected = model.decode(mean, (32, 32))
    assert decoded.shape == (3, 3, 32, 32)
    torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-4)
    # the conditions a latent run samples with are those training read: block means of the pixel ones
    date = run.manifest.split_dates()["test"][0]
    cond, _, _ = sampler.conditions(date)
    stored_cond = split_array(latent_dataset, "test", "cond")[0]
    assert stored_cond.shape[0] == 10 and cond.shape[0] == 13  # 6 dynamic, 4 baseline latents, 3 statics
    np.testing.assert_allclose(cond[:10], stored_cond, atol=1e-5)
    sampler.close()


def test_what_latent_runs_do_not_take_is_refused(latent_run, latent_dataset, tiny_dataset, autoencoder,
                                                  tmp_path, capsys):
    def refused(argv: list[str], match: str) -> None:
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.search(match, err), err

    sample = ["sample", str(SAMPLE_JOB), "--run", str(latent_run), "--out", str(tmp_path / "s"),
              "--no-progress"]
    refused([*sample, "--set", f"dataset={latent_dataset}"], "a latent dataset; run .* pixel dataset")
    refused([*sample, "--set", "sample.tile=[8,8]"], "sample.tile: run .* samples latents")
    refused(["encode", str(latent_run), "--dataset", str(tiny_dataset), "--out", str(tmp_path / "x")],
            "needs an autoencoder run")
    refused(["encode", str(autoencoder), "--dataset", str(latent_dataset), "--out", str(tmp_path / "x")],
            "a latent dataset already")
    assert not (tmp_path / "x").exists() and not (tmp_path / "s" / "parts").exists()
    # encoded without the baseline: block means only, and no residual to diffuse
    plain = tmp_path / "plain"
    assert main(["encode", str(autoencoder), "--dataset", str(tiny_dataset), "--out", str(plain),
                 "--no-baseline", "--no-progress"]) == 0
    pixel_names = [c.name for c in read_manifest(tiny_dataset).conditions]
    assert [c.name for c in read_manifest(plain).conditions] == pixel_names
    proc = subprocess.run([sys.executable, "-m", "hpcdiff.cli", "train", str(LATENT_JOB), "--out",
                           str(tmp_path / "r"), "--no-progress", "--set", f"data.dataset={plain}", "--set",
                           "diffusion.residual=true"], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert proc.returncode == 1 and "encoded without its baseline" in proc.stderr, proc.stderr[-2000:]


def test_the_sampling_memory_estimate_counts_the_autoencoder(latent_run):
    """`submit sample`'s pre-flight for a latent run: the autoencoder's weights are held with the U-Net's,
    and decoding whole fields (which the U-Net's calls on the latent grid never overlap) can be the peak."""
    job = load_config(SampleJob, SAMPLE_JOB, overrides=["dates.limit=2"])
    _, run = open_run(job, latent_run)
    spec = run.spec
    autoencoder = spec.latent.autoencoder_spec()
    latent_only = dataclasses.replace(spec, latent=None)  # the same U-Net as if it sampled pixels
    estimate = memory.estimate_sampling(spec, batch=8, precision="fp32", sampler="dpmpp_3m")
    unet = memory.estimate_sampling(latent_only, batch=8, precision="fp32", sampler="dpmpp_3m")
    ae_params = sum(p.numel() for p in autoencoder.build_model().parameters())
    assert estimate.parts["weights"] == unet.parts["weights"] + 4 * ae_params
    decoding = memory.decoding_activation_bytes(autoencoder, batch=8)
    assert decoding > unet.parts["activations"]  # at 32 x 32 from 16 x 16: the decoder is the peak
    assert estimate.parts["activations"] == decoding
    assert estimate.shape == (32, 32)  # the fields sampling writes, not the latent grid
    assert "latents 16 x 16 decoded by tiny" in estimate.describe()
