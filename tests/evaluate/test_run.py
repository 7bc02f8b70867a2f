"""``hpcdiff evaluate`` end to end on the tiny synthetic dataset: the report's shape, figures and pages,
the oracle against itself, a biased model, reruns, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import yaml
from samples_file import oracle_fields, write_samples

from hpcdiff.cli import main
from hpcdiff.data.manifest import write_manifest
from hpcdiff.evaluate.run import EvaluateOptions, common_support, load_inputs, score_variable
from hpcdiff.provenance import provenance

VARIABLES = {"t2m", "tp", "e"}
METHODS = {"model", "bilinear", "qm", "oracle"}
REQUIRED = {"crps", "bias", "rmse", "mae", "spread_skill", "psd_high_ratio", "crps_ratio_to_oracle",
            "truth_spatial_std"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def evaluate(samples, dataset, out, *extra):
    return main(["evaluate", str(samples), "--dataset", str(dataset), "--out", str(out), "--no-progress",
                 "--set", "map_dates=2", *map(str, extra)])


@pytest.fixture(scope="module")
def oracle_samples(tiny, test_dates, tmp_path_factory):
    """The oracle's own draws (seed 0, 4 members) written as SAMPLES.nc."""
    path = tmp_path_factory.mktemp("samples") / "samples.nc"
    return write_samples(path, oracle_fields(tiny[0], test_dates, members=4, seed=0), dates=test_dates,
                         dataset=tiny[1])


@pytest.fixture(scope="module")
def report(tiny, oracle_samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    assert evaluate(oracle_samples, tiny[1], out, "--oracle-seed", 1) == 0
    return out


def test_metrics_json_shape(report):
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == VARIABLES
    for variable, methods in metrics.items():
        assert set(methods) == METHODS, variable
        for method, scores in methods.items():
            assert set(scores) >= REQUIRED, (variable, method)
            assert all(isinstance(v, float) for v in scores.values()), (variable, method)
    assert {"wet_day_frequency", "q99", "q999"} <= set(metrics["tp"]["model"])


def test_two_draws_of_the_law_score_alike_and_beat_interpolation(report):
    """The samples are the oracle's seed-0 draws, the report's oracle its seed-1 draws: independent
    ensembles of the same law, so their CRPS agree to sampling noise, and both beat bilinear."""
    metrics = json.loads((report / "metrics.json").read_text())
    for variable in VARIABLES:
        model, oracle = metrics[variable]["model"], metrics[variable]["oracle"]
        assert model["crps_ratio_to_oracle"] == pytest.approx(1.0, abs=0.1), variable
        assert model["crps_ratio_to_oracle"] != 1.0  # really two different draws
        assert metrics[variable]["bilinear"]["crps"] > max(model["crps"], oracle["crps"])
        assert metrics[variable]["bilinear"]["psd_high_ratio"] < 0.5  # interpolation is too smooth
    assert abs(metrics["t2m"]["model"]["bias"]) < 0.1 * metrics["t2m"]["model"]["truth_spatial_std"]


def test_detail_config_and_figures(report):
    detail = json.loads((report / "metrics_detail.json").read_text())
    assert detail["meta"]["members"] == 4 and detail["meta"]["oracle_members"] == 4
    assert detail["meta"]["hpcdiff_run"] == "test-run"
    assert detail["meta"]["provenance"] == provenance()  # the software that scored it
    assert set(provenance()) == {"hpcdiff", "hpcdiff_commit", "torch", "deepspeed", "numpy", "xarray", "h5py"}
    tp = detail["tp"]
    assert set(tp["scores"]) == {"land", "all_pixels"} and "all" in tp["scores"]["all_pixels"]
    assert set(tp["rank_histogram"]["land"]) == {"model", "oracle"}
    assert set(tp["intervals"]["differences"]) == {"model-bilinear", "model-qm", "model-oracle"}
    assert set(tp["spatial"]["fss"]) == METHODS
    assert set(tp["spatial"]["categorical"]["model"]) == {"1", "10", "20"}
    assert "absent" in tp["indices"]["period"] and "cdd" not in tp["indices"]["indices"]  # scattered dates
    assert set(tp["spectrum"]["psd"]) == {"truth"} | METHODS
    assert yaml.safe_load((report / "evaluate.yaml").read_text())["map_dates"] == 2
    for variable in VARIABLES:
        for kind in ("maps", "spectrum", "rank", "fss", "intervals", "distribution"):
            assert (report / f"{kind}_{variable}.png").read_bytes()[:8] == PNG_MAGIC


def test_pages_reference_existing_images(report):
    page = (report / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) == 18 and all((report / name).is_file() for name in images)
    assert "crps_ratio_to_oracle" in page
    assert "Model minus baseline" in page and "common pixel support" in page
    markdown = (report / "report.md").read_text()
    assert sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)) == sorted(images)


