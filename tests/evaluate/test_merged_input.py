"""The evaluation reads what ``hpcdiff merge`` writes: a sampling run's part files (here: the oracle's
draws, normalized as the model would produce them) merged, then loaded for scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
from samples_file import oracle_fields

from hpcdiff.data.transforms import forward
from hpcdiff.evaluate.run import EvaluateOptions, load_inputs, score_variable
from hpcdiff.sample import parts
from hpcdiff.sample.merge import merge_samples
from hpcdiff.sample.plan import SamplePlan, write_plan


def test_merged_ensemble_is_read_and_scored(tiny, test_dates, tmp_path):
    world, dataset = tiny
    manifest = json.loads((dataset / "manifest.json").read_text())
    fields = oracle_fields(world, test_dates[:3], members=3, seed=0)
    targets = manifest["targets"]
    dates = [str(d) for d in test_dates[:3]]
    plan = SamplePlan(members=3, image_shape=tuple(manifest["grid"]["shape"]), dates=dates, targets=targets,
                      run="r", checkpoint="c", checkpoint_step=1, checkpoint_sha256="0" * 64, sampler="ddim",
                      steps=5, spacing="logsnr", eta=0.0, seed=0, precision="fp32", dataset=str(dataset))
    samples = tmp_path / "samples"
    write_plan(samples, plan)
    for i, date in enumerate(dates):
        normalized = np.stack([forward(fields[t["name"]][i], t["stats"]) for t in targets], axis=1)
        parts.write_part(samples, date, normalized.astype(np.float32), attrs={})
    merged = merge_samples(samples, tmp_path / "samples.nc")
    inputs = load_inputs(merged, dataset, EvaluateOptions())
    assert inputs.samples.attrs["hpcdiff_sampler"] == "ddim" and inputs.samples.members == 3
    for name in ("t2m", "tp", "e"):
        np.testing.assert_allclose(inputs.methods[name]["model"], fields[name], rtol=1e-5, atol=1e-5)
    land = score_variable(inputs, "t2m", EvaluateOptions())["scores"]["land"]["all"]
    assert land["model"]["crps_ratio_to_oracle"] == pytest.approx(1.0, abs=1e-4)
