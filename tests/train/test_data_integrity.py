"""Training never uses damaged data: a changed, truncated or deleted shard, or an edited manifest, is a
one-line error naming the file before any process group, model or run folder exists."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from trainrun import TINY, TRAIN_JOB

from hpcdiff.cli import main


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-4096])


def delete(path):
    path.unlink()


def train(dataset, out):
    sets = [a for o in (f"data.dataset={dataset}", *TINY) for a in ("--set", o)]
    return main(["train", str(TRAIN_JOB), "--out", str(out), "--no-progress", *sets])


@pytest.mark.parametrize(("damage", "words"), [
    (flip_a_byte, "sha256 mismatch (the file changed after preprocessing"),
    (truncate, "bytes, the manifest says"),
    (delete, "missing (listed in"),
])
def test_a_damaged_shard_stops_training_before_any_step(tiny_dataset, tmp_path, capsys, damage, words):
    copy = shutil.copytree(tiny_dataset, tmp_path / "ds")
    manifest = json.loads((copy / "manifest.json").read_text())
    shard = copy / manifest["splits"]["train"]["shards"][0]["path"]
    damage(shard)
    out = tmp_path / "run"
    assert train(copy, out) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hpcdiff: error: {shard}: ") and words in err and "\n" not in err, err
    assert not out.exists()  # no checkpoint, no run folder
    assert not torch.distributed.is_initialized()


def test_an_edited_manifest_stops_training(tiny_dataset, tmp_path, capsys):
    copy = shutil.copytree(tiny_dataset, tmp_path / "ds")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["conditions"][0]["stats"]["mean"] += 0.5
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert train(copy, tmp_path / "run") == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"hpcdiff: error: {copy}/manifest.json: edited after preprocessing (checksum mismatch); "
                   "preprocess again")
    assert not (tmp_path / "run").exists()
