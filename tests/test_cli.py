"""hpcdiff.cli: thin entry point; user errors are one line on stderr and exit status 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpcdiff.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert "hpcdiff" in capsys.readouterr().out


def test_bad_recipe_yaml_is_one_line_error(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("root: [unclosed\n")
    out = tmp_path / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpcdiff: error: ") and str(recipe) in err and "invalid YAML" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "hpcdiff.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for name in ("synth", "preprocess", "check"):
        assert name in proc.stdout


@pytest.mark.parametrize(("argv", "reason"), [
    (["train"], "the following arguments are required: job, --out (see 'hpcdiff train --help')"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND (see 'hpcdiff --help')"),
    (["synth", "out", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
])
def test_usage_errors_are_one_line_and_status_1(capsys, argv, reason):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"hpcdiff: error: {reason}")


def test_usage_error_of_the_console_script():
    proc = subprocess.run([sys.executable, "-m", "hpcdiff.cli", "submit", "nope", "job.yaml"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("hpcdiff: error: argument stage: invalid choice: 'nope'")
    assert len(proc.stderr.splitlines()) == 1
