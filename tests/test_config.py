"""hpcdiff.config: typed YAML configs, overrides, errors that name the key and the closest valid one."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

import pytest
import yaml

from hpcdiff.config import apply_overrides, dump_config, from_dict, load_config, to_dict
from hpcdiff.data.recipe import PreprocessRecipe
from hpcdiff.errors import HpcdiffError
from hpcdiff.train.job import TrainJob

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.9, 0.999)


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    steps: int = 10
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    years: list[int] = dataclasses.field(default_factory=lambda: [1991, 1992])
    optim: Optim = Optim()
    extra: dict[str, object] = dataclasses.field(default_factory=dict)
    out: Path | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError("steps must be positive")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_load_nested_with_defaults(tmp_path):
    cfg = load_config(Job, write(tmp_path, "name: a\noptim: {lr: 3e-4}\nyears: [2000]\n"))
    assert cfg == Job(name="a", optim=Optim(lr=3e-4), years=[2000])
    assert isinstance(cfg.optim.betas, tuple)


def test_int_accepted_for_float_but_not_bool_for_int(tmp_path):
    assert load_config(Job, write(tmp_path, "name: a\noptim: {lr: 1}\n")).optim.lr == 1.0
    with pytest.raises(HpcdiffError, match=r"steps must be an integer, got bool"):
        load_config(Job, write(tmp_path, "name: a\nsteps: true\n"))


def test_unknown_key_names_closest(tmp_path):
    path = write(tmp_path, "name: a\noptim: {lrr: 0.1}\n")
    with pytest.raises(HpcdiffError) as err:
        load_config(Job, path)
    assert str(path) in str(err.value)
    assert "unknown key 'optim.lrr'" in str(err.value)
    assert "did you mean 'optim.lr'" in str(err.value)


def test_unknown_key_without_close_match_lists_valid(tmp_path):
    with pytest.raises(HpcdiffError, match="valid keys: extra, name, optim"):
        load_config(Job, write(tmp_path, "name: a\nzzzzqqq: 1\n"))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("name: a\nsteps: ten\n", r"steps must be an integer, got str 'ten'"),
        ("name: a\nprecision: fp64\n", r"precision must be one of 'bf16', 'fp16', 'fp32'"),
        ("name: a\nyears: 1991,1992\n", r"years must be a list"),
        ("name: a\nyears: [1991, x]\n", r"years\[1\] must be an integer"),
        ("name: a\noptim: 3\n", r"optim must be a mapping"),
        ("steps: 3\n", r"missing required key 'name'"),
        ("name: a\nsteps: -1\n", r"steps must be positive"),
        ("- 1\n- 2\n", r"expected a mapping at the top level"),
        ("name: [unclosed\n", r"invalid YAML at line"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path, text, pattern):
    with pytest.raises(HpcdiffError, match=pattern) as err:
        load_config(Job, write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(HpcdiffError, match="no such file"):
        load_config(Job, tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values(tmp_path):
    path = write(tmp_path, "name: a\n")
    cfg = load_config(Job, path, overrides=["steps=5", "optim.lr=2e-3", "years=[2001, 2002]", "out=null",
                                            "extra.zero.stage=2"])
    assert (cfg.steps, cfg.optim.lr, cfg.years, cfg.out) == (5, 2e-3, [2001, 2002], None)
    assert cfg.extra == {"zero": {"stage": 2}}


def test_override_errors():
    with pytest.raises(HpcdiffError, match="expected key.sub=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(HpcdiffError, match="'name' is not a section"):
        apply_overrides({"name": "a"}, ["name.x=1"])
    with pytest.raises(HpcdiffError, match="unknown key 'optim.lrate'"):
        from_dict(Job, apply_overrides({"name": "a"}, ["optim.lrate=1"]), where="--set")


def test_overrides_do_not_mutate_input():
    data = {"optim": {"lr": 1.0}}
    apply_overrides(data, ["optim.lr=2"])
    assert data == {"optim": {"lr": 1.0}}


def test_dump_round_trips(tmp_path):
    cfg = Job(name="a", out=Path("/x/y"), optim=Optim(betas=(0.5, 0.6)))
    out = dump_config(cfg, tmp_path / "sub" / "resolved.yaml")
    assert yaml.safe_load(out.read_text()) == to_dict(cfg)
    assert load_config(Job, out) == cfg
    assert [p.name for p in out.parent.iterdir()] == ["resolved.yaml"]


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""
# The same with mappings, which apply_overrides would copy node by node: 10**8 of them.
NESTED_MAPPINGS = "a: &a {x: 1}\n" + "".join(
    f"{name}: &{name} {{{', '.join(f'k{i}: *{prev}' for i in range(10))}}}\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("text", "line"), [
    (BILLION_LAUGHS, 2),
    (NESTED_MAPPINGS, 2),
    ("name: a\noptim: &o {lr: 1}\nextra: {<<: *o}\n", 3),  # merge keys are aliases too
])
def test_aliases_are_refused_before_expansion(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(HpcdiffError) as err:
        load_config(Job, path)
    where = re.escape(f"{path}: invalid YAML at line {line}, column ")
    assert re.fullmatch(where + r"\d+: aliases \(\*[a-o]\) are not supported in hpcdiff configs; write the "
                        "values out", str(err.value))


def test_an_anchor_alone_is_harmless(tmp_path):
    assert load_config(Job, write(tmp_path, "name: &n a\n")).name == "a"


@pytest.mark.parametrize(("override", "message"), [
    ("diffusion.num_steps=1", "diffusion: num_steps must be at least 2, got 1"),
    ("diffusion.vlb_weight=-0.1", "diffusion: vlb_weight must be 0 or more, got -0.1"),
    ("diffusion.sdf_weights.floor=0", "diffusion.sdf_weights: need 0 < floor <= land_weight, got floor 0"),
    ("diffusion.sdf_weights.land_weight=0.05", "got floor 0.1, land_weight 0.05"),
    ("diffusion.sdf_weights.sea_scale_km=0", "diffusion.sdf_weights: sea_scale_km must be positive, got 0"),
    ("data.num_workers=-1", "data: num_workers must be 0 or more, got -1"),
    ("model.dropout=1", "model: dropout must be in [0, 1), got 1"),
    ("model.dropout=-0.5", "model: dropout must be in [0, 1), got -0.5"),
    ("optim.lr=0", "optim: lr must be positive, got 0"),
    ("optim.lr=.nan", "optim: lr must be positive, got nan"),
    ("optim.eps=0", "optim: eps must be positive, got 0"),
    ("optim.weight_decay=-1", "optim: weight_decay must be 0 or more, got -1"),
    ("optim.betas=[0.9, 1.0]", "optim: betas must be two numbers in [0, 1), got [0.9, 1.0]"),
    ("optim.betas=[0.9]", "optim: betas must be two numbers in [0, 1), got [0.9]"),
    ("optim.warmup_steps=-1", "optim: warmup_steps must be 0 or more, got -1"),
    ("optim.grad_clip=0", "optim: grad_clip must be positive, got 0"),
    ("optim.min_lr_ratio=1.5", "optim: min_lr_ratio must be in [0, 1], got 1.5"),
])
def test_train_job_values_are_one_line_errors(override, message):
    with pytest.raises(HpcdiffError) as err:
        load_config(TrainJob, REPO / "jobs" / "demo_train.yaml", overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_train_job_edges_are_accepted():
    sets = ["diffusion.num_steps=2", "diffusion.vlb_weight=0", "data.num_workers=0", "model.dropout=0",
            "optim.warmup_steps=0", "optim.min_lr_ratio=0", "optim.betas=[0, 0.5]"]
    job = load_config(TrainJob, REPO / "jobs" / "demo_train.yaml", overrides=sets)
    assert (job.diffusion.num_steps, job.optim.min_lr_ratio, job.optim.betas) == (2, 0.0, (0.0, 0.5))


@pytest.mark.parametrize(("overrides", "message"), [
    (["shards.shard_mb=0"], "shards: shard_mb must be in (0, 65536], got 0"),
    (["shards.shard_mb=1e9"], "shards: shard_mb must be in (0, 65536], got 1000000000.0"),
    (["shards.shard_mb=.nan"], "shards: shard_mb must be in (0, 65536], got nan"),
    (["shards.shard_mb=null", "shards.samples_per_shard=0"], "shards: samples_per_shard must be positive"),
])
def test_recipe_shard_size_is_checked(overrides, message):
    with pytest.raises(HpcdiffError) as err:
        load_config(PreprocessRecipe, REPO / "preprocess" / "synthetic.yaml", overrides=overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
