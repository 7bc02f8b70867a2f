"""Shared fixtures: the single-host SLURM test cluster (slurm/testcluster) for tests marked `slurm`, a
tiny preprocessed synthetic dataset, and small real file systems that fill up."""

# pyproj before anything imports ecCodes (xarray's backend discovery imports cfgrib whenever a test opens a
# file without naming an engine): see hpcdiff.data.formats.import_grib
import pyproj  # noqa: F401, I001

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import submitit
from trainrun import REPO

from hpcdiff.cli import main

TESTCLUSTER = Path(__file__).resolve().parents[1] / "slurm" / "testcluster"


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster. `env` holds what a client needs (SLURM_CONF, PATH with the sacct
    stand-in); the `slurm_cluster` fixture also sets it in os.environ for the session."""

    env: dict[str, str]
    state_dir: Path


def _script(name: str, timeout_s: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", str(TESTCLUSTER / name)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)


def _client_env() -> dict[str, str]:
    """The variables env.sh sets, read from a bash that sourced it (one source of truth)."""
    names = ["SLURM_CONF", "PATH", "HPCDIFF_SLURM_DIR", "HPCDIFF_SLURM_PORT"]
    values = " ".join(f'"${n}"' for n in names)
    script = f". {shlex.quote(str(TESTCLUSTER / 'env.sh'))} && printf '%s\\n' {values}"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
    return dict(zip(names, out.stdout.splitlines(), strict=True))


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Starts the test cluster, or reuses a running one; stops it at the end if it started it."""
    if not (shutil.which("sbatch") and shutil.which("slurmctld") and shutil.which("munged")):
        pytest.fail("Slurm is not installed: run `bash slurm/testcluster/install.sh` as root", pytrace=False)
    env = _client_env()
    full_env = {**os.environ, **env}
    was_up = _script("status.sh", 30, full_env).returncode == 0
    if not was_up:
        proc = _script("start.sh", 120, full_env)
        if proc.returncode != 0:
            pytest.fail(f"slurm/testcluster/start.sh failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
        # Job ids restart at 1 on a fresh cluster: forget job states submitit may have cached.
        submitit.SlurmJob.watcher.clear()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        yield SlurmCluster(env=env, state_dir=Path(env["HPCDIFF_SLURM_DIR"]))
    if not was_up:
        _script("stop.sh", 60, full_env)


@pytest.fixture
def submitit_folder(tmp_path: Path) -> Path:
    """A fresh folder for submitit's job files. Never reuse one across cluster starts: job ids
    restart at 1, and submitit would read an old result file back as the new job's result."""
    folder = tmp_path / "submitit"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The `tiny` synthetic world, preprocessed with preprocess/synthetic.yaml (seconds to make)."""
    base = tmp_path_factory.mktemp("tiny")
    assert main(["synth", str(base / "world"), "--preset", "tiny", "--no-progress"]) == 0
    assert main(["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(base / "ds"),
                 "--set", f"root={base / 'world'}", "--no-progress"]) == 0
    return base / "ds"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test marked `slurm` gets the cluster, and so the environment to reach it.
    for item in items:
        if item.get_closest_marker("slurm") and "slurm_cluster" not in item.fixturenames:
            item.fixturenames.insert(0, "slurm_cluster")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(size_kib)``: a fresh folder on a tmpfs of that size (a real file system that fills
    up), unmounted at the end. Mounting needs root (CAP_SYS_ADMIN), as in CI; without it, skipped."""
    mounts = []

    def mount(size_kib: int) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {proc.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in reversed(mounts):
        # lazily: a library that failed on the full disk may still hold a descriptor there
        subprocess.run(["umount", "--lazy", str(folder)], check=True, timeout=30)
