"""The slurm: section: every value but setup: is one SLURM token, so none can start a line of the batch
script; sizes are checked; bad values are one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpcdiff.config import load_config
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.sbatch import render_train_sbatch, sbatch_directives
from hpcdiff.launch.slurm import SlurmSection, job_name
from hpcdiff.sample.job import SampleJob
from hpcdiff.train.job import TrainJob

NASTY = ["gpu\nrm -rf ~", "gpu\r", "gpu debug", "gpu\tdebug", "gpu\x00", "gpu\u2028x", 'gpu"', "gpu'",
         "gpu\\", "gpu`id`", "", "grå"]


def write_job(tmp_path: Path, slurm: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "ds"}, "slurm": slurm}))
    return path


def refused(cls: type, path: Path) -> str:
    with pytest.raises(HpcdiffError) as err:
        load_config(cls, path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("key", ["partition", "account", "qos", "constraint"])
@pytest.mark.parametrize("value", NASTY)
def test_field_that_is_not_one_token_is_refused(tmp_path, key, value):
    message = refused(TrainJob, write_job(tmp_path, {key: value}))
    assert f"slurm: {key} must be one word of printable ASCII" in message


@pytest.mark.parametrize(("extra", "pattern"), [
    ({"mail-type": "END\nrm -rf ~"}, r"extra\.mail-type must be one word"),
    ({"job-name": "x\n#SBATCH --partition=other"}, r"extra\.job-name must be one word"),
    ({"mail-type\nrm -rf ~": "END"}, r"extra key 'mail-type\\nrm -rf ~' must match"),
    ({"-partition": "gpu"}, "extra key '-partition' must match"),
    ({"begin": ["now"]}, r"extra\.begin must be a string, an integer or true"),
    ({"exclusive": None}, r"extra\.exclusive must be a string, an integer or true"),
    ({"exclusive": False}, r"extra\.exclusive must be a string, an integer or true"),
])
def test_bad_extra_is_refused(tmp_path, extra, pattern):
    assert pytest.raises(HpcdiffError, load_config, TrainJob, write_job(tmp_path, {"extra": extra})).match(
        pattern)


def test_sample_job_slurm_section_is_checked_too(tmp_path):
    path = tmp_path / "sample.yaml"
    path.write_text(yaml.safe_dump({"slurm": {"account": "proj\nscancel -u $USER"}}))
    assert "slurm: account must be one word" in refused(SampleJob, path)


@pytest.mark.parametrize(("key", "value", "low"), [
    ("nodes", 0, 1), ("gpus_per_node", -1, 0), ("tasks_per_node", 0, 1), ("cpus_per_task", 0, 1),
    ("mem_gb", 0, 1), ("time_limit_min", 0, 1), ("max_requeues", -1, 0),
])
def test_sizes_are_checked(tmp_path, key, value, low):
    message = refused(TrainJob, write_job(tmp_path, {key: value}))
    assert f"slurm: {key} must be at least {low}, got {value}" in message


def test_valid_section_keeps_its_values():
    slurm = SlurmSection(nodes=2, gpus_per_node=0, tasks_per_node=3, mem_gb=1, partition="gpu,gpu-long",
                         constraint="[rack1*2&rack2*4]", max_requeues=0,
                         extra={"exclusive": True, "gres": "gpu:a100:4", "nice": 10, "mail_user": "me@x.org"})
    assert (slurm.ntasks_per_node, slurm.partition, slurm.extra["nice"]) == (3, "gpu,gpu-long", 10)


def shell_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#SBATCH ")]


def test_only_setup_lines_are_shell():
    """Whatever valid values the other fields hold, the script is the template's lines, one #SBATCH line
    per directive, and the setup lines."""
    setup = ["module load cuda/12.4", "export TAG='a b'; echo \"$TAG\""]
    slurm = SlurmSection(partition="gpu|x", account="a;b", qos="$(id)", constraint="a&b",
                         extra={"comment": "x>y", "exclusive": True}, setup=setup)
    text = render_train_sbatch(slurm)
    plain = shell_lines(render_train_sbatch(SlurmSection()))
    assert [line for line in shell_lines(text) if line not in [*setup, "# setup"]] == plain
    assert [line for line in text.splitlines() if line in setup] == setup
    directives = sbatch_directives(slurm, name="hpcdiff-train")
    assert len(directives) == 13
    assert len([line for line in text.splitlines() if line.startswith("#SBATCH ")]) == len(directives) + 3
    assert "#SBATCH --qos='$(id)'" in text.splitlines() and "#SBATCH --account='a;b'" in text.splitlines()


def test_job_name_from_a_folder_name_is_a_token():
    assert job_name("hpcdiff-train", "run 1\nrm -rf ~") == "hpcdiff-train-run_1_rm_-rf__"
    assert job_name("hpcdiff-sample", "kørsel.v2") == "hpcdiff-sample-k_rsel.v2"


def test_launch_imports_neither_torch_nor_the_engine():
    code = ("import sys, hpcdiff.launch.submit, hpcdiff.launch.array, hpcdiff.launch.sbatch; "
            "print(sorted(m for m in ('torch', 'deepspeed', 'hpcdiff.train.engine') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
