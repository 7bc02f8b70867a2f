"""Patch training for real (DeepSpeed on CPU): windows of 16 x 12 from the tiny world's 32 x 32 fields,
with position channels. Two ranks train exactly like one rank accumulating, a run killed after its first
checkpoint and resumed repeats the uninterrupted history bit for bit, and the checkpoint's run spec
records the window and the position channels."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainrun import check_resume_repeats, check_two_ranks_match, final_weights, run_train

from hpcdiff.train.checkpoint import latest, load_state

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

PATCHED = ("train.micro_batch=2", "data.patch_size=[16, 12]", "data.position_channels=true")


@pytest.fixture(scope="module")
def one_rank(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("patch-one") / "run"
    run_train(tiny_dataset, out, *PATCHED)
    return out


def test_the_run_spec_records_the_window_and_the_position_channels(one_rank):
    spec = load_state(latest(one_rank / "checkpoints"))["run_spec"]
    assert list(spec["patch"]) == [16, 12] and spec["positions"] is True
    assert spec["conditions"][-2:] == ["pos_y", "pos_x"]
    assert list(spec["image_shape"]) == [32, 32]
    weights = final_weights(one_rank)
    first = next(v for k, v in weights.items() if k.endswith("down.0.0.weight"))
    assert first.shape[1] == 3 + len(spec["conditions"])  # x_t channels + conditions with positions


def test_two_ranks_with_patches_match_one_rank(tiny_dataset, one_rank, tmp_path):
    check_two_ranks_match(tiny_dataset, one_rank, tmp_path / "two", *PATCHED)


def test_resume_with_patches_repeats_the_uninterrupted_history(tiny_dataset, one_rank, tmp_path):
    check_resume_repeats(tiny_dataset, one_rank, tmp_path / "killed", *PATCHED)
