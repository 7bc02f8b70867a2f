"""The run contract: a job and a dataset give one RunSpec; it survives a weights-only checkpoint round
trip, builds the denoiser and the diffusion, names every difference, and chooses the backbone from the
registry by the job's name."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from trainrun import REPO

from hpcdiff.config import load_config
from hpcdiff.data.manifest import read_manifest
from hpcdiff.data.residual import residual_from_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.models.denoiser import Denoiser
from hpcdiff.models.unet import UNet
from hpcdiff.runspec import RunSpec
from hpcdiff.train import checkpoint
from hpcdiff.train.job import TrainJob


def job(tiny_dataset, *overrides: str) -> TrainJob:
    return load_config(TrainJob, REPO / "jobs" / "demo_train.yaml",
                       overrides=[f"data.dataset={tiny_dataset}", "model.preset=tiny", *overrides])


def test_spec_from_job_and_manifest(tiny_dataset, tmp_path):
    manifest = read_manifest(tiny_dataset)
    spec = RunSpec.from_job(job(tiny_dataset, "diffusion.residual=true", "diffusion.prediction=v"), manifest)
    assert spec.targets == ["t2m", "tp", "e"] and spec.conditions == manifest.condition_names
    assert spec.image_shape == manifest.grid.shape and spec.normalization == manifest.fingerprint()
    assert spec.residual.residual() == residual_from_manifest(manifest)  # the preprocessing's fit
    torch.save({"run_spec": spec.to_state()}, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)["run_spec"]
    assert RunSpec.from_state(saved, where="state.pt") == spec and spec.mismatch(spec) == []


def test_spec_builds_the_denoiser_and_the_diffusion(tiny_dataset):
    spec = RunSpec.from_job(job(tiny_dataset, "diffusion.num_steps=50", "diffusion.prediction=v"),
                            read_manifest(tiny_dataset))
    model = spec.build_model()
    assert isinstance(model, Denoiser) and isinstance(model.backbone, UNet) and model.prediction == "v"
    assert model.backbone.out_channels == 6  # learned variance: eps and v channels per target
    assert spec.build_diffusion().num_steps == 50 and spec.build_diffusion(steps=10).num_steps == 10
    x = torch.randn(2, 3, *spec.image_shape)
    cond = torch.randn(2, len(spec.conditions), *spec.image_shape)
    out = model(x, torch.tensor([0, 49]), cond, torch.tensor([1.0, 200.0]))
    assert out.shape == (2, 6, *spec.image_shape) and out.dtype == torch.float32


def test_differences_are_named(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    spec = RunSpec.from_job(job(tiny_dataset), manifest)
    other = dataclasses.replace(spec, preset="small", prediction="eps" if spec.prediction == "v" else "v")
    diff = spec.mismatch(other)
    assert any(d.startswith("preset: 'tiny' vs 'small'") for d in diff)
    assert any(d.startswith("prediction") for d in diff)
    with pytest.raises(HpcdiffError, match="run spec version"):
        RunSpec.from_state({**spec.to_state(), "version": 99}, where="x")
    with pytest.raises(HpcdiffError, match="no run spec"):
        RunSpec.from_state(None, where="x")


def test_backbone_comes_from_the_registry_by_the_jobs_name(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    with pytest.raises(HpcdiffError, match="model.backbone 'vit' is not a backbone; valid: unet"):
        RunSpec.from_job(job(tiny_dataset, "model.backbone=vit"), manifest)  # refused before training
    spec = dataclasses.replace(RunSpec.from_job(job(tiny_dataset), manifest), backbone="vit")
    with pytest.raises(HpcdiffError, match="model.backbone 'vit' is not a backbone; valid: unet"):
        spec.build_model()


def test_resume_refuses_another_run_or_another_normalization(tiny_dataset, tmp_path):
    manifest = read_manifest(tiny_dataset)
    spec = RunSpec.from_job(job(tiny_dataset), manifest)
    state = {"run_spec": spec.to_state(), "config": {"data": {"dataset": "/old/dataset"}}}
    checkpoint.check_compatible(state, spec=spec, path=tmp_path, dataset=tiny_dataset)
    with pytest.raises(HpcdiffError, match="run differs from the job's .*preset: 'tiny' vs 'small'"):
        checkpoint.check_compatible(state, spec=dataclasses.replace(spec, preset="small"), path=tmp_path)
    other = dataclasses.replace(spec, normalization="0" * 64)
    with pytest.raises(HpcdiffError, match=f"trained on /old/dataset .* dataset {tiny_dataset} has other "
                                           "normalization statistics"):
        checkpoint.check_compatible(state, spec=other, path=tmp_path, dataset=tiny_dataset)


def test_a_spec_keeps_the_architecture_it_was_trained_with():
    """The spec records the preset's resolved size config: a run trained with windowed attention keeps
    it, and a run whose spec recorded none (trained before presets gained windows) gets global attention."""
    from hpcdiff.config import to_dict
    from hpcdiff.models import UNET_PRESETS
    from hpcdiff.runspec import DiffusionSpec, RunSpec

    base = dict(backbone="unet", preset="small", targets=["t2m"], conditions=["t2m", "lsm"],
                image_shape=(24, 24), diffusion=DiffusionSpec(num_steps=10), prediction="eps",
                normalization="x")
    recorded = RunSpec(**base, architecture=to_dict(UNET_PRESETS["small"]))
    unrecorded = RunSpec(**base)
    assert UNET_PRESETS["small"].attention_window == 16
    windowed = [m.window for m in recorded.build_model().modules() if hasattr(m, "window")]
    legacy = [m.window for m in unrecorded.build_model().modules() if hasattr(m, "window")]
    assert windowed and set(windowed) == {16} and set(legacy) == {None}
    again = RunSpec.from_state(recorded.to_state(), where="test")
    assert again == recorded
