"""The demo runs from an installed package: its jobs and recipe are package data, and the wheel built
from this tree carries them (the top-level jobs/ and preprocess/ files are links to them)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from trainrun import REPO

from hpcdiff import demo

DEFAULT_FILES = ("demo_train.yaml", "demo_sample.yaml", "synthetic.yaml")


def test_demo_reads_its_jobs_from_the_package():
    plan = demo.DemoPlan(out=Path("x"))
    assert plan.train_job.parent == plan.sample_job.parent == demo.DEFAULTS
    assert demo.DEFAULTS.parent == Path(demo.__file__).resolve().parent
    for name in DEFAULT_FILES:
        assert (demo.DEFAULTS / name).is_file()
    assert (REPO / "jobs" / "demo_train.yaml").resolve() == demo.DEFAULTS / "demo_train.yaml"
    assert (REPO / "preprocess" / "synthetic.yaml").resolve() == demo.DEFAULTS / "synthetic.yaml"


def test_the_wheel_carries_the_demo_files(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--quiet", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("hpcdiff-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"hpcdiff/defaults/{name}" for name in DEFAULT_FILES} <= names
    # the interconnect profiles of hpcdiff profile's projection
    assert {f"hpcdiff/profile/interconnects/{name}.yaml" for name in ("4gpu-nvlink-ib200",
                                                                      "8gpu-nvlink-4xib200")} <= names
