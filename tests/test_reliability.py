"""Every bad input of tests/reliability_cases.py is one line ``hpcdiff: error: ...`` with exit status 1 and
nothing half-written; docs/reliability.md is the rendering of those rows."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from reliability_cases import (
    CASES,
    REPO,
    Case,
    Inputs,
    Outcome,
    build_inputs,
    document_row,
    output_of,
    render,
    run_case,
)

DOC = REPO / "docs" / "reliability.md"
REGENERATE = "python tests/reliability_cases.py > docs/reliability.md"


@pytest.fixture(scope="module")
def inputs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return build_inputs(tmp_path_factory.mktemp("reliability") / "shared", tiny_dataset)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    """Each case's outcome, run once: by its own test, or by the documentation test if run alone."""
    return {}


def run_once(case: Case, inputs: Inputs, outcomes: dict[str, Outcome], folder: Path) -> Outcome:
    if case.id not in outcomes:
        outcomes[case.id] = run_case(case, inputs, folder / case.id)
    return outcomes[case.id]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_error(case: Case, inputs: Inputs, outcomes: dict[str, Outcome],
                                     tmp_path: Path) -> None:
    outcome = run_once(case, inputs, outcomes, tmp_path)
    lines = outcome.stderr.splitlines()
    assert outcome.code == 1, f"exit status {outcome.code}; stderr:\n{outcome.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("hpcdiff: error: "), outcome.stderr[-3000:]
    assert case.fragment in lines[0]
    assert outcome.stdout == ""
    output = output_of(outcome.argv, outcome.folder)
    assert not outcome.created, f"{output} was created"
    for folder in {output.parent, outcome.folder}:
        assert sorted(p.name for p in folder.glob(".*.tmp")) == [], f"temporaries left in {folder}"


def test_cases_have_unique_ids_and_cover_the_commands() -> None:
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids) >= 30
    commands = {case.id.split("-")[0] for case in CASES}
    assert {"train", "sample", "merge", "evaluate", "check", "preprocess", "synth", "submit"} <= commands


def test_reliability_doc_is_current(inputs: Inputs, outcomes: dict[str, Outcome], tmp_path: Path) -> None:
    rows = [document_row(case, run_once(case, inputs, outcomes, tmp_path), inputs) for case in CASES]
    expected = render(rows)
    actual = DOC.read_text() if DOC.is_file() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                            "docs/reliability.md", "rendered", n=0))
        pytest.fail(f"docs/reliability.md is out of date; regenerate it with `{REGENERATE}`\n{diff[:4000]}",
                    pytrace=False)