def test_a_biased_model_scores_worse(tiny, test_dates, tmp_path):
    fields = oracle_fields(tiny[0], test_dates, members=4, seed=0, shift={"t2m": 1.5})
    path = write_samples(tmp_path / "biased.nc", fields, dates=test_dates, dataset=tiny[1])
    inputs = load_inputs(path, tiny[1], EvaluateOptions())
    land = score_variable(inputs, "t2m", EvaluateOptions())["scores"]["land"]["all"]
    assert land["model"]["bias"] - land["oracle"]["bias"] == pytest.approx(1.5, abs=1e-4)
    assert land["model"]["crps_ratio_to_oracle"] > 1.5


def test_values_outside_the_physical_bounds_are_reported(tiny, test_dates, tmp_path):
    """Samples from elsewhere may hold negative precipitation: evaluation counts it per variable."""
    fields = oracle_fields(tiny[0], test_dates, members=4, seed=0)
    fields["tp"][0, 0, :2, :3] = -0.25  # six negative amounts
    path = write_samples(tmp_path / "negative.nc", fields, dates=test_dates, dataset=tiny[1])
    inputs = load_inputs(path, tiny[1], EvaluateOptions())
    assert inputs.outside_bounds == {"t2m": 0, "tp": 6, "e": 0}


def test_rerun_replaces_the_report_and_survives_diverged_samples(tiny, test_dates, report, tmp_path, capsys):
    out = shutil.copytree(report, tmp_path / "report")  # an earlier run's report
    (out / "stale.txt").write_text("from an older run")
    fields = oracle_fields(tiny[0], test_dates, members=4, seed=0)
    fields["tp"][0, 1, 2, 3], fields["e"][3, 0, 0, 0] = np.inf, np.nan  # as hpcdiff merge keeps them
    diverged = write_samples(tmp_path / "diverged.nc", fields, dates=test_dates, dataset=tiny[1])
    assert evaluate(diverged, tiny[1], out, "--oracle-members", "2", "--oracle-seed", "3") == 0
    assert "non-finite values" in capsys.readouterr().err
    assert not (out / "stale.txt").exists()
    meta = json.loads((out / "metrics_detail.json").read_text())["meta"]
    assert (meta["oracle_members"], meta["oracle_seed"]) == (2, 3)
    assert meta["non_finite"] == {"t2m": 0, "tp": 1, "e": 1}
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(isinstance(v, float) for m in metrics.values() for s in m.values() for v in s.values())
    assert "WARNING non-finite" in (out / "report.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverged.nc", "report"]  # no temporaries left


def test_without_the_world_there_is_no_oracle(tiny, oracle_samples, tmp_path):
    dataset = shutil.copytree(tiny[1], tmp_path / "ds")
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["recipe"]["root"] = str(tmp_path / "moved-away")
    write_manifest(dataset, manifest)
    inputs = load_inputs(oracle_samples, dataset, EvaluateOptions())
    assert set(inputs.methods["tp"]) == {"model", "bilinear", "qm"} and inputs.oracle_members is None


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpcdiff: error: ") and "\n" not in err, err
    return err


