"""Checkpoint safety and integrity: every file is read with ``weights_only=True`` after its SHA-256 was
checked against ``checksums.json``, so a planted pickle never runs and a damaged, missing or extra file is
a one-line error naming it; resume from hpcdiff's own engine files repeats the uninterrupted history
(ZeRO-1 bf16 on 1 rank, ZeRO-2 on 2 ranks)."""

from __future__ import annotations

import builtins
import collections
import enum
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from trainrun import child_env, free_port, torchrun, train_cmd

from hpcdiff.errors import HpcdiffError
from hpcdiff.train import checkpoint
from hpcdiff.train.metrics_log import read_csv

pytestmark = pytest.mark.timeout(300)

# 4 steps, a checkpoint every 2; all kept, so a copy can be rewound to step 2 and resumed.
FOUR_STEPS = ("train.max_steps=4", "train.ckpt_every=2", "train.keep_last=5", "train.val_every=100")
ZERO1_BF16 = (*FOUR_STEPS, "train.zero_stage=1", "train.precision=bf16")
ZERO2_TWO_RANKS = (*FOUR_STEPS, "train.zero_stage=2", "train.micro_batch=2")


class Payload:
    """Pickles to a call of ``exec`` that writes ``marker``: what a full unpickler would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class EngineTouched(BaseException):
    """Not an Exception, so no ``except`` in the code under test can turn it into an HpcdiffError."""


class UntouchableEngine:
    """Stands in for the DeepSpeed engine where the load must fail before it touches the engine."""

    def __getattr__(self, name: str):
        raise EngineTouched(name)


class TinyEngine:
    """The part of a DeepSpeed engine that checkpoints use (ZeRO 0, fp32, one rank), around a real
    module, AdamW and LambdaLR: save and load without starting DeepSpeed."""

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.module = torch.nn.Linear(4, 3)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=1e-2)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1 / (step + 1))
        self.global_steps = self.global_samples = self.skipped_steps = 0
        self.dp_world_size = 1

    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.module(torch.randn(8, 4)).square().mean().backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.lr_scheduler.step()
            self.global_steps, self.global_samples = self.global_steps + 1, self.global_samples + 8

    def zero_optimization_stage(self) -> int:
        return 0

    def zero_optimization(self) -> bool:
        return False

    def bfloat16_enabled(self) -> bool:
        return False

    def fp16_enabled(self) -> bool:
        return False


def save_tiny(root: Path, engine: TinyEngine, *, step: int = 3) -> Path:
    state = {"step": step, "model_spec": {"preset": "t"}}
    return checkpoint.save(root, step=step, engine=engine, state=state, rank=0, keep_last=2,
                           barrier=lambda: None)


def train(dataset: Path, out: Path, *overrides: str,
          launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``hpcdiff train`` in a subprocess on a free rendezvous port (other test sessions may hold 29500)."""
    return subprocess.run(train_cmd(dataset, out, *overrides, launcher=launcher), capture_output=True,
                          text=True, env=child_env(MASTER_PORT=str(free_port())), timeout=240)


def trained(dataset: Path, out: Path, *overrides: str, launcher: tuple[str, ...] = ()) -> str:
    """Train to the end; returns stderr."""
    proc = train(dataset, out, *overrides, launcher=launcher)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def rewind(run: Path, dest: Path, *, step: int) -> Path:
    """A copy of ``run`` as a run killed right after checkpoint ``step`` would have left it."""
    shutil.copytree(run, dest)
    for later in checkpoint.list_checkpoints(dest / "checkpoints"):
        if int(later.name.split("-")[1]) > step:
            shutil.rmtree(later)
    (dest / "checkpoints" / "latest").write_text(f"step-{step:08d}\n")
    return dest


def history(run: Path) -> list[tuple[str, str, str, str]]:
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in read_csv(run / "train.csv")]


def final_files(run: Path, names: list[str]) -> dict[str, object]:
    last = checkpoint.latest(run / "checkpoints")
    assert last is not None and last.name == "step-00000004"
    return {name: torch.load(last / name, weights_only=True) for name in names}


