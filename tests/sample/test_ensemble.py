"""Ensemble sampling from a real (tiny) checkpoint: seeds that do not depend on batching or chunking,
resumable part files, plans that cannot be mixed, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from sample_helpers import REPO, SMALL, hpcdiff_cmd, quiet_env

from hpcdiff.cli import main
from hpcdiff.errors import HpcdiffError
from hpcdiff.sample import parts
from hpcdiff.sample.dates import chunks
from hpcdiff.sample.ensemble import packed_rows, sample_ensemble
from hpcdiff.sample.plan import read_plan


def all_parts(out):
    plan = read_plan(out)
    return np.stack([parts.read_part(out, d) for d in plan.dates])


def test_rows_are_packed_across_members_and_dates():
    batches = list(packed_rows(["d0", "d1", "d2"], members=2, batch_size=4))
    assert batches == [[("d0", 0), ("d0", 1), ("d1", 0), ("d1", 1)], [("d2", 0), ("d2", 1)]]


def test_members_do_not_depend_on_batch_size(tiny_run, make_job, tmp_path):
    a = sample_ensemble(make_job("sample.batch_size=3"), tiny_run.run, tmp_path / "a", progress=False)
    sample_ensemble(make_job("sample.batch_size=8"), tiny_run.run, tmp_path / "b", progress=False)
    assert len(a.written) == 6 and a.samples == 18
    x = all_parts(tmp_path / "a")
    assert x.shape == (6, 3, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x, all_parts(tmp_path / "b"))  # bit for bit
    assert not np.array_equal(x[0, 0], x[0, 1])  # members differ
    assert not np.array_equal(x[0, 0], x[1, 0])  # dates differ


def test_members_do_not_depend_on_chunking_and_a_rerun_does_no_work(tiny_run, make_job, tmp_path):
    job = make_job()
    sample_ensemble(job, tiny_run.run, tmp_path / "one", progress=False)
    plan = read_plan(tmp_path / "one")
    for chunk in chunks(plan.dates, 2):  # as two array tasks would
        sample_ensemble(job, tiny_run.run, tmp_path / "two", dates=chunk, progress=False)
    np.testing.assert_array_equal(all_parts(tmp_path / "one"), all_parts(tmp_path / "two"))
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "one" / "parts").iterdir()}
    again = sample_ensemble(job, tiny_run.run, tmp_path / "one", progress=False)
    assert again.written == [] and again.samples == 0 and again.skipped == 6
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "one" / "parts").iterdir()} == mtimes


def test_plan_and_config_are_written_and_fixed(tiny_run, make_job, tmp_path):
    out = tmp_path / "s"
    sample_ensemble(make_job(), tiny_run.run, out, progress=False)
    plan = read_plan(out)
    assert plan.members == 3 and plan.sampler == "dpmpp_3m" and plan.steps == 4
    assert plan.channels == ["t2m", "tp", "e"] and plan.checkpoint_step == 2
    assert plan.dataset == str(tiny_run.dataset.resolve()) and len(plan.dates) == 6
    config = (out / "config.yaml").read_text()
    assert "step-00000002" in config and str(tiny_run.dataset.resolve()) in config  # resolved
    with pytest.raises(HpcdiffError, match="different plan .*members"):
        sample_ensemble(make_job("sample.members=4"), tiny_run.run, out, progress=False)


def test_a_corrupt_part_is_redone(tiny_run, make_job, tmp_path):
    out = tmp_path / "s"
    sample_ensemble(make_job(), tiny_run.run, out, progress=False)
    reference = all_parts(out)
    victim = parts.part_path(out, read_plan(out).dates[2])
    victim.write_bytes(b"not hdf5")  # e.g. a file copied in half by hand
    again = sample_ensemble(make_job(), tiny_run.run, out, progress=False)
    assert again.written == [victim.stem]
    np.testing.assert_array_equal(all_parts(out), reference)


def test_an_interrupted_part_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):  # h5py refuses the attribute after the data is written
        parts.write_part(tmp_path, "2001-01-01", np.zeros((2, 3, 4, 4), np.float32), attrs={"bad": object()})
    assert list(tmp_path.rglob("*")) == []  # the file is built in memory: nothing reached the disk


@pytest.mark.slow
def test_a_task_killed_while_sampling_leaves_only_complete_parts(tiny_run, make_job, tmp_path):
    out = tmp_path / "s"
    sets = [*SMALL, "dates.limit=20", "sample.steps=10", "sample.batch_size=2"]
    cmd = hpcdiff_cmd("sample", REPO / "jobs" / "demo_sample.yaml", "--run", tiny_run.run, "--out", out,
                      "--no-progress", *[a for s in sets for a in ("--set", s)])
    proc = subprocess.Popen(cmd, env=quiet_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("parts/*.h5")):  # kill it right after its first part, mid-way
        assert proc.poll() is None and time.monotonic() < deadline, "sampling ended before a part appeared"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    plan = read_plan(out)
    visible = sorted(p.stem for p in (out / "parts").glob("*.h5"))
    assert 0 < len(visible) < len(plan.dates)
    for date in visible:  # everything under a final name is complete
        assert parts.read_part(out, date).shape == (3, 3, 32, 32)
    rest = sample_ensemble(make_job("dates.limit=20", "sample.steps=10"), tiny_run.run, out, progress=False)
    assert sorted(rest.written) == sorted(set(plan.dates) - set(visible))
    assert parts.missing_dates(out) == []
    sample_ensemble(make_job("dates.limit=20", "sample.steps=10", "sample.batch_size=7"), tiny_run.run,
                    tmp_path / "ref", progress=False)
    np.testing.assert_array_equal(all_parts(out), all_parts(tmp_path / "ref"))


def test_cli_names_dates_the_dataset_lacks(tiny_run, tmp_path, capsys):
    code = main(["sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(tiny_run.run), "--out",
                 str(tmp_path / "s"), "--set", "dates.dates=[2001-09-08, 1990-01-01]"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("hpcdiff: error: ") and "not in the dataset: 1990-01-01" in err
    assert not (tmp_path / "s").exists()


def test_cli_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    code = main(["sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(tmp_path), "--out",
                 str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no complete checkpoint" in err and len(err.splitlines()) == 1
