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
