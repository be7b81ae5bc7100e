"""docs/extending.md's toy task, model and transform, each written from the page into a temporary module,
registered by importing it, and trained for a few steps."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, tiny_config
from training import specs
from training.config import ConfigError, validate
from training.constants import STATE_PATH
from training.ensemble import shape_key
from training.loop import train
from training.memory import n_params
from training.models.build import build_model
from training.registry import PLUGINS_ENV, load_plugins, task_shape
from training.runs.reader import Run
from training.tasks.build import build_task

DOC = ROOT / "docs" / "extending.md"


def modules_on_the_page() -> dict[str, str]:
    """{module name: source} of every ```python block whose first line is '# <name>.py'."""
    blocks = re.findall(r"```python\n# (\w+)\.py\n(.*?)```", DOC.read_text(), re.S)
    return {name: body for name, body in blocks}


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The page's modules written to tmp_path, importable; the registries restored afterwards."""
    for name, body in modules_on_the_page().items():
        (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = {t: dict(getattr(specs, t)) for t in ("TASKS", "ALIASES", "MODELS", "TRANSFORMS")}
    yield tmp_path
    for table, content in saved.items():
        getattr(specs, table).clear()
        getattr(specs, table).update(content)
    for name in modules_on_the_page():
        sys.modules.pop(name, None)


def test_the_page_holds_one_module_per_kind():
    assert set(modules_on_the_page()) == {"toy_task", "toy_model", "toy_transform", "toy_section"}


def test_a_toy_task_registers_and_trains(plugins, tmp_path):
    cfg = tiny_config(task="toy_max", p=7, frac=0.5, steps=6, eval_every=3)
    with pytest.raises(ConfigError, match="unknown task 'toy_max'"):
        validate(cfg)
    importlib.import_module("toy_task")
    validate(cfg)
    s, data = task_shape(cfg.task), build_task(cfg.task)
    assert (s.n, s.n_train) == (len(data.inputs), len(data.train_idx))
    assert data.labels.tolist() == [max(x, y) for x, y, _ in data.inputs.tolist()]
    assert shape_key(cfg) != shape_key(cfg.replace(p=11)) and shape_key(cfg) == shape_key(cfg.replace(split_seed=1))
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 6 and [r["step"] for r in Run(tmp_path / "run").metrics] == [0, 3, 6]
    with pytest.raises(ConfigError, match="empty train or test set"):
        validate(cfg.replace(frac=0.01))


def test_a_toy_model_registers_is_sized_by_its_spec_and_trains_alone(plugins, tmp_path):
    cfg = tiny_config(model="bag", d_model=8, steps=6, eval_every=3)
    with pytest.raises(ConfigError, match="--model must be transformer, mlp or lstm, got 'bag'"):
        validate(cfg)
    importlib.import_module("toy_model")
    validate(cfg)
    model = build_model(cfg.model, build_task(cfg.task))
    assert n_params(cfg.model, task_shape(cfg.task)) == sum(p.numel() for p in model.parameters())
    assert shape_key(cfg)[0] == "alone"  # no batched forward: each run trains alone
    summary = train(cfg, tmp_path / "run", progress=False)
    first, last = Run(tmp_path / "run").metrics[0], Run(tmp_path / "run").metrics[-1]
    assert summary["steps"] == 6 and last["train_loss"] < first["train_loss"]


def test_a_toy_transform_acts_keeps_its_state_and_changes_nothing_else(plugins, tmp_path):
    cfg = tiny_config(steps=6, eval_every=3)
    train(cfg, tmp_path / "plain", progress=False)
    importlib.import_module("toy_transform")
    train(cfg, tmp_path / "counted", progress=False)
    state = load_file(tmp_path / "counted" / STATE_PATH)
    assert int(state["transform.count_updates.count"]) == 6
    assert "transform.count_updates.count" not in load_file(tmp_path / "plain" / STATE_PATH)
    plain, counted = Run(tmp_path / "plain").metrics, Run(tmp_path / "counted").metrics
    strip = [{k: v for k, v in r.items() if "time" not in k and "wall" not in k} for r in plain]
    assert strip == [{k: v for k, v in r.items() if "time" not in k and "wall" not in k} for r in counted]


def test_the_commands_import_the_modules_named_in_the_environment(plugins, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugins)]), PLUGINS_ENV: "toy_task",
           "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "training.run", "--no-progress", "--task", "toy_max", "--p", "7", "--frac", "0.5",
            "--steps", "4", "--eval-every", "2", "--d-model", "16", "--d-mlp", "32", "--out", str(tmp_path / "r")]
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    bad = subprocess.run(args, cwd=ROOT, env={**env, PLUGINS_ENV: "no_such_module"}, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "GROKSCOPE_PLUGINS" in bad.stderr


def test_a_broken_plugin_is_one_config_error(monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, "no_such_module_either")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_either'"):
        load_plugins()


def test_registering_a_second_kind_under_a_taken_name_is_refused():
    spec = specs.TASKS["add"]
    with pytest.raises(ValueError, match="registered twice"):
        specs.register_task(specs.TaskSpec("add", "other", spec.fields, spec.shape, "training.tasks.tables:kadd"))
    assert specs.TASKS["add"] is spec
