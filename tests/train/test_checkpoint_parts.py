"""Checkpoint bookkeeping, EMA and stop signals, without a DeepSpeed engine."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.signals import StopFlag
from hpcdiff.train import checkpoint
from hpcdiff.train.ema import EMA


def make_ckpt(root, step, *, complete=True):
    d = checkpoint.step_dir(root, step)
    d.mkdir(parents=True)
    torch.save({"step": step, "model_spec": {"preset": "tiny"}}, d / "state.pt")
    if complete:
        checkpoint.write_checksums(d)
    return d


def test_latest_and_prune(tmp_path):
    for step in (10, 20, 30):
        make_ckpt(tmp_path, step)
    make_ckpt(tmp_path, 40, complete=False)  # no checksums.json: never chosen
    (tmp_path / ".step-00000050.tmp").mkdir()
    assert checkpoint.latest(tmp_path).name == "step-00000030"
    (tmp_path / "latest").write_text("step-00000020\n")
    assert checkpoint.latest(tmp_path).name == "step-00000020"
    checkpoint.prune(tmp_path, keep_last=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000020", "step-00000030"]
    assert not (tmp_path / ".step-00000050.tmp").exists()


def test_resolve_resume(tmp_path):
    assert checkpoint.resolve_resume("auto", tmp_path) is None
    assert checkpoint.resolve_resume("never", tmp_path) is None
    d = make_ckpt(tmp_path, 5)
    assert checkpoint.resolve_resume("auto", tmp_path) == d
    assert checkpoint.resolve_resume(str(d), tmp_path) == d
    assert checkpoint.resolve_resume(str(tmp_path), tmp_path) == d
    with pytest.raises(HpcdiffError, match="not a checkpoint"):
        checkpoint.resolve_resume(str(tmp_path / "nope"), tmp_path)


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3))
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


def test_ema_is_fp32_and_follows_the_update_rule():
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(model, decay=0.9)
    assert all(v.dtype == torch.float32 for v in ema.state_dict().values())
    before = ema.state_dict()["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    expected = 0.9 * before + 0.1 * model.weight.float()
    assert torch.allclose(ema.state_dict()["weight"], expected, atol=1e-6)
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(ema.state_dict())
    with pytest.raises(KeyError):
        ema.load_state_dict({"weight": before})


def test_stop_flag_catches_usr2_and_forwards_to_previous_handler():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        flag = StopFlag()
        assert not flag()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert flag() and flag.received == signal.SIGUSR2
        assert seen == []  # not forwarded until the checkpoint is safe
        flag.forward()
        assert seen == [signal.SIGUSR2]
        flag.restore()
    finally:
        signal.signal(signal.SIGUSR2, previous)
