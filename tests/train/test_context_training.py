"""Training with large-scale context for real (DeepSpeed on CPU): the tiny world preprocessed with the
neighbouring day and the whole ERA5 box, a job reading day -1's conditions and the box at days -1 and 0
on 16 x 12 patches. Two ranks train exactly like one rank accumulating, a run killed after its first
checkpoint and resumed repeats the uninterrupted history bit for bit, the checkpoint's run spec records
the context, and sampling builds the same context for its dates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainrun import REPO, check_resume_repeats, check_two_ranks_match, final_weights, run_train

from hpcdiff.cli import main
from hpcdiff.data.manifest import read_manifest
from hpcdiff.train.checkpoint import latest, load_state

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

CONTEXT = ("train.micro_batch=2", "data.patch_size=[16, 12]", "context.temporal=[-1]",
           "context.spatial=[-1, 0]", "context.inject=both")


@pytest.fixture(scope="module")
def context_dataset(tmp_path_factory) -> Path:
    """The tiny world with ``context: {days: [-1, 0], box: the whole ERA5 grid, coarsened by 2}``."""
    base = tmp_path_factory.mktemp("ctx")
    world = base / "world"
    assert main(["synth", str(world), "--preset", "tiny", "--no-progress"]) == 0
    era5 = json.loads((world / "world.json").read_text())["era5_grid"]
    recipe = base / "recipe.yaml"
    recipe.write_text((REPO / "preprocess" / "synthetic.yaml").read_text() + (
        f"context:\n  days: [-1, 0]\n  box: {{lon: [{era5['lon_west']}, {era5['lon_east']}], "
        f"lat: [{era5['lat_south']}, {era5['lat_north']}], coarsen: 2, variables: [t2m, msl, tp]}}\n"))
    out = base / "ds"
    args = ["preprocess", str(recipe), "--out", str(out), "--set", f"root={world}", "--no-progress"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def one_rank(context_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ctx-one") / "run"
    run_train(context_dataset, out, *CONTEXT)
    return out


def test_the_run_spec_records_the_context(one_rank, context_dataset):
    spec = load_state(latest(one_rank / "checkpoints"))["run_spec"]
    info = read_manifest(context_dataset).context
    assert spec["context"]["temporal"] == [-1] and spec["context"]["spatial"] == [-1, 0]
    assert spec["context"]["inject"] == "both" and spec["context"]["channels"] == 6
    assert list(spec["context"]["box_shape"]) == list(info.box_shape)
    assert spec["conditions"][6:12] == ["t2m@-1", "tp@-1", "e@-1", "msl@-1", "u10@-1", "v10@-1"]
    assert spec["conditions"][-2:] == ["ctx_y", "ctx_x"]
    weights = final_weights(one_rank)
    encoder = [k for k in weights if "context" in k]
    assert encoder, "the network has a context encoder"
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "context" in k and k.endswith("weight"))


def test_two_ranks_with_context_match_one_rank(context_dataset, one_rank, tmp_path):
    check_two_ranks_match(context_dataset, one_rank, tmp_path / "two", *CONTEXT)


def test_resume_with_context_repeats_the_uninterrupted_history(context_dataset, one_rank, tmp_path):
    check_resume_repeats(context_dataset, one_rank, tmp_path / "killed", *CONTEXT)


def test_a_job_asking_for_context_the_dataset_lacks_fails_before_training(tiny_dataset, tmp_path, capsys):
    from trainrun import TINY, TRAIN_JOB

    overrides = (f"data.dataset={tiny_dataset}", *TINY, "context.temporal=[-1]")
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["train", str(TRAIN_JOB), "--out", str(tmp_path / "run"), "--no-progress", *sets]) != 0
    err = capsys.readouterr().err
    assert "holds none" in err and "context" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sampling_reads_the_same_context_and_refuses_a_date_without_it(context_dataset, one_rank, tmp_path,
                                                                      capsys):
    manifest = read_manifest(context_dataset)
    dropped = sorted(manifest.context.dropped)
    test_dates = manifest.split_dates()["test"][:2]
    job = REPO / "jobs" / "demo_sample.yaml"
    base = ["sample", str(job), "--run", str(one_rank), "--no-progress", "--set", "sample.members=2",
            "--set", "sample.steps=3", "--set", "dates.split=null"]
    out = tmp_path / "samples"
    assert main([*base, "--out", str(out), "--set", f"dates.dates={json.dumps(test_dates)}"]) == 0
    assert main(["merge", str(out)]) == 0
    import xarray as xr

    with xr.open_dataset(tmp_path / "samples.nc") as merged:
        assert merged.sizes["time"] == 2 and merged.sizes["member"] == 2
        assert float(merged["tp"].min()) >= 0.0
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main([*base, "--out", str(bad), "--set", f"dates.dates={json.dumps([dropped[0]])}"]) != 0
    err = capsys.readouterr().err.strip()
    assert f"{dropped[0]} was left out at preprocessing: its context needs" in err
    assert len(err.splitlines()) == 1
