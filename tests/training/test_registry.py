"""The registries: every hand-kept list is derived from the specs, and an unknown kind is an error, never another
kind's behaviour."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_config
from training.config import CheckpointConfig, ConfigError, ModelConfig, OptimConfig, TaskConfig, TrainConfig, validate
from training.rules import CHECKS
from training.ensemble import shape_key
from training.memory import activations_per_example, estimate, n_params
from training.registry import (STEP_FIELDS, ensemble_key, model_names, model_spec, task_names, task_shape,
                               task_spec, transform_specs)
from training.specs import TaskShape

# OptimConfig fields that may differ between the members of one ensemble (each member's own hyperparameters)
PER_MEMBER_OPTIM = {"lr", "wd", "beta1", "beta2", "momentum", "warmup_steps", "wd_after_memorisation",
                    "lr_after_memorisation"}


# --- an unknown kind is an error --------------------------------------------------------------------------------

def test_unknown_task_is_an_error_not_another_tasks_shape():
    with pytest.raises(ConfigError, match="unknown task 'parity2'"):
        task_shape(TaskConfig(task="parity2"))
    with pytest.raises(ConfigError, match="unknown task"):
        task_spec("teacher_student")


def test_unknown_model_is_an_error_not_the_mlp_formula():
    shape = TaskShape("add", 49, 20, 3, 8, 7)
    for formula in (n_params, activations_per_example):
        with pytest.raises(ConfigError, match="unknown model 'rnn' \\(choose from transformer, mlp, lstm\\)"):
            formula(ModelConfig(model="rnn"), shape)
    with pytest.raises(ConfigError, match="--model must be transformer, mlp or lstm, got 'rnn'"):
        validate(tiny_config(model="rnn"))


def test_every_builtin_kind_answers_for_itself():
    """Each model's formula is its own (the lstm's is not the MLP's), each task's shape is its own."""
    cfg = tiny_config()
    shape = task_shape(cfg.task)
    counts = {name: n_params(cfg.model.__class__(**{**cfg.model.__dict__, "model": name}), shape)
              for name in model_names()}
    assert len(set(counts.values())) == len(counts)
    assert {task_spec(name).name for name in task_names()} == set(task_names())


def test_an_unknown_task_is_refused_by_the_memory_estimate_too():
    cfg = tiny_config()
    with pytest.raises(ConfigError, match="unknown task"):
        estimate(cfg, TaskShape("nonesuch", 49, 20, 3, 8, 7))


# --- specs describe themselves consistently ---------------------------------------------------------------------

def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def test_task_specs_name_real_fields_and_every_task_field_is_read():
    read = set()
    for name in task_names():
        spec = task_spec(name)
        assert set(spec.shape_fields) <= set(spec.fields) <= _names(TaskConfig), name
        read |= set(spec.fields)
    assert _names(TaskConfig) - read == {"task"}


def test_model_specs_name_real_fields_and_every_model_field_is_read():
    read = set()
    for name in model_names():
        spec = model_spec(name)
        assert set(spec.shape_fields) <= set(spec.fields) <= _names(ModelConfig), name
        read |= set(spec.fields)
    assert _names(ModelConfig) - read == {"model"}


def test_every_optim_field_is_classified():
    """A new OptimConfig field must say whether it changes the step's code (STEP_FIELDS), belongs to a transform,
    or is a per-member hyperparameter: otherwise ensembles could not know whether members may differ in it."""
    transform_fields = {f for s in transform_specs() for f in s.fields}
    assert set(STEP_FIELDS) | transform_fields | PER_MEMBER_OPTIM == _names(OptimConfig)
    assert not set(STEP_FIELDS) & transform_fields


def test_every_numeric_field_has_exactly_one_rule():
    sections = (TaskConfig, ModelConfig, OptimConfig, TrainConfig, CheckpointConfig)
    numeric = {f.name for cls in sections for f in fields(cls) if type(f.default) in (int, float)}
    assert numeric - set(CHECKS) == set()
    assert set(CHECKS) <= {f.name for cls in sections for f in fields(cls)}


def test_transforms_act_in_their_declared_order():
    orders = [s.order for s in transform_specs()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert [s.name for s in transform_specs()] == ["weight_noise", "grokfast", "perp_grad", "decay_to_init", "norm"]


# --- the ensemble key comes from the specs ------------------------------------------------------------------------

def _other(value):
    return not value if isinstance(value, bool) else value + 1 if isinstance(value, (int, float)) else value + "x"


@pytest.mark.parametrize("task", ["add", "kadd", "group_mul", "parity", "teacher", "mnist", "digit_add",
                                  "repeat_subseq", "max_element"])
def test_a_shape_field_splits_ensembles_and_other_task_fields_do_not(task):
    base = tiny_config(task=task)
    spec = task_spec(task)
    for name in spec.fields:
        changed = base.replace(**{name: _other(getattr(base.task, name))})
        same = ensemble_key(changed) == ensemble_key(base)
        assert same == (name not in spec.shape_fields), (task, name)


def test_fields_a_task_does_not_read_do_not_split_it():
    """Must hold: k does not shape "add"; must not hold: k shapes "kadd"."""
    assert shape_key(tiny_config(task="add", k=2)) == shape_key(tiny_config(task="add", k=5))
    assert shape_key(tiny_config(task="kadd", k=2)) != shape_key(tiny_config(task="kadd", k=3))
    assert shape_key(tiny_config(task="x+y")) == shape_key(tiny_config(task="add"))  # an alias is the same task


def test_model_shape_fields_split_and_a_model_without_batched_forward_trains_alone():
    base = tiny_config()
    for name in model_spec("transformer").shape_fields:
        assert shape_key(base.replace(**{name: _other(getattr(base.model, name))})) != shape_key(base), name
    assert shape_key(base.replace(dropout=0.3, init_scale=2.0)) == shape_key(base)
    mlp = tiny_config(model="mlp")
    assert shape_key(mlp.replace(n_heads=7)) == shape_key(mlp)  # the MLP has no heads
    lstm = tiny_config(model="lstm")
    assert shape_key(lstm)[0] == "alone" and shape_key(lstm) != shape_key(lstm.replace(seed=1))


def test_step_fields_and_transform_shapes_split():
    base = tiny_config()
    for name, value in (("optimizer", "sgd"), ("batch_size", 8), ("float64_loss", False), ("loss", "stablemax"),
                        ("device", "cuda"), ("grokfast", "ema")):
        assert shape_key(base.replace(**{name: value})) != shape_key(base), name
    ma = base.replace(grokfast="ma")
    assert shape_key(ma.replace(grokfast_window=7)) != shape_key(ma)
    assert shape_key(base.replace(grokfast_window=7)) == shape_key(base)  # no MA filter: the window shapes nothing


# --- the specs need no torch, and the modules import without cycles ---------------------------------------------

def test_every_config_error_answers_before_torch_loads():
    code = ("import sys\nfrom training.config import validate\nfrom tests.conftest import tiny_config\n"
            "from training.registry import task_names, model_names, transform_specs\n"
            "task_names(); model_names(); transform_specs()\n"
            "for bad in (dict(task='nonesuch'), dict(model='rnn'), dict(task='div', p=12)):\n"
            "    try:\n        validate(tiny_config(**bad))\n    except Exception as e:\n        print(type(e).__name__)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["ConfigError"] * 3 + ["False"], out.stderr


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules imported at the top level, modules imported inside functions) of one file, project modules only."""
    top, inner = set(), set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            names = [n for n in names if n and n.split(".")[0] in ("training", "interp", "analyses")]
            (top if node.col_offset == 0 else inner).update(names)
    return top, inner


