"""hpcdiff check: a good dataset passes; any mismatch is a one-line error naming the shard."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
from mini_world import write_mini_world, write_recipe

from hpcdiff.cli import main
from hpcdiff.data.manifest import write_manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("check")
    recipe = write_recipe(base / "r.yaml", write_mini_world(base / "world", years=(2000, 2001, 2002, 2003)))
    out = base / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return out


def test_good_dataset(dataset, capsys):
    assert main(["check", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "train: 24 samples in 3 shards" in out


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_time(path):
    with h5py.File(path, "a") as f:
        f["time"][0] += 1


def _drop(path):
    path.unlink()


@pytest.mark.parametrize(("damage", "words"), [
    (_flip_byte, "sha256 mismatch"), (_drop, "missing"), (_rewrite_time, "sha256 mismatch"),
])
def test_damaged_shard_is_named(dataset, tmp_path, capsys, damage, words):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    shard = copy / manifest["splits"]["val"]["shards"][-1]["path"]
    damage(shard)
    assert main(["check", str(copy)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(shard) in err and words in err


def test_manifest_that_disagrees_with_a_shard(dataset, tmp_path, capsys):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["train"]["dates"][0] = "1999-12-31"
    write_manifest(copy, manifest)  # an inconsistent manifest that still carries a valid checksum
    assert main(["check", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "train-0-0.h5: 'time' differs from the manifest's dates" in err
    assert main(["check", str(tmp_path / "nothing")]) == 1
