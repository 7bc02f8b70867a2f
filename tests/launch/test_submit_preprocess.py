"""``hpcdiff submit preprocess``: in-process (debug) it makes the dataset a direct ``hpcdiff preprocess``
makes; on the SLURM test cluster each task is an MPI rank; a bad recipe or output fails before anything
is queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainrun import REPO

from hpcdiff.cli import main
from hpcdiff.config import from_dict, load_config, read_yaml
from hpcdiff.data.recipe import PreprocessRecipe
from hpcdiff.launch.preprocess import SRUN_MPI, job_resources, submit_preprocess
from hpcdiff.launch.submit import wait

RECIPE = REPO / "preprocess" / "synthetic.yaml"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the task sets it in-process (debug); sbatch exports it


def manifest(dataset: Path) -> dict:
    return json.loads((dataset / "manifest.json").read_text())


def world_of(tiny_dataset: Path) -> Path:
    return tiny_dataset.parent / "world"  # the world the tiny_dataset fixture preprocessed


def test_slurm_section_keeps_cpu_defaults_and_local_runs_one_rank():
    data = {**read_yaml(RECIPE), "slurm": {"nodes": 2}}  # a partial section
    slurm = from_dict(PreprocessRecipe, data, where="recipe").slurm
    assert (slurm.nodes, slurm.gpus_per_node, slurm.ntasks_per_node, slurm.cpus_per_task) == (2, 0, 4, 1)
    assert job_resources(slurm, "slurm") == slurm
    for one_rank in (job_resources(slurm, "local"), job_resources(slurm, "debug")):
        assert (one_rank.nodes, one_rank.ntasks_per_node, one_rank.cpus_per_task) == (1, 1, 1)


def test_debug_executor_makes_the_dataset_of_a_direct_run(tiny_dataset, tmp_path, monkeypatch, capsys):
    # A relative root is taken from the recipe's folder, not from where the command runs.
    (tmp_path / "world").symlink_to(world_of(tiny_dataset))
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "synthetic.yaml"
    recipe.write_text(RECIPE.read_text().replace("root: ../synth", "root: ../world"))
    monkeypatch.chdir(tmp_path / "recipes")
    out = tmp_path / "ds"
    assert main(["submit", "preprocess", str(recipe), "--out", str(out), "--executor", "debug",
                 "--no-progress"]) == 0
    assert capsys.readouterr().out == f"dataset written to {out} by 1 rank(s)\n"
    assert manifest(out) == manifest(tiny_dataset)  # statistics, dates, shard names and checksums
    assert load_config(PreprocessRecipe, out / "recipe.yaml").root == world_of(tiny_dataset).resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "ds.submitit", "recipes", "world"]


@pytest.mark.parametrize("problem", ["unknown key", "missing root", "out is not a dataset"])
def test_a_bad_recipe_or_output_fails_before_anything_is_queued(problem, tmp_path, capsys):
    recipe, out, sets = tmp_path / "recipe.yaml", tmp_path / "ds", [f"root={tmp_path}"]
    recipe.write_text(RECIPE.read_text())
    if problem == "unknown key":
        sets.append("slurm.gpu_per_node=1")
        expected = "unknown key 'slurm.gpu_per_node'; did you mean 'slurm.gpus_per_node'?"
    elif problem == "missing root":
        sets = ["root=nowhere"]
        expected = f"recipe root {tmp_path / 'nowhere'} is not a folder"
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        expected = f"{out}: exists and is not a dataset (no manifest.json); refusing to replace it"
    args = ["submit", "preprocess", str(recipe), "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 1  # the default executor, slurm: no cluster is needed to fail here
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hpcdiff: error: ") and expected in err, err
    assert not (tmp_path / "ds.submitit").exists()


@pytest.mark.slurm
@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_slurm_tasks_are_mpi_ranks(tiny_dataset, tmp_path, submitit_folder):
    sets = [f"root={world_of(tiny_dataset)}", "slurm.partition=debug", "slurm.tasks_per_node=2",
            "slurm.time_limit_min=5"]
    recipe = load_config(PreprocessRecipe, RECIPE, overrides=sets)
    out = tmp_path / "ds"
    submitted = submit_preprocess(recipe, out, executor="slurm", recipe_path=RECIPE, folder=submitit_folder)
    results = sorted(wait(submitted, deadline_s=240), key=lambda r: r["rank"])
    assert [(r["rank"], r["world_size"], r["out"]) for r in results] == [(0, 2, str(out)), (1, 2, str(out))]
    script = next(submitit_folder.glob("*_submission.sh")).read_text()
    assert "srun --unbuffered" in script and " ".join(SRUN_MPI) in script
    one, two = manifest(tiny_dataset), manifest(out)
    assert {s["path"].split("-")[1] for s in two["splits"]["train"]["shards"]} == {"0", "1"}
    for split in ("train", "val", "test"):
        assert (two["splits"][split]["n"], two["splits"][split]["dates"]) == (
            one["splits"][split]["n"], one["splits"][split]["dates"])
    # Statistics merge in rank order: equal to one process's up to float rounding.
    for key in ("targets", "conditions", "static_channels"):
        for a, b in zip(one[key], two[key], strict=True):
            assert b["stats"]["transform"] == a["stats"]["transform"]
            for stat in ("mean", "std", "scale"):
                assert b["stats"][stat] == pytest.approx(a["stats"][stat], rel=1e-12)
            rms = a.get("residual_rms")  # targets only; None for a target without a residual pair
            assert b.get("residual_rms") == (rms if rms is None else pytest.approx(rms, rel=1e-12))
    assert main(["check", str(out)]) == 0
