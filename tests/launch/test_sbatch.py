"""slurm/train.sbatch stays in step with what `hpcdiff submit` asks of SLURM through submitit."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import submitit

from hpcdiff.config import load_config
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.sbatch import render_train_sbatch, sbatch_directives, submitit_parameters
from hpcdiff.launch.slurm import SlurmSection
from hpcdiff.train.job import TrainJob

REPO = Path(__file__).resolve().parents[2]


def directives(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", text, flags=re.MULTILINE))


def test_shipped_sbatch_is_the_rendered_reference_job():
    job = load_config(TrainJob, REPO / "jobs" / "gpu_train.yaml")
    assert (REPO / "slurm" / "train.sbatch").read_text() == render_train_sbatch(job.slurm), (
        "regenerate: hpcdiff submit train jobs/gpu_train.yaml --print-sbatch > slurm/train.sbatch")


def submitit_script(slurm: SlurmSection, folder: Path, monkeypatch) -> str:
    if shutil.which("srun") is None:
        # submitit's SLURM executor refuses to exist without srun on PATH; nothing is run here.
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / "srun").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**submitit_parameters(slurm, name="hpcdiff-train"))
    # The text submitit would pass to sbatch (private API, used here only to compare).
    return executor._executor._make_submission_file_text("python -m x", "uid")


def test_resources_equal_submitit(tmp_path, monkeypatch):
    job = load_config(TrainJob, REPO / "jobs" / "gpu_train.yaml")
    ours = directives(render_train_sbatch(job.slurm))
    theirs = directives(submitit_script(job.slurm, tmp_path, monkeypatch))
    resources = ["job-name", "nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "mem", "time",
                 "partition", "account", "qos", "constraint", "signal"]
    assert {k: ours[k] for k in resources} == {k: theirs[k] for k in resources}
    assert sbatch_directives(job.slurm, name="hpcdiff-train") == {k: ours[k] for k in resources}


def test_extra_and_minimal_sections(tmp_path, monkeypatch):
    slurm = SlurmSection(nodes=1, gpus_per_node=0, tasks_per_node=2, cpus_per_task=1, time_limit_min=5,
                         extra={"exclusive": "user"})
    ours = directives(render_train_sbatch(slurm))
    theirs = directives(submitit_script(slurm, tmp_path, monkeypatch))
    assert ours["ntasks-per-node"] == theirs["ntasks-per-node"] == "2"
    assert ours["exclusive"] == theirs["exclusive"] == "user"
    assert "gpus-per-node" not in ours and "gpus-per-node" not in theirs
    assert "partition" not in ours


def test_flags_and_quoting_equal_submitit(tmp_path, monkeypatch):
    slurm = SlurmSection(gpus_per_node=0, cpus_per_task=1, constraint="a100|v100",
                         extra={"exclusive": True, "mail_type": "END,FAIL", "begin": "now+1hour"})
    ours = render_train_sbatch(slurm).splitlines()
    theirs = submitit_script(slurm, tmp_path, monkeypatch).splitlines()
    for line in ("#SBATCH --exclusive", "#SBATCH --constraint='a100|v100'", "#SBATCH --mail-type=END,FAIL",
                 "#SBATCH --begin=now+1hour"):
        assert line in ours and line in theirs


def test_setup_lines_are_shell_and_verbatim(tmp_path, monkeypatch):
    setup = ['export GREETING="hello world"', "echo 'it''s' \"$GREETING\" # a comment"]
    slurm = SlurmSection(gpus_per_node=0, cpus_per_task=1, partition="debug", setup=setup)
    for text in (render_train_sbatch(slurm), submitit_script(slurm, tmp_path, monkeypatch)):
        lines = text.splitlines()
        start = lines.index("# setup") + 1
        assert lines[start:start + 2] == setup


@pytest.mark.parametrize("name", ["hpcdiff-train\nrm -rf ~", "two words", "it's"])
def test_unsafe_job_name_is_refused(name):
    with pytest.raises(HpcdiffError, match="the job name must be one word"):
        render_train_sbatch(SlurmSection(), name=name)
    with pytest.raises(HpcdiffError, match="the job name must be one word"):
        submitit_parameters(SlurmSection(), name=name)
