"""Named variants of a sweep (method label -> config overrides): they expand to the right configs, keep their
labels in the run names and the index, join a sweep already on disk, and bad ones are refused."""

import json

import pytest

from tests.training.test_sweep import TINY
from training.config import ConfigError
from training.sweeps.drive import sweep
from training.sweeps.index import merged, spec_dict
from training.sweeps.spec import SWEEPS, SweepSpec, plan

VARIANTS = {"plain": {}, "noisy": {"label_noise": 0.1, "lr": 0.05}, "big": {"d_mlp": 24}}


def test_each_variant_runs_at_every_grid_point_and_seed_with_its_overrides():
    spec = SweepSpec("parity-blog", {"wd": [0.01, 0.1]}, [0, 1], TINY, variants=VARIANTS)
    runs = plan(spec, ["seed", "batch_seed"])
    assert len(runs) == 3 * 2 * 2
    by_name = {r.name: r for r in runs}
    r = by_name["method=noisy_wd=0.1_seed=1"]
    assert r.params == {"method": "noisy", "wd": 0.1} and r.seed == 1
    c = r.config
    assert (c.task.label_noise, c.optim.lr, c.optim.wd, c.train.seed, c.train.steps) == (0.1, 0.05, 0.1, 1, 40)
    plain = by_name["method=plain_wd=0.01_seed=0"].config
    assert (plain.task.label_noise, plain.optim.lr, plain.model.d_mlp) == (0.0, 0.1, 16)  # the preset's lr, TINY's
    assert by_name["method=big_wd=0.01_seed=0"].config.model.d_mlp == 24
    assert [r.params["method"] for r in runs[::4]] == ["plain", "noisy", "big"]  # the spec's order


def test_a_variant_wins_over_the_sweeps_fixed_fields():
    spec = SweepSpec("parity-blog", {}, [0], {**TINY, "lr": 0.2}, variants={"a": {}, "b": {"lr": 0.01}})
    a, b = plan(spec, ["seed"])
    assert (a.config.optim.lr, b.config.optim.lr) == (0.2, 0.01)


def test_the_accel_sweeps_reach_the_config():
    runs = {r.name: r.config for r in plan(SWEEPS["accel"], ["seed", "batch_seed"])}
    o = runs["method=perp-adamw_seed=2"].optim
    assert o.perp_grad and o.wd == 0.0 and o.optimizer == "adamw" and o.lr == 5e-3
    assert runs["method=adamw_seed=0"].optim == runs["method=dropout_seed=0"].optim  # the preset's optimiser
    o = runs["method=grokfast-ma_seed=0"].optim
    assert (o.grokfast, o.grokfast_window, o.grokfast_lamb) == ("ma", 100, 5.0)
    assert runs["method=constrain-norm_seed=1"].optim.constrain_norm == 0.8
    assert runs["method=adamw-minibatch_seed=0"].optim.batch_size == 128
    o = runs["method=stablemax-wd_seed=0"].optim
    assert o.loss == "stablemax" and o.wd == 2.0
    budget = {r.name: r.config for r in plan(SWEEPS["accel-budget"], ["seed", "batch_seed"])}
    c = budget["method=dropout_frac=0.3_seed=0"]
    assert (c.task.p, c.task.frac, c.model.model, c.model.dropout, c.train.steps) == (97, 0.3, "mlp", 0.1, 1800)
    assert c.optim.batch_size == 512 and budget["method=adamw-full-batch_frac=0.7_seed=0"].optim.batch_size == 0
    nanda = {r.name: r.config for r in plan(SWEEPS["accel-nanda"], ["seed", "batch_seed"])}
    assert nanda["method=sgd-momentum_seed=2"].optim.optimizer == "sgd" and len(nanda) == 14 * 3
    # every method has the short budget; the reference runs until it generalises
    assert nanda["method=perp-adamw_seed=1"].train.steps == 1500 and nanda["method=adamw_seed=1"].train.steps == 15000


@pytest.mark.parametrize("variants, grid, words", [
    ({"Bad Label": {}}, {}, "method label"),
    ({"x/y": {}}, {}, "method label"),
    ({"a": {"nope": 1}}, {}, "unknown config field"),
    ({"a": {"wd": 0.0}}, {"wd": [0.1]}, "which the grid sweeps"),
])
def test_bad_variants_are_refused(variants, grid, words):
    with pytest.raises(ConfigError, match=words):
        plan(SweepSpec("parity-blog", grid, [0], TINY, variants=variants), ["seed"])


def test_a_sweep_with_methods_grows_by_methods_and_refuses_a_changed_one():
    old = json.loads(json.dumps(spec_dict(SweepSpec("parity-blog", {}, [0], TINY, variants=VARIANTS), ["seed"])))
    more = merged(SweepSpec("parity-blog", {}, [1], TINY, variants={"plain": {}, "new": {"wd": 0.5}}), old, ["seed"])
    assert list(more.variants) == ["plain", "noisy", "big", "new"] and more.seeds == [0, 1]
    assert merged(SweepSpec("parity-blog", {}, [0], TINY, variants={"noisy": {"lr": 0.5}}), old, ["seed"]) is None
    assert merged(SweepSpec("parity-blog", {"lr": [0.1]}, [0], TINY), old, ["seed"]) is None  # no methods at all
    plain = {k: v for k, v in old.items() if k != "variants"}
    assert "variants" not in json.loads(json.dumps(spec_dict(SweepSpec("parity-blog", {"lr": [0.1]}), ["seed"])))
    assert merged(SweepSpec("parity-blog", {}, [0], TINY, variants={"a": {}}), plain, ["seed"]) is None


def test_a_sweep_with_methods_stores_the_labels_and_continues(tmp_path):
    spec = SweepSpec("parity-blog", {}, [0], {**TINY, "steps": 20}, variants={"plain": {}, "noisy": {"lr": 0.05}})
    out = tmp_path / "sw"
    index = sweep(spec, out, workers=1, progress=False, log=lambda s: None)
    assert [(e["method"], e["params"], e["status"]) for e in index["runs"]] == \
        [("plain", {"method": "plain"}, "done"), ("noisy", {"method": "noisy"}, "done")]
    assert json.loads((out / "sweep.json").read_text())["spec"]["variants"] == spec.variants
    assert json.loads((out / "method=noisy_seed=0" / "config.json").read_text())["optim"]["lr"] == 0.05
    stamp = (out / "method=plain_seed=0" / "metrics.jsonl").stat().st_mtime_ns
    (out / "method=noisy_seed=0" / "summary.json").unlink()  # as a run killed before its end leaves it
    index = sweep(SweepSpec("parity-blog", {}, [0], {**TINY, "steps": 20}, variants={"plain": {}}), out,
                  workers=1, progress=False, log=lambda s: None)
    assert [e["status"] for e in index["runs"]] == ["done", "done"] and list(index["spec"]["variants"]) == \
        ["plain", "noisy"]
    assert (out / "method=plain_seed=0" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert (out / "method=noisy_seed=0" / "summary.json").exists()
