"""The bad inputs hpcdiff refuses, and what it says: the single source of docs/reliability.md.

Each :class:`Case` is one thing a user might try. ``tests/test_reliability.py`` runs every row through
``hpcdiff.cli.main`` and asserts exit status 1, exactly one stderr line ``hpcdiff: error: ...`` that
contains the row's fragment, and no temporaries left next to the output; it also checks that
docs/reliability.md is the rendering of these rows with the messages of this run. Regenerate it with

    python tests/reliability_cases.py > docs/reliability.md

The rows share a few inputs (:class:`Inputs`): the tiny synthetic dataset, a second one on a cropped
grid, runs whose ``state.pt`` is written directly (no DeepSpeed: sampling reads nothing else), and a
sampled and merged ensemble. A row's builder may prepare files in its own fresh folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from trainrun import REPO

from hpcdiff.cli import main
from hpcdiff.config import load_config, to_dict
from hpcdiff.data.manifest import read_manifest
from hpcdiff.models import preset_config
from hpcdiff.runspec import RunSpec
from hpcdiff.train import checkpoint
from hpcdiff.train.job import TrainJob

RECIPE = REPO / "preprocess" / "synthetic.yaml"
TRAIN_JOB = REPO / "jobs" / "demo_train.yaml"
SAMPLE_JOB = REPO / "jobs" / "demo_sample.yaml"
QUIET = "--no-progress"
# Sampling settings small enough for the shared inputs: 2 dates x 2 members, 2 solver steps.
TINY_SAMPLING = ("--set", "dates.limit=2", "--set", "sample.members=2", "--set", "sample.steps=2",
                 "--set", "sample.batch_size=4")
# The cropped grid: 20 x 20 divides by 2 (the tiny U-Net) but not by 8 (the small one).
CROP = "domain={y: [0, 20], x: [0, 20]}"


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What the rows build their arguments from; shared by all rows and never modified by one."""

    dataset: Path        # the tiny synthetic world, preprocessed (32 x 32)
    world: Path          # its NetCDF sources
    cropped: Path        # the same world on a 20 x 20 grid
    run: Path            # a tiny-U-Net run on `dataset` (one checkpoint, untrained weights)
    samples: Path        # a complete samples folder of `run`: 2 dates x 2 members
    samples_nc: Path     # `samples` merged
    cropped_samples: Path  # the same from a run on `cropped`
    cropped_nc: Path     # `cropped_samples` merged


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``args(inputs, folder)`` builds the command line (and may write files into
    ``folder``, a fresh folder of its own); ``fragment`` is what the one-line error must contain."""

    id: str
    tried: str
    args: Callable[[Inputs, Path], list[str]]
    fragment: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    code: int | str | None
    stdout: str
    stderr: str
    argv: list[str]
    folder: Path
    created: bool = False  # the output did not exist before the command and does now


# -- shared inputs -------------------------------------------------------------------------------------


def write_run(run: Path, dataset: Path, *overrides: str, ema_preset: str | None = None) -> Path:
    """A run folder whose one checkpoint holds what sampling reads: the run spec of the demo job on
    ``dataset`` with ``overrides``, fresh EMA weights (of ``ema_preset`` when given), the config and the
    manifest. No engine state: sampling never loads it."""
    job = load_config(TrainJob, TRAIN_JOB, overrides=[f"data.dataset={dataset}", "model.preset=tiny",
                                                      *overrides])
    manifest = read_manifest(dataset)
    spec = RunSpec.from_job(job, manifest)
    weights = spec if not ema_preset else dataclasses.replace(
        spec, preset=ema_preset, architecture=to_dict(preset_config("unet", ema_preset)))
    step = run / "checkpoints" / "step-00000001"
    step.mkdir(parents=True)
    torch.save({"step": 1, "ema": weights.build_model().state_dict(), "run_spec": spec.to_state(),
                "config": to_dict(job), "manifest": manifest.raw, "world_size": 1}, step / "state.pt")
    checkpoint.write_checksums(step)  # sealed as a real checkpoint is, so sampling reads it
    (run / "checkpoints" / "latest").write_text(f"{step.name}\n")
    return run


def _ok(argv: Sequence[str]) -> None:
    outcome = run_argv(list(argv))
    if outcome.code != 0:
        raise RuntimeError(f"preparing the shared inputs failed: hpcdiff {' '.join(argv)}\n{outcome.stderr}")


def build_inputs(base: Path, dataset: Path) -> Inputs:
    """The shared inputs under ``base`` (seconds: one preprocessing, two small samplings and merges)."""
    base.mkdir(parents=True)
    world = Path(read_manifest(dataset).raw["recipe"]["root"])
    cropped = base / "cropped"
    _ok(["preprocess", str(RECIPE), "--out", str(cropped), "--set", f"root={world}", "--set", CROP, QUIET])
    run = write_run(base / "run", dataset)
    samples = base / "samples"
    _ok(["sample", str(SAMPLE_JOB), "--run", str(run), "--out", str(samples), *TINY_SAMPLING, QUIET])
    _ok(["merge", str(samples), "--out", str(base / "samples.nc"), QUIET])
    cropped_run = write_run(base / "cropped-run", cropped)
    cropped_samples = base / "cropped-samples"
    _ok(["sample", str(SAMPLE_JOB), "--run", str(cropped_run), "--out", str(cropped_samples),
         *TINY_SAMPLING, QUIET])
    _ok(["merge", str(cropped_samples), "--out", str(base / "cropped.nc"), QUIET])
    return Inputs(dataset=dataset, world=world, cropped=cropped, run=run, samples=samples,
                  samples_nc=base / "samples.nc", cropped_samples=cropped_samples,
                  cropped_nc=base / "cropped.nc")


# -- helpers the rows use ------------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def truncated_copy(dataset: Path, folder: Path) -> Path:
    """A copy of ``dataset`` whose training shard lost its second half (a transfer cut short)."""
    ds = copy(dataset, folder / "ds")
    shard = next((ds / "shards").glob("train-*.h5"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    return ds


def edited_manifest(dataset: Path, folder: Path, edit: Callable[[dict], None]) -> Path:
    ds = copy(dataset, folder / "ds")
    manifest = json.loads((ds / "manifest.json").read_text())
    edit(manifest)
    (ds / "manifest.json").write_text(json.dumps(manifest))
    return ds


def broken_manifest(dataset: Path, folder: Path) -> Path:
    ds = copy(dataset, folder / "ds")
    write(ds / "manifest.json", '{"schema_version": 1, "targets": [')
    return ds


def user_folder(folder: Path) -> Path:
    write(folder / "thesis.tex", "\\documentclass{article}\n")
    return folder


def incomplete_copy(samples: Path, folder: Path) -> Path:
    out = copy(samples, folder / "samples")
    next((out / "parts").glob("*.h5")).unlink()
    return out


def train(i: Inputs, folder: Path, *sets: str, out: Path | None = None,
          dataset: Path | None = None) -> list[str]:
    overrides = [f"data.dataset={dataset or i.dataset}", "model.preset=tiny", *sets]
    return ["train", str(TRAIN_JOB), "--out", str(out or folder / "run"), QUIET,
            *[a for o in overrides for a in ("--set", o)]]


def sample(i: Inputs, folder: Path, *sets: str, run: Path | None = None,
           out: Path | None = None) -> list[str]:
    return ["sample", str(SAMPLE_JOB), "--run", str(run or i.run), "--out", str(out or folder / "samples"),
            QUIET, *TINY_SAMPLING, *[a for o in sets for a in ("--set", o)]]


def preprocess(i: Inputs, folder: Path, *sets: str, recipe: Path = RECIPE, out: Path | None = None,
               root: Path | None = None) -> list[str]:
    overrides = [f"root={root or i.world}", *sets]
    return ["preprocess", str(recipe), "--out", str(out or folder / "ds"), QUIET,
            *[a for o in overrides for a in ("--set", o)]]


SYNTHETIC_ERA5 = ["{name: t2m, units: K}", "{name: tp, units: m, kind: accumulation, transform: log1p}",
                  "{name: e, units: m of water equivalent, kind: accumulation, transform: asinh, scale: 0.5}",
                  "{name: msl, units: Pa}", "{name: u10, units: m s-1}", "{name: v10, units: m s-1}"]


def era5_variables(*extra: str, first: str | None = None) -> str:
    """``era5.variables=[...]``: the synthetic recipe's, the first replaced by ``first``, plus ``extra``."""
    entries = [first or SYNTHETIC_ERA5[0], *SYNTHETIC_ERA5[1:], *extra]
    return "era5.variables=[" + ", ".join(entries) + "]"


