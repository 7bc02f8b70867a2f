"""Patch training for real (DeepSpeed on CPU): windows of 16 x 12 from the tiny world's 32 x 32 fields,
with position channels. Two ranks train exactly like one rank accumulating, a run killed after its first
checkpoint and resumed repeats the uninterrupted history bit for bit, and the checkpoint's run spec
records the window and the position channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from trainrun import kill_after_first_checkpoint, run_train, torchrun

from hpcdiff.train.checkpoint import latest, load_state
from hpcdiff.train.metrics_log import read_csv

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

PATCHED = ("train.micro_batch=2", "data.patch_size=[16, 12]", "data.position_channels=true")


def losses(run: Path) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["loss"])) for r in read_csv(run / "train.csv")]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    path = latest(run / "checkpoints") / "engine.pt"
    return torch.load(path, map_location="cpu", weights_only=True)["module"]


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
    two = tmp_path / "two"
    run_train(tiny_dataset, two, *PATCHED, launcher=torchrun(2))
    a, b = losses(one_rank), losses(two)
    assert [s for s, _ in a] == [s for s, _ in b]
    np.testing.assert_allclose([x[1] for x in b], [x[1] for x in a], rtol=2e-5)
    wa, wb = final_weights(one_rank), final_weights(two)
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=2e-6, msg=key)


def test_resume_with_patches_repeats_the_uninterrupted_history(tiny_dataset, one_rank, tmp_path):
    out = tmp_path / "killed"
    killed_at = kill_after_first_checkpoint(tiny_dataset, out, *PATCHED)
    assert killed_at < 6, "the run finished before it could be killed"
    run_train(tiny_dataset, out, *PATCHED)
    assert losses(out) == losses(one_rank)
    wa, wb = final_weights(one_rank), final_weights(out)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
