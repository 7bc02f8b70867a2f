"""A dataset protects itself: the manifest carries its own checksum, the loader verifies each shard's
size and SHA-256 before using it, preprocessing records the software that made the dataset and stops
cleanly on a full disk."""

from __future__ import annotations

import json
import pickle
import re
import shutil

import pytest
from mini_world import write_mini_world, write_recipe

from hpcdiff.cli import main
from hpcdiff.data import loader
from hpcdiff.data.loader import ShardDataset
from hpcdiff.data.manifest import CHECKSUM_KEY, manifest_checksum, read_manifest, write_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.provenance import provenance


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("integrity")
    return write_recipe(base / "r.yaml", write_mini_world(base / "world", years=(2000, 2001, 2002, 2003)))


@pytest.fixture(scope="module")
def dataset(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity-ds") / "ds"
    assert main(["preprocess", str(world), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture
def copy(dataset, tmp_path):
    return shutil.copytree(dataset, tmp_path / "ds")


@pytest.fixture
def fresh_process(monkeypatch):
    """Forget which shards this (test) process has verified, and count the hashes from now on."""
    monkeypatch.setattr(loader, "_VERIFIED", set())
    hashed = []
    real = loader.file_sha256

    def counting(path, **kw):
        hashed.append(path.name)
        return real(path, **kw)

    monkeypatch.setattr(loader, "file_sha256", counting)
    return hashed


def raw(dataset):
    return json.loads((dataset / "manifest.json").read_text())


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpcdiff: error: ") and "\n" not in err, err
    return err


def train_shard(dataset):
    return dataset / raw(dataset)["splits"]["train"]["shards"][0]["path"]


def test_the_manifest_is_stamped_with_the_checksum_of_its_content(dataset):
    data = raw(dataset)
    assert data[CHECKSUM_KEY] == manifest_checksum(data)
    # canonical JSON: neither the stamp itself nor key order or indentation changes it
    shuffled = dict(reversed(list(data.items())))
    unstamped = {k: v for k, v in data.items() if k != CHECKSUM_KEY}
    assert manifest_checksum(shuffled) == manifest_checksum(unstamped)


def test_the_manifest_records_the_software_that_made_it(dataset):
    recorded = raw(dataset)["provenance"]
    assert recorded == provenance()
    assert set(recorded) == {"hpcdiff", "hpcdiff_commit", "torch", "deepspeed", "numpy", "xarray", "h5py"}


@pytest.mark.parametrize("edit", ["statistic", "stamp", "no stamp"])
def test_an_edited_manifest_is_refused(copy, capsys, edit):
    data = raw(copy)
    if edit == "statistic":
        data["targets"][0]["stats"]["std"] *= 1.01
    elif edit == "stamp":
        data[CHECKSUM_KEY] = "0" * 64
    else:
        del data[CHECKSUM_KEY]
    (copy / "manifest.json").write_text(json.dumps(data, indent=1))
    assert main(["check", str(copy)]) == 1
    err = one_line_error(capsys)
    if edit == "no stamp":
        assert err.endswith(f"{copy}/manifest.json: no manifest_sha256 (written by an older hpcdiff); "
                            "preprocess again")
    else:
        assert err.endswith(f"{copy}/manifest.json: edited after preprocessing (checksum mismatch); "
                            "preprocess again")
    with pytest.raises(HpcdiffError, match="checksum mismatch|no manifest_sha256"):
        ShardDataset(copy, "train", batch_size=2)


def test_write_manifest_restamps_an_intended_change(copy):
    data = raw(copy)
    data["targets"][0]["stats"]["std"] *= 2
    write_manifest(copy, data)
    assert read_manifest(copy).targets[0].stats.std == data["targets"][0]["stats"]["std"]


@pytest.mark.parametrize(("damage", "words"), [
    (lambda p: p.unlink(), "missing (listed in"),
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "bytes, the manifest says"),
])
def test_a_deleted_or_truncated_shard_fails_when_the_dataset_is_made(copy, fresh_process, damage, words):
    shard = train_shard(copy)
    damage(shard)
    with pytest.raises(HpcdiffError, match=re.escape(words)) as err:
        ShardDataset(copy, "train", batch_size=2)
    assert str(err.value).startswith(f"{shard}: ") and "\n" not in str(err.value)
    assert fresh_process == []  # a stat, not a read


def test_a_flipped_byte_fails_before_the_shard_is_used(copy, fresh_process):
    shard = train_shard(copy)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    ds = ShardDataset(copy, "train", batch_size=2, shuffle=False)
    first = next(i for i in range(len(ds)) if ds._plan[i][0] == 0)
    with pytest.raises(HpcdiffError, match="sha256 mismatch") as err:
        ds[first]
    assert str(err.value).startswith(f"{shard}: ")
    with pytest.raises(HpcdiffError, match="sha256 mismatch"):
        ShardDataset(copy, "train", batch_size=2).verify()


def test_each_shard_is_hashed_once_per_process(dataset, fresh_process):
    shards = [s["path"].split("/")[-1] for s in raw(dataset)["splits"]["train"]["shards"]]
    ds = ShardDataset(dataset, "train", batch_size=2)
    ds.verify()
    for i in range(len(ds)):
        ds[i]
    assert sorted(fresh_process) == sorted(shards)
    ShardDataset(dataset, "train", batch_size=2).verify()  # another dataset object in the same process
    assert sorted(fresh_process) == sorted(shards)


def test_a_dataset_verified_before_pickling_is_not_hashed_again_in_a_worker(dataset, fresh_process):
    ds = ShardDataset(dataset, "train", batch_size=2)
    ds.verify()
    loader._VERIFIED.clear()  # what a spawned worker process starts with
    worker_copy = pickle.loads(pickle.dumps(ds))
    hashed = len(fresh_process)
    for i in range(len(worker_copy)):
        worker_copy[i]
    assert len(fresh_process) == hashed


def test_preprocess_refuses_a_disk_without_room_for_the_dataset(world, small_disk, capsys):
    disk = small_disk(256)
    assert main(["preprocess", str(world), "--out", str(disk / "ds"), "--no-progress"]) == 1
    err = one_line_error(capsys)
    assert f"{disk}: not enough free space for the dataset ds: needs " in err and "256.0 KiB free" in err
    assert list(disk.iterdir()) == []