def tensors_equal(a, b) -> bool:
    """Nested state dicts equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def load_error(path: Path, *, engine=None) -> str:
    with pytest.raises(HpcdiffError) as err:
        checkpoint.load(path, engine=engine or UntouchableEngine(), rank=0)
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def zero1_run(tiny_dataset, tmp_path_factory) -> Path:
    """1 rank, ZeRO-1, bf16, uninterrupted: checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("zero1") / "run"
    trained(tiny_dataset, run, *ZERO1_BF16)
    return run


@pytest.fixture
def ckpt(zero1_run, tmp_path) -> Path:
    """A private copy of the step-2 checkpoint of ``zero1_run``."""
    return Path(shutil.copytree(zero1_run / "checkpoints" / "step-00000002", tmp_path / "step-00000002"))


# --- without DeepSpeed -------------------------------------------------------------------------------


def test_save_records_every_file_and_load_restores_the_engine(tmp_path):
    saved = TinyEngine(seed=0)
    saved.train(3)
    path = save_tiny(tmp_path, saved)
    rng_at_save = torch.get_rng_state()
    assert sorted(p.name for p in path.iterdir()) == [
        "checksums.json", "engine.pt", "optimizer.pt", "rng-0.pt", "state.pt"]
    record = json.loads((path / "checksums.json").read_text())
    assert record["algorithm"] == "sha256" and sorted(record["files"]) == [
        "engine.pt", "optimizer.pt", "rng-0.pt", "state.pt"]
    assert checkpoint.verify(path) == record["files"]
    fresh = TinyEngine(seed=1)
    assert checkpoint.load(path, engine=fresh, rank=0)["step"] == 3
    assert tensors_equal(fresh.module.state_dict(), saved.module.state_dict())
    assert tensors_equal(fresh.optimizer.state_dict(), saved.optimizer.state_dict())
    assert fresh.lr_scheduler.state_dict() == saved.lr_scheduler.state_dict()
    assert (fresh.global_steps, fresh.global_samples, fresh.skipped_steps) == (3, 24, 0)
    assert torch.equal(torch.get_rng_state(), rng_at_save)
    fresh.train(1)
    torch.set_rng_state(rng_at_save)
    saved.train(1)
    assert tensors_equal(fresh.module.state_dict(), saved.module.state_dict())


class Stage(enum.IntEnum):
    GRADIENTS = 2


@pytest.mark.parametrize(("value", "kind"), [(object(), "object"), (Stage.GRADIENTS, "Stage"),
                                             (collections.defaultdict(int), "defaultdict")])
def test_state_that_weights_only_could_not_read_back_is_refused_at_save(tmp_path, value, kind):
    engine = TinyEngine(seed=0)
    engine.train(1)
    engine.optimizer.state_dict = lambda: {"state": {0: {"odd": value}}}
    with pytest.raises(HpcdiffError, match=rf"optimizer.pt\['state'\]\[0\]\['odd'\]: type {kind} is not"):
        save_tiny(tmp_path, engine)
    assert checkpoint.list_checkpoints(tmp_path) == []


def test_folders_without_checksums_are_not_checkpoints(tmp_path):
    sealed = save_tiny(tmp_path, TinyEngine(seed=0), step=1)
    unsealed = save_tiny(tmp_path, TinyEngine(seed=0), step=2)
    (unsealed / "checksums.json").unlink()
    assert checkpoint.list_checkpoints(tmp_path) == [sealed]
    assert checkpoint.latest(tmp_path) == sealed  # 'latest' names step 2, which is skipped
    assert checkpoint.resolve_resume("auto", tmp_path) == sealed
    with pytest.raises(HpcdiffError, match="step-00000002: checkpoint has no checksums.json .* start a new"):
        checkpoint.load_state(unsealed)