def zip_of_readme(folder: Path) -> Path:
    import zipfile

    path = folder / "download.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("README.txt", "request 12345\n")
    return path


def evaluate(samples_nc: Path, dataset: Path, out: Path) -> list[str]:
    return ["evaluate", str(samples_nc), "--dataset", str(dataset), "--out", str(out), QUIET]


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"


CASES: list[Case] = [
    # -- the command line ----------------------------------------------------------------------------
    Case("usage-unknown-command", "an unknown command",
         lambda i, f: ["frobnicate"], "invalid choice: 'frobnicate'"),
    Case("usage-missing-argument", "`train` without its arguments",
         lambda i, f: ["train"], "the following arguments are required: job, --out"),
    Case("usage-bad-int", "a seed that is not a number",
         lambda i, f: ["synth", str(f / "w"), "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    Case("set-without-equals", "`--set` without `=`",
         lambda i, f: preprocess(i, f, "shards.shard_mb"), "expected key.sub=value"),
    # -- config files --------------------------------------------------------------------------------
    Case("config-missing", "a config file that does not exist",
         lambda i, f: ["preprocess", str(f / "nope.yaml"), "--out", str(f / "ds")],
         "nope.yaml: no such file"),
    Case("config-yaml-syntax", "a recipe with a YAML syntax error",
         lambda i, f: preprocess(i, f, recipe=write(f / "r.yaml", "root: [unclosed\n")),
         "invalid YAML at line 2"),
    Case("config-not-a-mapping", "a recipe that is a list, not a mapping",
         lambda i, f: preprocess(i, f, recipe=write(f / "r.yaml", "- root\n- era5\n")),
         "expected a mapping at the top level, got list"),
    Case("config-alias-bomb", "a YAML alias bomb (nested anchors that expand exponentially)",
         lambda i, f: preprocess(i, f, recipe=write(f / "r.yaml", ALIAS_BOMB)),
         "aliases (*a) are not supported"),
    Case("config-unknown-key", "a misspelt key",
         lambda i, f: preprocess(i, f, "split.trian_years=[1991]"),
         "unknown key 'split.trian_years'; did you mean 'split.train_years'?"),
    Case("config-wrong-type", "a value of the wrong type",
         lambda i, f: train(i, f, "train.max_steps=many"),
         "train.max_steps must be an integer, got str 'many'"),
    Case("config-list-as-string", "a comma string where a list is expected",
         lambda i, f: preprocess(i, f, "split.val_years=2000,2001"), "split.val_years must be a list"),
    # -- config values -------------------------------------------------------------------------------
    Case("diffusion-zero-steps", "zero diffusion steps",
         lambda i, f: train(i, f, "diffusion.num_steps=0"), "num_steps must be at least 2, got 0"),
    Case("model-unknown-preset", "an unknown model preset",
         lambda i, f: train(i, f, "model.preset=huge"), "model.preset 'huge' is not a preset of unet"),
    Case("model-unknown-backbone", "an unknown backbone",
         lambda i, f: train(i, f, "model.backbone=vit"), "model.backbone 'vit' is not a backbone"),
    Case("data-negative-workers", "negative loader workers",
         lambda i, f: train(i, f, "data.num_workers=-1"), "num_workers must be 0 or more, got -1"),
    Case("data-patch-larger-than-grid", "a training window larger than the grid",
         lambda i, f: train(i, f, "data.patch_size=[64, 16]"), "is larger than the dataset's grid"),
    Case("data-patch-too-small", "a training window smaller than 8 pixels",
         lambda i, f: train(i, f, "data.patch_size=4"),
         "patch_size must be an integer or [h, w] of at least 8"),
    Case("shards-bad-chunk", "a y/x chunk of zero rows",
         lambda i, f: preprocess(i, f, "shards.chunk_hw=[0, 8]"), "chunk_hw must be two positive integers"),
    Case("train-zero-batch", "a global batch of zero",
         lambda i, f: train(i, f, "train.global_batch=0"), "global_batch must be positive"),
    Case("shards-absurd-size", "an absurd shard size",
         lambda i, f: preprocess(i, f, "shards.shard_mb=1e30"), "shard_mb must be in (0, 65536]"),
    Case("slurm-zero-tasks", "zero tasks per node",
         lambda i, f: ["submit", "train", str(TRAIN_JOB), "--print-sbatch",
                       "--set", "slurm.tasks_per_node=0"],
         "tasks_per_node must be at least 1, got 0"),
    Case("slurm-newline-injection", "a newline in a SLURM field (a second `#SBATCH` line smuggled in)",
         lambda i, f: ["submit", "train", str(TRAIN_JOB), "--print-sbatch",
                       "--set", 'slurm.partition="gpu\\n#SBATCH --account=other"'],
         "partition must be one word of printable ASCII"),
    # -- preprocessing and datasets ------------------------------------------------------------------
    Case("preprocess-missing-root", "a recipe whose source folder does not exist",
         lambda i, f: preprocess(i, f, root=f / "nowhere"), "no files match"),
    Case("preprocess-out-is-file", "`preprocess --out` naming a file",
         lambda i, f: preprocess(i, f, out=write(f / "file", "mine\n")), "exists and is not a dataset"),
    Case("preprocess-domain-outside", "a domain outside the grid",
         lambda i, f: preprocess(i, f, "domain={y: [0, 999], x: [0, 20]}"), "domain"),
    Case("preprocess-context-without-day-0", "context days that leave out the date itself",
         lambda i, f: preprocess(i, f, "context={days: [-2, -1]}"), "context.days must list 0"),
    Case("preprocess-context-box-outside", "a context box beyond the ERA5 files",
         lambda i, f: preprocess(i, f, "context={days: [0], box: {lon: [-25, 35], lat: [40, 72]}}"),
         "reaches beyond the ERA5 inputs"),
    Case("train-context-not-in-dataset", "a job reading context its dataset does not hold",
         lambda i, f: train(i, f, "context.temporal=[-1]"), "the dataset holds none"),
    Case("check-not-a-dataset", "`check` on a folder that is not a dataset",
         lambda i, f: ["check", str(f)], "manifest.json"),
    Case("check-truncated-shard", "`check` on a dataset with a truncated shard",
         lambda i, f: ["check", str(truncated_copy(i.dataset, f))], "train-0-0.h5"),
    Case("check-manifest-version", "a manifest of another schema version",
         lambda i, f: ["check", str(edited_manifest(i.dataset, f, lambda m: m.update(schema_version=99)))],
         "schema"),
    Case("check-manifest-not-json", "a manifest that is not JSON",
         lambda i, f: ["check", str(broken_manifest(i.dataset, f))], "manifest.json"),
    Case("synth-over-user-files", "`synth` into a folder of user files",
         lambda i, f: ["synth", str(user_folder(f)), QUIET],
         "holds no synthetic world (world.json); not replacing it"),
    Case("synth-unknown-preset", "an unknown synthetic preset",
         lambda i, f: ["synth", str(f / "w"), "--preset", "huge", QUIET], "huge"),
    Case("synth-unknown-calendar", "CORDEX-like files in a calendar hpcdiff does not know",
         lambda i, f: ["synth", str(f / "w"), "--cordex", "julian", QUIET],
         "calendar 'julian' is not supported"),
    Case("preprocess-variable-nowhere", "a recipe variable that no ERA5 input holds",
         lambda i, f: preprocess(i, f, era5_variables("{name: d2m, units: K}")),
         "missing variable 'd2m' or '2d' (recipe's 'd2m') in all"),
    Case("preprocess-units-mismatch", "ERA5 units that measure something else than the recipe's",
         lambda i, f: preprocess(i, f, era5_variables(first="{name: t2m, units: m}")),
         "units 'K' cannot be converted to 'm'"),
    Case("preprocess-zip-without-netcdf", "a downloaded zip that holds no NetCDF",
         lambda i, f: preprocess(i, f, f"era5.files=[{zip_of_readme(f)}]"), "a zip archive without NetCDF"),
    # -- training ------------------------------------------------------------------------------------
    Case("train-missing-dataset", "training on a dataset that does not exist",
         lambda i, f: train(i, f, dataset=f / "nowhere"), "nowhere"),
    Case("train-truncated-shard", "training on a dataset with a truncated shard",
         lambda i, f: train(i, f, dataset=truncated_copy(i.dataset, f)), "train-0-0.h5"),
    Case("train-out-is-file", "`train --out` naming a file",
         lambda i, f: train(i, f, out=write(f / "file", "mine\n")), "exists and is not a folder"),
    Case("train-resume-not-checkpoint", "`--resume` naming a folder without a checkpoint",
         lambda i, f: [*train(i, f), "--resume", str(f)], "not a checkpoint (no state.pt)"),
    Case("train-resume-other-architecture", "resuming a checkpoint of another architecture",
         lambda i, f: train(i, f, "diffusion.prediction=eps", out=copy(i.run, f / "run")),
         "the checkpoint's run differs from the job's (prediction: 'v' vs 'eps')"),
    Case("train-resume-garbage-checkpoint", "`--resume` naming a checkpoint whose state.pt is garbage",
         lambda i, f: [*train(i, f), "--resume", str(garbage_run(f) / "checkpoints" / "step-00000001")],
         "not a loadable checkpoint file"),
    # -- sampling ------------------------------------------------------------------------------------
    Case("sample-garbage-checkpoint", "a checkpoint whose state.pt is garbage",
         lambda i, f: sample(i, f, run=garbage_run(f)), "not a loadable checkpoint file"),
    Case("sample-no-checkpoint", "sampling from a folder without checkpoints",
         lambda i, f: sample(i, f, run=f), "no complete checkpoint"),
    Case("sample-other-architecture", "a checkpoint whose weights are of another architecture",
         lambda i, f: sample(i, f, run=write_run(f / "run", i.dataset, ema_preset="small")),
         "EMA weights do not fit the run spec"),
    Case("sample-bad-date", "a date that is not a date",
         lambda i, f: sample(i, f, "dates.split=null", "dates.dates=[2001-13-45]"), "2001-13-45"),
    Case("sample-missing-date-file", "a date file that does not exist",
         lambda i, f: sample(i, f, "dates.split=null", f"dates.file={f / 'dates.txt'}"), "dates.txt"),
    Case("sample-date-not-in-dataset", "a date the dataset does not hold",
         lambda i, f: sample(i, f, "dates.split=null", "dates.dates=[1850-01-01]"), "1850-01-01"),
    Case("sample-other-plan", "another plan in an existing samples folder",
         lambda i, f: sample(i, f, "sample.members=3", out=copy(i.samples, f / "samples")), "plan"),
    Case("sample-other-grid", "conditions from a dataset of another grid",
         lambda i, f: sample(i, f, f"dataset={i.cropped}"), "cropped"),
    Case("sample-tile-overlap", "tiles that overlap by more than their size",
         lambda i, f: sample(i, f, "sample.tile=16", "sample.tile_overlap=16"),
         "sample.tile_overlap must be in [0, 15] for tiles of 16 x 16, got 16"),
    Case("sample-too-many-steps", "more sampler steps than the trained schedule",
         lambda i, f: sample(i, f, "sample.steps=5000"), "exceeds the trained schedule"),
    Case("sample-out-is-file", "`sample --out` naming a file",
         lambda i, f: sample(i, f, out=write(f / "file", "mine\n")), "cannot create output folder"),
    # -- merging -------------------------------------------------------------------------------------
    Case("merge-not-samples", "`merge` of a folder that is not a samples folder",
         lambda i, f: ["merge", str(f), QUIET], "not a sampling output (no plan.json)"),
    Case("merge-incomplete", "`merge` of a samples folder with a date missing",
         lambda i, f: ["merge", str(incomplete_copy(i.samples, f)), QUIET],
         "incomplete: 1 of 2 planned dates have no complete part"),
    Case("merge-foreign-part", "`merge` of a samples folder holding a part of another grid",
         lambda i, f: ["merge", str(foreign_part(i, f)), QUIET], "holds samples of shape [2, 3, 20, 20]"),
    Case("merge-out-is-folder", "`merge --out` naming a folder",
         lambda i, f: ["merge", str(i.samples), "--out", str(f), QUIET],
         "is a folder; give merge --out a file"),
    # -- encoding ------------------------------------------------------------------------------------
    Case("encode-diffusion-run", "`encode` with a diffusion run instead of an autoencoder run",
         lambda i, f: ["encode", str(i.run), "--dataset", str(i.dataset), "--out", str(f / "latent"), QUIET],
         "hpcdiff encode needs an autoencoder run"),
    # -- evaluation ----------------------------------------------------------------------------------
    Case("evaluate-missing-samples", "`evaluate` of a file that does not exist",
         lambda i, f: evaluate(f / "nope.nc", i.dataset, f / "report"), "nope.nc"),
    Case("evaluate-not-netcdf", "`evaluate` of a file that is not NetCDF",
         lambda i, f: evaluate(write(f / "s.nc", b"not netcdf"), i.dataset, f / "report"), "s.nc"),
    Case("evaluate-other-grid", "`evaluate` of samples on another grid than the dataset",
         lambda i, f: evaluate(i.cropped_nc, i.dataset, f / "report"), "grid"),
    Case("evaluate-out-is-file", "`evaluate --out` naming a file",
         lambda i, f: evaluate(i.samples_nc, i.dataset, write(f / "file", "mine\n")),
         "exists and is not an evaluation report"),
    Case("evaluate-unknown-option", "a misspelt evaluation option",
         lambda i, f: [*evaluate(i.samples_nc, i.dataset, f / "report"), "--set", "nope=1"],
         "unknown key 'nope'"),
    # -- submission ----------------------------------------------------------------------------------
    Case("submit-train-without-out", "`submit train` without `--out`",
         lambda i, f: ["submit", "train", str(TRAIN_JOB), "--executor", "debug"], "needs --out RUN"),
    Case("submit-sample-without-run", "`submit sample` without `--run`",
         lambda i, f: ["submit", "sample", str(SAMPLE_JOB), "--out", str(f / "s"), "--executor", "debug"],
         "needs --run RUN and --out SAMPLES"),
]


def foreign_part(inputs: Inputs, folder: Path) -> Path:
    """A copy of the samples whose first part was replaced by a part of the cropped grid's run."""
    out = copy(inputs.samples, folder / "samples")
    first = sorted((out / "parts").glob("*.h5"))[0]
    shutil.copy2(sorted((inputs.cropped_samples / "parts").glob("*.h5"))[0], first)
    return out


def garbage_run(folder: Path) -> Path:
    step = folder / "run" / "checkpoints" / "step-00000001"
    step.mkdir(parents=True)
    write(step / "state.pt", b"\x00garbage, not a checkpoint\n" * 8)
    checkpoint.write_checksums(step)  # intact checksums: the bytes themselves are what is refused
    return folder / "run"


# -- running and rendering -----------------------------------------------------------------------------


def run_argv(argv: list[str], folder: Path | None = None) -> Outcome:
    """``hpcdiff.cli.main(argv)`` with its output captured; a usage error's SystemExit is its status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str | None = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return Outcome(code=code, stdout=out.getvalue(), stderr=err.getvalue(), argv=argv,
                   folder=folder or Path())


def run_case(case: Case, inputs: Inputs, folder: Path) -> Outcome:
    folder.mkdir(parents=True)
    argv = case.args(inputs, folder)
    output = output_of(argv, folder)
    existed = output.exists()
    outcome = run_argv(argv, folder)
    return dataclasses.replace(outcome, created=not existed and output.exists())


def output_of(argv: Sequence[str], folder: Path) -> Path:
    """The path the command would have written: ``--out``'s value, else the case's folder."""
    return Path(argv[argv.index("--out") + 1]) if "--out" in argv else folder


def placeholders(inputs: Inputs, folder: Path) -> list[tuple[str, str]]:
    """Paths of this machine -> the names the documentation uses, longest first."""
    names = {folder: "TMP", inputs.dataset: "DATASET", inputs.cropped: "CROPPED", inputs.run: "RUN",
             inputs.samples: "SAMPLES", inputs.samples_nc: "SAMPLES.nc", inputs.cropped_nc: "CROPPED.nc",
             inputs.world: "WORLD", REPO: "."}
    pairs = [(str(path), name) for path, name in names.items()]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def anonymize(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    for path, name in pairs:
        text = text.replace(path, name)
    return text


def render(rows: Sequence[tuple[Case, str, str]]) -> str:
    """docs/reliability.md from ``(case, command, message)`` rows, paths already anonymized."""
    lines = [
        "# Reliability: what hpcdiff does with bad input",
        "",
        "Every command exits with status 1 and one line `hpcdiff: error: ...` that names the file or key and",
        "the reason, on every rank, with nothing half-written. Each row below is a case of",
        "`tests/reliability_cases.py`, run by `tests/test_reliability.py`; the messages are those of that",
        "run. Do not edit this file: regenerate it with",
        "",
        "    python tests/reliability_cases.py > docs/reliability.md",
        "",
        "Paths: `DATASET` is a preprocessed tiny synthetic world, `CROPPED` the same on a 20 x 20 grid,",
        "`RUN` a tiny-U-Net run, `SAMPLES` its ensemble (`SAMPLES.nc` merged), `TMP` the case's own folder.",
        "",
        "| what was tried | command | what happens |",
        "|---|---|---|",
    ]
    for case, command, message in rows:
        lines.append(f"| {_cell(case.tried)} | `{_cell(command)}` | `{_cell(message)}` |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def document_row(case: Case, outcome: Outcome, inputs: Inputs) -> tuple[Case, str, str]:
    pairs = placeholders(inputs, outcome.folder)
    command = anonymize(" ".join(["hpcdiff", *outcome.argv]), pairs).replace(f" {QUIET}", "")
    message = anonymize(outcome.stderr.strip(), pairs)
    return case, command, message


@contextlib.contextmanager
def shared_inputs(dataset: Path | None = None) -> Iterator[tuple[Inputs, Path]]:
    """Shared inputs in a temporary folder (and the tiny dataset, made there unless given)."""
    with tempfile.TemporaryDirectory(prefix="hpcdiff-reliability-") as tmp:
        base = Path(tmp)
        if dataset is None:
            _ok(["synth", str(base / "world"), "--preset", "tiny", QUIET])
            _ok(["preprocess", str(RECIPE), "--out", str(base / "ds"), "--set", f"root={base / 'world'}",
                 QUIET])
            dataset = base / "ds"
        yield build_inputs(base / "shared", dataset), base / "cases"


def main_render() -> int:
    with shared_inputs() as (inputs, cases):
        rows = [document_row(case, run_case(case, inputs, cases / case.id), inputs) for case in CASES]
    sys.stdout.write(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main_render())