def test_bad_input_is_a_one_line_error(tiny, test_dates, tmp_path, capsys):
    out = tmp_path / "report"
    assert evaluate(tmp_path / "absent.nc", tiny[1], out) == 1
    assert "absent.nc: no such file" in one_line_error(capsys)
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"\x00garbage" * 20)
    assert evaluate(junk, tiny[1], out) == 1
    assert "junk.nc: not a readable NetCDF file" in one_line_error(capsys)
    fields = oracle_fields(tiny[0], test_dates, members=2, seed=0)
    partial = write_samples(tmp_path / "partial.nc", {k: fields[k] for k in ("t2m", "e")}, dates=test_dates,
                            dataset=tiny[1])
    assert evaluate(partial, tiny[1], out) == 1
    assert "partial.nc: variable 'tp' is missing" in one_line_error(capsys)
    cropped = write_samples(tmp_path / "cropped.nc", {k: v[..., :16, :] for k, v in fields.items()},
                            dates=test_dates, dataset=tiny[1])
    assert evaluate(cropped, tiny[1], out) == 1
    assert "cropped.nc: grid is 16 x 32" in one_line_error(capsys)
    assert not out.exists()


def test_bad_dates_options_and_outputs(tiny, test_dates, tmp_path, capsys):
    fields = oracle_fields(tiny[0], test_dates[:2], members=2, seed=0)
    dates = np.array(["1980-01-01", str(test_dates[1])], "datetime64[D]")
    early = write_samples(tmp_path / "early.nc", fields, dates=dates, dataset=tiny[1])
    assert evaluate(early, tiny[1], tmp_path / "r") == 1
    assert "no truth for 1 sample date(s): 1980-01-01" in one_line_error(capsys)
    good = write_samples(tmp_path / "good.nc", fields, dates=test_dates[:2], dataset=tiny[1])
    assert evaluate(good, tiny[1], tmp_path / "r", "--set", "oracle_member=3") == 1
    assert "did you mean 'oracle_members'" in one_line_error(capsys)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert evaluate(good, tiny[1], precious) == 1
    assert "not an evaluation report" in one_line_error(capsys)
    assert (precious / "thesis.tex").is_file()


def test_a_full_disk_is_a_one_line_error_and_leaves_no_report(tiny, oracle_samples, small_disk, capsys):
    disk = small_disk(96)
    assert evaluate(oracle_samples, tiny[1], disk / "report") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"hpcdiff: error: {disk / 'report'}: cannot write (no space left on the device); "
                   "nothing was written")
    assert list(disk.iterdir()) == []


def test_contiguous_dates_give_spells_and_verdicts(tiny, tmp_path):
    """Six consecutive test days of the tiny world, the oracle's draws as the model: the spell indices
    are there, the truth mostly lies within the members' range, and the draws of the law beat both
    baselines beyond the interval (temperature)."""
    manifest = json.loads((tiny[1] / "manifest.json").read_text())
    dates = np.asarray(manifest["splits"]["test"]["dates"][:6], "datetime64[D]")
    assert np.all(np.diff(dates).astype(int) == 1)
    path = write_samples(tmp_path / "run.nc", oracle_fields(tiny[0], dates, members=4, seed=0), dates=dates,
                         dataset=tiny[1])
    options = EvaluateOptions(bootstrap_reps=200)
    inputs = load_inputs(path, tiny[1], options)
    tp = score_variable(inputs, "tp", options)
    assert tp["indices"]["contiguous"]
    assert {"cdd", "cwd", "rx1day", "r95ptot"} <= set(tp["indices"]["indices"])
    assert tp["indices"]["indices"]["rx1day"]["model"]["in_range"] > 0.5
    t2m = score_variable(inputs, "t2m", options)
    assert t2m["intervals"]["block_days"] == 2
    differences = t2m["intervals"]["differences"]
    assert differences["model-bilinear"]["verdict"] == "beats bilinear beyond the interval"
    assert differences["model-qm"]["verdict"] == "beats qm beyond the interval"


def test_the_common_support_drops_pixels_any_method_lacks():
    land = np.ones((2, 3), bool)
    land[0, 0] = False
    truth = {"t2m": np.ones((2, 2, 3))}
    truth["t2m"][1, 1, 1] = np.nan
    methods = {"t2m": {"model": np.ones((2, 4, 2, 3)), "qm": np.ones((2, 1, 2, 3))}}
    methods["t2m"]["qm"][0, 0, 1, 2] = np.inf
    assert common_support(land, truth, methods).tolist() == [[False, True, True], [True, False, False]]
