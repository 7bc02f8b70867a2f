"""The ``hpcdiff`` command line: parse arguments, load the config, call the library. Nothing else.

Every user-facing failure is an :class:`~hpcdiff.errors.HpcdiffError`, printed as one line
``hpcdiff: error: ...`` with exit status 1; so are usage errors (argparse's own convention is status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from hpcdiff import __version__, allocator
from hpcdiff.errors import HpcdiffError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a sub-command handler under ``name``."""

    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn

    return register


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line and exit status 1, like every other error.
    Sub-command parsers are of this class too (``add_subparsers`` takes the parent's class)."""

    def error(self, message: str) -> NoReturn:
        reason = " ".join(message.split())
        self.exit(1, f"hpcdiff: error: {reason} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hpcdiff", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hpcdiff {__version__}")
    # The deepspeed launcher puts --local_rank before the sub-command; the rank comes from the
    # environment (LOCAL_RANK) through hpcdiff/dist.py, so the flag is accepted and ignored.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config value, e.g. --set split.val_years=[2000] (repeatable)")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")

    p = sub.add_parser("synth", parents=[quiet], help="write the synthetic ERA5-like + DANRA-like world")
    p.add_argument("out", type=Path,
                   help="output folder: new, empty, or an earlier synthetic world (which is replaced)")
    p.add_argument("--preset", default="tiny", help="tiny | demo | bench | danra | context (default: tiny)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--days-per-year", type=int, default=None, metavar="N",
                   help="days written per year instead of the preset's (danra: 2), e.g. for training tests")
    p.add_argument("--cordex", metavar="CALENDAR", default=None,
                   help="also write EURO-CORDEX-like daily files (OUT/cordex/: CMOR names, rotated pole, one "
                        "file per variable and period) in CALENDAR: 360_day, noleap or standard")

    p = sub.add_parser("preprocess", parents=[overrides, quiet],
                       help="NetCDF → packed HDF5 shards (also under mpiexec / srun)")
    p.add_argument("recipe", type=Path, help="preprocessing recipe (YAML), e.g. preprocess/synthetic.yaml")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")

    p = sub.add_parser("encode", parents=[quiet],
                       help="encode a dataset with an autoencoder run: a latent dataset (also under mpiexec)")
    p.add_argument("run", type=Path, help="autoencoder run folder (a job with model.kind: autoencoder)")
    p.add_argument("--dataset", type=Path, required=True, help="the pixel dataset to encode")
    p.add_argument("--out", type=Path, required=True, help="latent dataset folder to create")
    p.add_argument("--checkpoint", default="latest", help="latest (default) | a checkpoint name or folder")
    p.add_argument("--batch-size", type=int, default=16, help="samples per encoder call (default: 16)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="do not add the encoded ERA5 baseline of the targets to the conditions (then latent "
                        "runs cannot diffuse residuals)")

    p = sub.add_parser("check", help="verify a dataset's shards against its manifest")
    p.add_argument("dataset", type=Path)

    p = sub.add_parser("train", parents=[overrides, quiet],
                       help="train the diffusion model (also under torchrun / srun / deepspeed)")
    p.add_argument("job", type=Path, help="training job (YAML), e.g. jobs/demo_train.yaml")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs, config)")
    p.add_argument("--resume", default="auto",
                   help="auto (latest checkpoint in --out, if any) | never | a checkpoint folder")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)

    p = sub.add_parser("evaluate", parents=[overrides, quiet],
                       help="score a merged ensemble against the truth and baselines; write a report")
    p.add_argument("samples", type=Path, metavar="SAMPLES.nc",
                   help="merged ensemble (CF NetCDF from hpcdiff merge)")
    p.add_argument("--dataset", type=Path, required=True, help="the preprocessed dataset holding the truth")
    p.add_argument("--out", type=Path, required=True, metavar="REPORT",
                   help="report folder to create (replaced on rerun)")
    p.add_argument("--oracle-members", type=int, default=None, metavar="N",
                   help="oracle ensemble size on synthetic worlds (default: as many as the samples)")
    p.add_argument("--oracle-seed", type=int, default=None, metavar="S",
                   help="oracle ensemble seed (default: 0)")

    p = sub.add_parser("sample", parents=[overrides, quiet],
                       help="sample an ensemble: dates x members, resumable (part files per date)")
    p.add_argument("job", type=Path, help="sampling job (YAML), e.g. jobs/demo_sample.yaml")
    p.add_argument("--run", type=Path, required=True, help="training run folder (with checkpoints/)")
    p.add_argument("--out", type=Path, required=True, help="samples folder (plan.json, parts/)")

    p = sub.add_parser("merge", parents=[quiet], help="merge sampled part files into one CF NetCDF")
    p.add_argument("samples", type=Path, help="samples folder written by hpcdiff sample")
    p.add_argument("--out", type=Path, default=None, help="NetCDF file (default: SAMPLES.nc next to it)")

    p = sub.add_parser("demo", help="the whole chain on the embedded synthetic world (the README's demo)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic world (default: 0)")
    p.add_argument("--ranks", type=int, default=2, help="MPI and training ranks (default: 2)")
    p.add_argument("--quick", action="store_true",
                   help="a CI-sized run (tiny world, a few steps): proves the chain, not the skill")
    p.add_argument("--train-set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of jobs/demo_train.yaml (repeatable)")
    p.add_argument("--sample-set", dest="sample_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of jobs/demo_sample.yaml (repeatable)")

    p = sub.add_parser("submit", parents=[overrides, quiet], help="submit a job to SLURM (or run it locally)")
    p.add_argument("stage", choices=["preprocess", "train", "sample"])
    p.add_argument("job", type=Path, help="job config or preprocessing recipe (YAML) with a slurm: section")
    p.add_argument("--out", type=Path,
                   help="dataset folder (preprocess), run folder (train) or samples folder (sample)")
    p.add_argument("--run", type=Path, help="training run folder to sample from (sample)")
    p.add_argument("--executor", default="slurm", choices=["slurm", "local", "debug"],
                   help="slurm (default) | local: N processes on this machine | debug: in this process")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help="wait for the job (default: yes for local/debug, no for slurm)")
    p.add_argument("--deadline-min", type=float, default=None, help="give up waiting after this long")
    p.add_argument("--master-addr", default=None, help="rendezvous address (default: first node)")
    p.add_argument("--print-sbatch", action="store_true",
                   help="print the equivalent plain sbatch script and exit")
    _add_profile(sub, overrides, quiet)
    return parser


