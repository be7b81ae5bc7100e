"""Looking up tasks, models and transforms by name, and what the rest of the code derives from their specs.

The built-in specs register when this module loads (training.tasks.specs, training.models.specs,
training.optim.transforms.specs); a plug-in module registers more when it is imported, and the commands import every
module named in GROKSCOPE_PLUGINS (comma-separated) before the first lookup. An unknown name is a ConfigError
naming the known ones: no kind falls through to another kind's shape, memory formula or forward.
"""

from __future__ import annotations

import os
from importlib import import_module

import training.models.specs  # noqa: F401  (registers the built-in models)
import training.tasks.specs  # noqa: F401  (registers the built-in tasks)
import training.optim.transforms.specs  # noqa: F401  (registers the built-in transforms)
from training.errors import ConfigError
from training.specs import ALIASES, MODELS, TASKS, TRANSFORMS, ModelSpec, TaskShape, TaskSpec, TransformSpec, unknown

PLUGINS_ENV = "GROKSCOPE_PLUGINS"
# OptimConfig fields that choose the training step's code (an ensemble's members agree on them, and on the device)
STEP_FIELDS = ("optimizer", "batch_size", "float64_loss", "loss")
_loaded: set[str] = set()


def load_plugins() -> None:
    """Import the modules named in GROKSCOPE_PLUGINS (once each); ConfigError naming one that fails."""
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        if name not in _loaded:
            try:
                import_module(name)
            except Exception as e:  # noqa: BLE001  (any failure of a plug-in is the user's input, one line)
                raise ConfigError(f"{PLUGINS_ENV}: cannot import '{name}' ({type(e).__name__}: {e})") from None
            _loaded.add(name)


def task_names() -> tuple[str, ...]:
    load_plugins()
    return tuple(TASKS)


def task_spec(name: str) -> TaskSpec:
    """The spec of task `name` or of an expression naming one ("x/y"), else a ConfigError."""
    load_plugins()
    spec = TASKS.get(ALIASES.get(name, name))
    if spec is None:
        raise unknown("task", name, TASKS, "; or an expression such as 'x/y'")
    return spec


def task_shape(cfg) -> TaskShape:
    """The sizes `training.tasks.build.build_task(cfg)` will produce, or ConfigError for a config it would refuse.

    `cfg` is a `TaskConfig` whose values have passed `training.config.validate`'s field checks."""
    return task_spec(cfg.task).shape(cfg)


def model_names() -> tuple[str, ...]:
    load_plugins()
    return tuple(MODELS)


def model_spec(name: str) -> ModelSpec:
    load_plugins()
    spec = MODELS.get(name)
    if spec is None:
        raise unknown("model", name, MODELS)
    return spec


def transform_specs() -> list[TransformSpec]:
    """Every registered transform, in the order they act."""
    load_plugins()
    return sorted(TRANSFORMS.values(), key=lambda s: s.order)


def check_pairing(model: ModelSpec, task: str, vectors: bool, sequence: bool) -> None:
    """ConfigError when `model` cannot learn a task with these inputs and targets (one rule, used by
    training.config.validate before anything is built and by training.models.build.build_model)."""
    if vectors and "vectors" not in model.inputs:
        able = [m.name for m in MODELS.values() if "vectors" in m.inputs]
        raise ConfigError(f"task '{task}' has vector inputs; use --model {' or '.join(able)}")
    if not vectors and "tokens" not in model.inputs:
        able = [m.name for m in MODELS.values() if "tokens" in m.inputs]
        raise ConfigError(f"task '{task}' has token inputs; use --model {' or '.join(able)}")
    if sequence and not model.sequence:
        able = [m.name for m in MODELS.values() if m.sequence]
        raise ConfigError(f"task '{task}' predicts at several positions; use --model {' or '.join(able)}, "
                          f"not {model.name}")


def ensemble_key(cfg) -> tuple:
    """What configs must share to train as one ensemble: the task and its shape fields, the model and its
    shape fields, the step's code (STEP_FIELDS, the device) and each transform's shape values. Everything else
    (seeds, fractions, learning rates, ...) may differ per member."""
    t, m, o = cfg.task, cfg.model, cfg.optim
    task, model = task_spec(t.task), model_spec(m.model)
    return (("task", task.name, *((f, getattr(t, f)) for f in task.shape_fields)),
            ("model", model.name, *((f, getattr(m, f)) for f in model.shape_fields)),
            ("step", *((f, getattr(o, f)) for f in STEP_FIELDS), ("device", cfg.train.device)),
            *((s.name, *s.shape(o)) for s in transform_specs()))