def _module_graph(package: str) -> dict[str, set[str]]:
    graph = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        top, inner = _imports(path)
        graph[name] = top | inner
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "training"
    pkg.mkdir()
    (pkg / "a.py").write_text("from training.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from training.a import g\n")
    graph = {f"training.{p.stem}": set().union(*_imports(p)) for p in pkg.glob("*.py")}
    assert find_cycles(graph) == [["training.a", "training.b", "training.a"]]


# Cycles that exist today, each to be removed (and then struck from here: the test fails while one is listed but
# gone). None.
KNOWN_CYCLES: set[frozenset[str]] = set()


@pytest.mark.parametrize("package", ["training", "interp", "analyses"])
def test_no_import_cycles(package):
    """Counting function-level imports too: a cycle broken by importing inside a function is still a cycle."""
    graph = {}
    for name in ("training", "interp", "analyses"):
        graph.update(_module_graph(name))
    cycles = {frozenset(c) for c in find_cycles(graph) if c[0].startswith(package)}
    assert cycles - KNOWN_CYCLES == set()
    assert {c for c in KNOWN_CYCLES if next(iter(c)).startswith(package)} <= cycles


def test_each_transform_method_of_the_sweeps_switches_its_transform_on():
    from training.sweeps.spec import accel_methods

    methods = accel_methods(128)
    base = tiny_config()
    for spec in transform_specs():
        assert spec.methods, spec.name
        for label, over in spec.methods.items():
            assert methods[label] == over
            cfg = base.replace(**over)
            validate(cfg)
            assert spec.active(cfg.optim) and not spec.active(base.optim), label


def test_every_default_keeps_its_rule_and_the_rule_can_fail():
    from training.config import RunConfig

    flat = RunConfig().flat()
    for name, (holds, text) in CHECKS.items():
        assert holds(flat[name]), name
        assert text.startswith("must be"), name
    with pytest.raises(ConfigError, match=r"^--label-noise must be in \[0, 0.5\], got 0.7$"):
        validate(tiny_config(label_noise=0.7))
