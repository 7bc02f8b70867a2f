"""Preprocessing under a real ``mpiexec -n 2``: same statistics and samples as one process; a bad
input seen by one rank only makes *both* ranks exit non-zero, promptly, leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
from mini_world import write_mini_world, write_recipe

from hpcdiff.cli import main

VENV_BIN = str(Path(sys.executable).parent)
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]))
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec")]


def mpi_preprocess(recipe: Path, out: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "hpcdiff.cli", "preprocess", str(recipe),
           "--out", str(out), "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def split_arrays(dataset: Path, split: str, key: str) -> np.ndarray:
    manifest = json.loads((dataset / "manifest.json").read_text())
    return np.concatenate([h5py.File(dataset / s["path"], "r")[key][...]
                           for s in manifest["splits"][split]["shards"]])


def test_two_ranks_match_one_process(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", write_mini_world(tmp_path / "world"))
    assert main(["preprocess", str(recipe), "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    proc = mpi_preprocess(recipe, tmp_path / "two")
    assert proc.returncode == 0, proc.stderr
    one, two = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    for key in ("targets", "conditions", "static_channels"):
        for a, b in zip(one[key], two[key], strict=True):
            assert a["stats"].keys() == b["stats"].keys()
            for stat in ("mean", "std", "scale"):
                assert b["stats"][stat] == pytest.approx(a["stats"][stat], rel=1e-12)
    ranks = {s["path"].split("-")[1] for s in two["splits"]["train"]["shards"]}
    assert ranks == {"0", "1"}
    for split in ("train", "val", "test"):
        assert one["splits"][split]["dates"] == two["splits"][split]["dates"]
        for key in ("target", "cond", "time"):
            np.testing.assert_allclose(split_arrays(tmp_path / "two", split, key),
                                       split_arrays(tmp_path / "one", split, key), rtol=0, atol=1e-6)
    assert main(["check", str(tmp_path / "two")]) == 0


def test_bad_file_on_one_rank_fails_every_rank_without_hanging(tmp_path):
    world = write_mini_world(tmp_path / "world")
    bad = world / "era5" / "era5_2001.nc"  # the second half of the training split: rank 1 reads it
    with netCDF4.Dataset(bad, "a") as ds:
        ds["tp"][40, 2, 2] = np.nan
    recipe = write_recipe(tmp_path / "r.yaml", world)
    proc = mpi_preprocess(recipe, tmp_path / "ds")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hpcdiff: error:")]
    assert len(lines) == 2, proc.stderr  # one line from each rank, the same error
    words = "'tp' has 1 fill/missing or NaN values"
    assert all(str(bad) in line and words in line and "(rank 1 of 2)" in line for line in lines)
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "world"]


def test_launcher_world_without_mpi_is_a_clear_error(tmp_path):
    """``srun`` without an MPI plugin: SLURM says 2 tasks, MPI sees a world of 1 → one-line error."""
    recipe = write_recipe(tmp_path / "r.yaml", write_mini_world(tmp_path / "world"))
    slurm = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "0"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", **slurm}
    cmd = [sys.executable, "-m", "hpcdiff.cli", "preprocess", str(recipe), "--out", str(tmp_path / "ds")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "the slurm environment says rank 0 of 2 but MPI says rank 0 of 1" in proc.stderr
    assert not (tmp_path / "ds").exists()