def _counts(text: str) -> tuple[int, ...]:
    """``1,2,4`` -> (1, 2, 4) for --ranks / --nodes / --tasks."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_profile(sub: argparse._SubParsersAction, overrides: argparse.ArgumentParser,
                 quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("profile", help="profile scaling: training across ranks and nodes, all-reduce, "
                                       "sampling arrays")
    psub = p.add_subparsers(dest="profile_command", required=True, metavar="WHAT")
    executor = argparse.ArgumentParser(add_help=False)
    executor.add_argument("--executor", default="slurm", choices=["slurm", "local"],
                          help="slurm (default) | local: the ranks as processes on this machine")
    executor.add_argument("--master-addr", default=None, help="rendezvous address (default: first node)")
    executor.add_argument("--deadline-min", type=float, default=None,
                          help="give up waiting for a job after this long")

    t = psub.add_parser("train", parents=[overrides, quiet, executor],
                        help="short training runs at several rank counts: step breakdown, weak and strong "
                             "scaling, projection to 1024 GPUs")
    t.add_argument("job", type=Path, help="training job (YAML) with a slurm: section")
    t.add_argument("--out", type=Path, required=True, metavar="PROFILE", help="profile folder")
    counts = t.add_mutually_exclusive_group(required=True)
    counts.add_argument("--ranks", type=_counts, help="rank counts, e.g. 1,2,4")
    counts.add_argument("--nodes", type=_counts, help="node counts, e.g. 1,2,4,8 (slurm.tasks_per_node each)")
    t.add_argument("--mode", default="both", choices=["weak", "strong", "both"],
                   help="weak: fixed micro-batch per rank; strong: fixed global batch (default: both)")
    t.add_argument("--steps", type=int, default=10, help="measured optimizer steps per point (default: 10)")
    t.add_argument("--warmup", type=int, default=3, help="steps run before measuring (default: 3)")
    t.add_argument("--data", default="synthetic", choices=["synthetic", "dataset"],
                   help="synthetic: random tensors of the dataset's shapes, no I/O (default) | dataset")
    t.add_argument("--micro-batch", type=int, default=None,
                   help="weak scaling's micro-batch per rank (default: train.micro_batch, else the global "
                        "batch over the most ranks)")
    t.add_argument("--trace-steps", type=int, default=0,
                   help="record this many steps per rank with torch.profiler into PROFILE/traces/")
    t.add_argument("--interconnect", action="append", default=None, metavar="NAME|FILE.yaml",
                   help="interconnect profiles to project onto (repeatable; default: the shipped ones)")

    c = psub.add_parser("comm", parents=[executor],
                        help="all-reduce time against message size: algbw, busbw, fitted alpha and beta")
    c.add_argument("--out", type=Path, required=True, metavar="PROFILE", help="profile folder")
    c.add_argument("--job", type=Path, default=None, help="take the slurm: section of this job (YAML)")
    c.add_argument("--nodes", type=int, default=None, help="nodes (default: the job's, else 1)")
    c.add_argument("--tasks-per-node", "--ranks", dest="tasks_per_node", type=int, default=None,
                   help="ranks per node (default: the job's, else 2)")
    c.add_argument("--gpus-per-node", type=int, default=None,
                   help="GPUs per node, one rank each (default: the job's, else 0: CPU ranks over gloo)")
    c.add_argument("--min-bytes", type=int, default=1 << 10, help="smallest message (default: 1 KiB)")
    c.add_argument("--max-bytes", type=int, default=1 << 28, help="largest message (default: 256 MiB)")

    s = psub.add_parser("sample", parents=[overrides, quiet, executor],
                        help="sampling throughput against the number of array tasks, start-up share")
    s.add_argument("job", type=Path, help="sampling job (YAML)")
    s.add_argument("--run", type=Path, required=True, help="training run folder (with checkpoints/)")
    s.add_argument("--tasks", type=_counts, required=True, help="array task counts, e.g. 1,2,4")
    s.add_argument("--out", type=Path, required=True, metavar="PROFILE", help="profile folder")


@command("synth")
def _synth(args: argparse.Namespace) -> int:
    from hpcdiff.data.synth import write_world

    out = write_world(args.out, preset=args.preset, seed=args.seed, progress=args.progress,
                      cordex=args.cordex, days_per_year=args.days_per_year)
    print(f"synthetic world ({args.preset}, seed {args.seed}) written to {out}")
    return 0


@command("preprocess")
def _preprocess(args: argparse.Namespace) -> int:
    from hpcdiff import dist
    from hpcdiff.config import load_config
    from hpcdiff.data.preprocess import run_preprocess
    from hpcdiff.data.recipe import PreprocessRecipe

    recipe = load_config(PreprocessRecipe, args.recipe, overrides=args.overrides)
    env = dist.detect()
    out = run_preprocess(recipe, args.out, env=env, recipe_path=args.recipe, progress=args.progress)
    if env.is_main:
        print(f"dataset written to {out}")
    return 0


@command("encode")
def _encode(args: argparse.Namespace) -> int:
    from hpcdiff import dist
    from hpcdiff.data.encode import run_encode

    env = dist.detect()
    out = run_encode(args.run, args.dataset, args.out, env=env, checkpoint=args.checkpoint,
                     batch_size=args.batch_size, baseline=args.baseline, progress=args.progress)
    if env.is_main:
        print(f"latent dataset written to {out}")
    return 0


@command("check")
def _check(args: argparse.Namespace) -> int:
    from hpcdiff.data.check import check_dataset

    report = check_dataset(args.dataset)
    print(report)
    return 0


@command("train")
def _train(args: argparse.Namespace) -> int:
    from hpcdiff import dist
    from hpcdiff.config import load_config
    from hpcdiff.launch.sbatch import REQUEUE_EXIT_CODE
    from hpcdiff.launch.signals import StopFlag
    from hpcdiff.train.job import TrainJob
    from hpcdiff.train.loop import train

    job = load_config(TrainJob, args.job, overrides=args.overrides)
    env = dist.detect()
    result = train(job, args.out, env=env, resume=args.resume, progress=args.progress, should_stop=StopFlag())
    if env.is_main:
        print(f"training {result.status} at step {result.step}; checkpoint {result.checkpoint}")
    return REQUEUE_EXIT_CODE if result.status == "stopped" else 0


@command("sample")
def _sample(args: argparse.Namespace) -> int:
    from hpcdiff.config import load_config
    from hpcdiff.sample.ensemble import sample_ensemble
    from hpcdiff.sample.job import SampleJob

    job = load_config(SampleJob, args.job, overrides=args.overrides)
    summary = sample_ensemble(job, args.run, args.out, progress=args.progress)
    print(f"hpcdiff sample: {summary.describe()}")
    return 0


@command("merge")
def _merge(args: argparse.Namespace) -> int:
    from hpcdiff.sample.merge import merge_samples

    out = merge_samples(args.samples, args.out, progress=args.progress)
    print(f"merged ensemble written to {out}")
    return 0


def _submit_sample(args: argparse.Namespace) -> int:
    from hpcdiff.config import load_config
    from hpcdiff.launch.array import deadline_for, submit_sample, wait_array
    from hpcdiff.sample.job import SampleJob

    if args.run is None or args.out is None:
        raise HpcdiffError("hpcdiff submit sample needs --run RUN and --out SAMPLES")
    if args.print_sbatch:
        raise HpcdiffError("--print-sbatch is available for hpcdiff submit train only")
    job = load_config(SampleJob, args.job, overrides=args.overrides)
    submitted = submit_sample(job, args.run, args.out, executor=args.executor)
    if submitted is None:
        print(f"{args.out}: every planned date is sampled already; nothing submitted")
    elif args.wait if args.wait is not None else args.executor != "slurm":
        deadline = args.deadline_min * 60 if args.deadline_min else deadline_for(job, len(submitted.chunks))
        wait_array(submitted, deadline_s=deadline)
        print(f"sampling finished: {len(submitted.planned)} dates in {args.out}")
    else:
        print(f"sampling array submitted ({len(submitted.chunks)} tasks); when it has finished: "
              f"hpcdiff merge {args.out} (rerun this command to resubmit dates that are missing)")
    return 0


def _submit_preprocess(args: argparse.Namespace) -> int:
    from hpcdiff.config import load_config
    from hpcdiff.data.recipe import PreprocessRecipe
    from hpcdiff.launch.preprocess import deadline_s, finished_line, submit_preprocess
    from hpcdiff.launch.submit import wait

    if args.out is None:
        raise HpcdiffError("hpcdiff submit preprocess needs --out DATASET")
    if args.print_sbatch:
        raise HpcdiffError("--print-sbatch is available for hpcdiff submit train only")
    recipe = load_config(PreprocessRecipe, args.job, overrides=args.overrides)
    submitted = submit_preprocess(recipe, args.out, executor=args.executor, recipe_path=args.job)
    if args.wait if args.wait is not None else args.executor != "slurm":
        deadline = args.deadline_min * 60 if args.deadline_min else deadline_s(recipe.slurm)
        print(finished_line(wait(submitted, deadline_s=deadline)))
    else:
        print(f"preprocessing job {submitted.job_id} submitted; when it has finished: "
              f"hpcdiff check {args.out}")
    return 0


@command("submit")
def _submit(args: argparse.Namespace) -> int:
    from hpcdiff.config import load_config
    from hpcdiff.launch.sbatch import render_train_sbatch
    from hpcdiff.launch.submit import TrainProgress, submit_train, wait
    from hpcdiff.train.job import TrainJob

    if args.stage == "sample":
        return _submit_sample(args)
    if args.stage == "preprocess":
        return _submit_preprocess(args)
    job = load_config(TrainJob, args.job, overrides=args.overrides)
    if args.print_sbatch:
        from hpcdiff.launch.preflight import preflight_train
        from hpcdiff.launch.submit import world_size_of

        preflight_train(job, world_size=world_size_of(job.slurm, "slurm"))
        print(render_train_sbatch(job.slurm), end="")
        return 0
    if args.out is None:
        raise HpcdiffError("hpcdiff submit train needs --out RUN")
    submitted = submit_train(job, args.out, executor=args.executor, master_addr=args.master_addr)
    if args.wait if args.wait is not None else args.executor != "slurm":
        deadline = args.deadline_min * 60 if args.deadline_min else job.slurm.time_limit_min * 60 * 1.5 + 600
        progress = TrainProgress(args.out, total=job.train.max_steps, enabled=args.progress)
        try:
            results = wait(submitted, deadline_s=deadline, on_poll=progress)
        finally:
            progress.close()
        print(f"job {submitted.job_id} finished: {results[0]}")
    else:
        print(f"job {submitted.job_id} submitted")
    return 0


@command("profile")
def _profile(args: argparse.Namespace) -> int:
    run = {"train": _profile_train, "comm": _profile_comm, "sample": _profile_sample}[args.profile_command]
    lines = run(args)
    print("\n".join(lines))
    return 0


def _profile_train(args: argparse.Namespace) -> list[str]:
    from hpcdiff.config import load_config
    from hpcdiff.profile.runner import TrainProfileOptions
    from hpcdiff.profile.scaling import DEFAULT_INTERCONNECTS, profile_train
    from hpcdiff.train.job import TrainJob

    job = load_config(TrainJob, args.job, overrides=args.overrides)
    opts = TrainProfileOptions(mode=args.mode, ranks=args.ranks, nodes=args.nodes, steps=args.steps,
                               warmup=args.warmup, data=args.data, executor=args.executor,
                               micro_batch=args.micro_batch, trace_steps=args.trace_steps,
                               master_addr=args.master_addr,
                               deadline_s=args.deadline_min * 60 if args.deadline_min else None)
    return profile_train(job, args.out, opts, interconnects=args.interconnect or DEFAULT_INTERCONNECTS)


def _profile_comm(args: argparse.Namespace) -> list[str]:
    from hpcdiff.launch.slurm import SlurmSection
    from hpcdiff.profile.commbench import profile_comm

    if args.job is not None:
        from hpcdiff.config import load_config
        from hpcdiff.train.job import TrainJob

        slurm = load_config(TrainJob, args.job).slurm
    else:
        slurm = SlurmSection(gpus_per_node=0, tasks_per_node=2, cpus_per_task=1, time_limit_min=30)
    given = (("nodes", args.nodes), ("tasks_per_node", args.tasks_per_node),
             ("gpus_per_node", args.gpus_per_node))
    changes = {k: v for k, v in given if v is not None}
    try:
        slurm = dataclasses.replace(slurm, **changes)
    except ValueError as err:
        raise HpcdiffError(f"hpcdiff profile comm: {err}") from None
    return profile_comm(args.out, slurm, executor=args.executor, min_bytes=args.min_bytes,
                        max_bytes=args.max_bytes, master_addr=args.master_addr,
                        deadline_s=args.deadline_min * 60 if args.deadline_min else None)


def _profile_sample(args: argparse.Namespace) -> list[str]:
    from hpcdiff.config import load_config
    from hpcdiff.profile.sampling import profile_sample
    from hpcdiff.sample.job import SampleJob

    job = load_config(SampleJob, args.job, overrides=args.overrides)
    return profile_sample(job, args.run, args.out, list(args.tasks), executor=args.executor)


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from hpcdiff.evaluate.run import evaluate_options, run_evaluate

    options = evaluate_options(args.overrides, oracle_members=args.oracle_members,
                               oracle_seed=args.oracle_seed)
    out = run_evaluate(args.samples, args.dataset, args.out, options=options, progress=args.progress)
    print(f"report written to {out} (metrics.json, report.html)")
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from hpcdiff.demo import DemoPlan, quick_plan, run_demo

    kwargs = {"seed": args.seed, "ranks": args.ranks}
    plan = quick_plan(args.out, **kwargs) if args.quick else DemoPlan(out=args.out, **kwargs)
    plan = dataclasses.replace(plan, train_overrides=(*plan.train_overrides, *args.train_overrides),
                               sample_overrides=(*plan.sample_overrides, *args.sample_overrides))
    _, checks = run_demo(plan)
    missed = [text for text, ok, required in checks if required and not ok]
    if not plan.quick and missed:
        raise HpcdiffError(f"the demo's model misses {len(missed)} required skill check(s): {missed[0]}; "
                           f"see {plan.report / 'skill.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        allocator.tune_malloc()  # before the command allocates anything large
        return COMMANDS[args.command](args)
    except HpcdiffError as err:
        # one write per line: ranks sharing a terminal or an mpiexec stream must not interleave
        sys.stderr.write(f"hpcdiff: error: {err}\n")
        sys.stderr.flush()
        return 1
    except KeyboardInterrupt:
        print("hpcdiff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
