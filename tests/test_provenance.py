"""hpcdiff.provenance: the version and commit of hpcdiff and the library versions behind every output."""

from __future__ import annotations

import importlib.metadata
import subprocess

import pytest

import hpcdiff
from hpcdiff.provenance import git_commit, package_version, provenance, software_versions


def git(folder, *args):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    """A repository with a package folder ``pkg`` at its top, one commit."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    return tmp_path


def test_keys_and_versions():
    recorded = provenance()
    assert list(recorded) == ["hpcdiff", "hpcdiff_commit", "torch", "deepspeed", "numpy", "xarray", "h5py"]
    assert recorded["hpcdiff"] == hpcdiff.__version__
    assert recorded["numpy"] == importlib.metadata.version("numpy")
    assert software_versions() == {k: v for k, v in recorded.items() if not k.startswith("hpcdiff")}
    recorded["numpy"] = "edited"
    assert provenance()["numpy"] != "edited"  # a fresh dict each call: the cache cannot be changed


def test_a_missing_package_is_absent():
    assert package_version("hpcdiff-no-such-distribution") == "absent"


def test_the_commit_of_a_checkout_and_whether_it_is_dirty(checkout):
    head = git(checkout, "rev-parse", "HEAD")
    assert git_commit(checkout / "pkg") == head
    (checkout / "pkg" / "__init__.py").write_text("x = 1\n")
    assert git_commit(checkout / "pkg") == f"{head}-dirty"


def test_no_commit_outside_a_checkout_of_the_package(checkout, tmp_path_factory):
    assert git_commit(tmp_path_factory.mktemp("plain")) == "unknown"
    nested = checkout / "venv" / "site-packages" / "pkg"  # installed inside some other repository
    nested.mkdir(parents=True)
    assert git_commit(nested) == "unknown"
