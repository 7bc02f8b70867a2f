"""The run spec of an autoencoder run: made from a job and a dataset, a weights-only round trip that
comes back by its kind, the architecture of its preset, and a difference of kind named alone in both
directions."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from trainrun import AUTOENCODER_JOB, TRAIN_JOB

from hpcdiff.config import load_config
from hpcdiff.data.manifest import read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.models.autoencoder import Autoencoder
from hpcdiff.runspec import AutoencoderSpec, RunSpec, spec_from_job, spec_from_state
from hpcdiff.train import checkpoint
from hpcdiff.train.job import TrainJob


def specs(tiny_dataset) -> tuple[AutoencoderSpec, RunSpec]:
    manifest = read_manifest(tiny_dataset)
    jobs = [load_config(TrainJob, path, overrides=[f"data.dataset={tiny_dataset}", "model.preset=tiny"])
            for path in (AUTOENCODER_JOB, TRAIN_JOB)]
    return spec_from_job(jobs[0], manifest), spec_from_job(jobs[1], manifest)


def test_an_autoencoder_spec_round_trips_by_its_kind(tiny_dataset, tmp_path):
    auto, diffusion = specs(tiny_dataset)
    assert isinstance(auto, AutoencoderSpec) and isinstance(diffusion, RunSpec)
    assert (auto.factor, auto.latent_channels, auto.latent_shape) == (2, 4, (16, 16))
    assert auto.architecture == {"channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                                 "latent_channels": 4}
    torch.save({"run_spec": auto.to_state()}, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)["run_spec"]
    assert spec_from_state(saved, where="x") == auto == AutoencoderSpec.from_state(saved, where="x")
    assert isinstance(auto.build_model(), Autoencoder)
    with pytest.raises(HpcdiffError, match="x: the run spec is of a run of kind 'autoencoder', not 'diff"):
        RunSpec.from_state(saved, where="x")
    with pytest.raises(HpcdiffError, match="run spec of unknown kind 'gan'"):
        spec_from_state({**saved, "kind": "gan"}, where="x")


def test_a_run_of_the_other_kind_differs_in_kind_alone(tiny_dataset, tmp_path):
    auto, diffusion = specs(tiny_dataset)
    assert auto.mismatch(diffusion) == ["kind: 'autoencoder' vs 'diffusion'"]
    assert diffusion.mismatch(auto) == ["kind: 'diffusion' vs 'autoencoder'"]
    assert auto.mismatch(dataclasses.replace(auto, kl_weight=1e-3)) == ["kl_weight: 1e-06 vs 0.001"]
    state = {"run_spec": diffusion.to_state(), "config": {}}
    with pytest.raises(HpcdiffError, match=r"run differs from the job's \(kind: 'diffusion' vs 'autoenc"):
        checkpoint.check_compatible(state, spec=auto, path=tmp_path)