def test_a_run_with_only_checkpoints_older_than_checksums_is_refused_not_restarted(tmp_path):
    old = checkpoint.step_dir(tmp_path, 5)
    old.mkdir()
    torch.save({"step": 5}, old / "state.pt")
    for resume in ("auto", str(tmp_path)):
        with pytest.raises(HpcdiffError, match="step-00000005: checkpoint has no checksums.json"):
            checkpoint.resolve_resume(resume, tmp_path)
    assert checkpoint.latest(tmp_path) is None


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "x", "files": {}}',
                                     '{"format": "hpcdiff-checkpoint-checksums/1", "files": {"a": 1}}'])
def test_an_unreadable_checksums_file_is_a_one_line_error(tmp_path, content):
    path = save_tiny(tmp_path, TinyEngine(seed=0))
    (path / "checksums.json").write_text(content)
    with pytest.raises(HpcdiffError, match="checksums.json: ") as err:
        checkpoint.load_state(path)
    assert "\n" not in str(err.value)


# --- a real DeepSpeed checkpoint -----------------------------------------------------------------------


def test_the_payload_runs_under_a_full_unpickler(tmp_path):
    """The check below means something: the planted file does execute when unpickled unsafely."""
    marker = tmp_path / "ran"
    torch.save(Payload(marker), tmp_path / "payload.pt")
    torch.load(tmp_path / "payload.pt", weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.distributed
def test_a_planted_pickle_in_any_file_never_runs(ckpt, tmp_path):
    """Even with checksums.json rewritten to match (as whoever can plant a file could), every file is
    refused by the weights-only loader, before the engine is touched."""
    files = sorted(p.name for p in ckpt.iterdir() if p.name != "checksums.json")
    assert files == ["engine.pt", "optimizer-0.pt", "rng-0.pt", "state.pt"]
    original = {name: (ckpt / name).read_bytes() for name in files}
    marker = tmp_path / "ran"
    for name in files:
        torch.save({"module": Payload(marker)}, ckpt / name)
        checkpoint.write_checksums(ckpt)
        message = load_error(ckpt)
        assert f"{ckpt / name}: not a loadable checkpoint file (refused by the weights-only loader: " \
               "Unsupported global: GLOBAL exec was not an allowed global by default)" == message
        if name == "state.pt":
            with pytest.raises(HpcdiffError, match="state.pt: not a loadable checkpoint file"):
                checkpoint.load_state(ckpt)
        assert not marker.exists(), name
        (ckpt / name).write_bytes(original[name])
    checkpoint.write_checksums(ckpt)
    assert checkpoint.load_state(ckpt)["step"] == 2


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["state.pt", "optimizer-0.pt"])
def test_resume_from_a_planted_pickle_fails_in_one_line(tiny_dataset, zero1_run, tmp_path, name):
    """The real ``hpcdiff train --resume auto``: before DeepSpeed starts (state.pt) and after it."""
    run = rewind(zero1_run, tmp_path / "run", step=2)
    ckpt = run / "checkpoints" / "step-00000002"
    marker = tmp_path / "ran"
    torch.save(Payload(marker), ckpt / name)
    checkpoint.write_checksums(ckpt)
    proc = train(tiny_dataset, run, *ZERO1_BF16)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"hpcdiff: error: {ckpt / name}: not a loadable")
    assert not marker.exists()
    assert [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")] == ["step-00000002"]


def flip_bit(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


@pytest.mark.distributed
@pytest.mark.parametrize(("damage", "name", "message"), [
    (flip_bit, "state.pt", "state.pt: SHA-256 does not match checksums.json"),
    (flip_bit, "engine.pt", "engine.pt: SHA-256 does not match checksums.json"),
    (truncate, "rng-0.pt", "rng-0.pt: SHA-256 does not match checksums.json"),
    (truncate, "optimizer-0.pt", "optimizer-0.pt: SHA-256 does not match checksums.json"),
    (Path.unlink, "optimizer-0.pt", ": optimizer-0.pt missing (checksums.json lists it)"),
    (lambda f: f.write_text("notes"), "notes.txt", ": notes.txt not part of the checkpoint"),
    (lambda f: f.mkdir(), "ds", ": ds not part of the checkpoint"),
])
def test_a_damaged_checkpoint_is_refused_naming_the_file(ckpt, damage, name, message):
    damage(ckpt / name)
    assert message in load_error(ckpt)
    if name == "state.pt":
        with pytest.raises(HpcdiffError, match=message):
            checkpoint.load_state(ckpt)
    else:  # sampling reads and verifies state.pt alone
        assert checkpoint.load_state(ckpt)["step"] == 2


@pytest.mark.distributed
@pytest.mark.parametrize(("name", "content", "reason"), [
    ("state.pt", b"", "cannot load checkpoint file (EOFError)"),
    ("optimizer-0.pt", b"\x80\x02}q\x00", "cannot load checkpoint file (EOFError)"),
    ("engine.pt", b"PK\x03\x04 truncated zip", "(RuntimeError: PytorchStreamReader failed reading zip"),
    ("state.pt", b"\x80\x02K\x01.", "(RuntimeError: Invalid magic number; corrupt file?)"),
    ("rng-0.pt", b"definitely not a pickle", "(refused by the weights-only loader: Unsupported operand 100)"),
])
def test_unreadable_bytes_with_matching_checksums_are_one_line_errors(ckpt, name, content, reason):
    (ckpt / name).write_bytes(content)
    checkpoint.write_checksums(ckpt)
    message = load_error(ckpt)
    assert message.startswith(f"{ckpt / name}: ") and reason in message, message


@pytest.mark.distributed
@pytest.mark.parametrize(("name", "content", "message"), [
    ("state.pt", [1, 2], "state.pt: not a checkpoint state (a list)"),
    ("engine.pt", {"layout": "?"}, "cannot restore the training state (TypeError: "),
])
def test_well_formed_but_foreign_contents_are_one_line_errors(ckpt, name, content, message):
    torch.save(content, ckpt / name)
    checkpoint.write_checksums(ckpt)
    engine = TinyEngine(seed=0)  # the layout check reads the engine: no DeepSpeed needed to reach it
    assert message in load_error(ckpt, engine=engine)


@pytest.mark.distributed
def test_resume_from_hpcdiff_engine_files_repeats_the_history_zero1_bf16(tiny_dataset, zero1_run, tmp_path):
    run = rewind(zero1_run, tmp_path / "run", step=2)
    assert "resuming from" in trained(tiny_dataset, run, *ZERO1_BF16)
    assert history(run) == history(zero1_run)
    a, b = (final_files(r, ["engine.pt", "optimizer-0.pt", "state.pt"]) for r in (zero1_run, run))
    assert tensors_equal(a["engine.pt"], b["engine.pt"])
    assert tensors_equal(a["optimizer-0.pt"], b["optimizer-0.pt"])
    assert tensors_equal(a["state.pt"]["ema"], b["state.pt"]["ema"])
    assert {v.dtype for v in b["engine.pt"]["module"].values() if v.is_floating_point()} == {torch.bfloat16}


@pytest.mark.distributed
@pytest.mark.timeout(600)
def test_two_rank_zero2_resume_repeats_the_history_and_refuses_one_rank(tiny_dataset, tmp_path):
    reference = tmp_path / "reference"
    trained(tiny_dataset, reference, *ZERO2_TWO_RANKS, launcher=torchrun(2))
    step2 = reference / "checkpoints" / "step-00000002"
    assert sorted(checkpoint.read_checksums(step2)) == [
        "engine.pt", "optimizer-0.pt", "optimizer-1.pt", "rng-0.pt", "rng-1.pt", "state.pt"]
    resumed = rewind(reference, tmp_path / "resumed", step=2)
    trained(tiny_dataset, resumed, *ZERO2_TWO_RANKS, launcher=torchrun(2))
    assert history(resumed) == history(reference)
    assert tensors_equal(*(final_files(r, ["engine.pt", "optimizer-0.pt", "optimizer-1.pt"])
                           for r in (reference, resumed)))
    one_rank = rewind(reference, tmp_path / "one-rank", step=2)
    proc = train(tiny_dataset, one_rank, *ZERO2_TWO_RANKS)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"hpcdiff: error: {one_rank / 'checkpoints' / 'step-00000002'}: ZeRO-2 optimizer state is "
        "partitioned over 2 ranks; resume with 2 ranks, not 1")
