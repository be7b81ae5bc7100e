"""What a task, a model and a transform are, told by themselves: the spec classes and the register functions.

A spec names the config fields its kind reads, checks its own constraints (a ConfigError, one line), says which of
its fields change a tensor's shape (the members of one ensemble agree on them), gives its memory formula, and points
lazily at the code that builds it ("module:attribute", imported on first use), so that every error answers before
torch loads. Nothing here imports torch or another module of the project but training.errors.

    register_task(TaskSpec("add", ...))        # in the module that defines the kind
    training.registry.task_spec("add")          # anywhere: the spec, or a ConfigError naming the known ones
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable

from training.errors import ConfigError


@dataclass(frozen=True)
class TaskShape:
    """Sizes of a task's table: n examples (n_train of them for training), n_ctx tokens (or d_in features)."""

    name: str
    n: int
    n_train: int
    n_ctx: int
    d_vocab: int
    d_vocab_out: int
    d_in: int = 0
    sequence: bool = False  # labels [n, n_ctx] with targets at several positions (logits at every position)


def load(ref: str) -> Any:
    """The object a lazy reference "package.module:name" names (the module is imported now)."""
    module, _, name = ref.partition(":")
    obj = import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def table_bytes(s: TaskShape) -> int:
    """A task table's bytes while it is built: tokens [n, n_ctx] and labels [n] as int64 through ~3 numpy/torch
    copies, or float32 inputs [n, d_in] (and a normalised copy) with labels or targets."""
    if s.d_vocab:
        return 3 * s.n * (s.n_ctx + 1) * 8
    return 2 * s.n * s.d_in * 4 + s.n * max(s.d_vocab_out, 1) * 8


@dataclass(frozen=True)
class TaskSpec:
    """A task: `shape(cfg)` checks the TaskConfig against the task's constraints and returns its sizes;
    `builder` names a function cfg -> TaskData (or, with `builder_args`, a factory called with them first).

    shape_fields: the TaskConfig fields whose values change a tensor's shape or the step's code path (an
    ensemble's members agree on them); the others (seeds, fraction, label noise, ...) may differ per member."""

    name: str
    family: str
    fields: tuple[str, ...]
    shape: Callable[[Any], TaskShape]
    builder: str
    builder_args: tuple = ()
    shape_fields: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    memory: Callable[[TaskShape], int] = table_bytes
    doc: str = ""

    def build(self, cfg: Any) -> Any:
        fn = load(self.builder)
        return (fn(*self.builder_args) if self.builder_args else fn)(cfg)


@dataclass(frozen=True)
class ModelSpec:
    """A model: `builder` names a callable (ModelConfig, TaskData) -> module; `n_params` and `activations` (floats
    one example keeps for the backward pass) size it from the config and the task's shape before it exists.

    inputs: the task inputs it reads ("tokens", "vectors"); sequence: whether it predicts at every position (the
    sequence tasks need it). batched: it has a batched forward (training.models.batched), so it trains in ensembles;
    otherwise each of its runs trains alone. needs_mlp: --d-mlp 0 is refused (only the transformer has
    attention-only blocks)."""

    name: str
    fields: tuple[str, ...]
    builder: str
    n_params: Callable[[Any, TaskShape], int]
    activations: Callable[[Any, TaskShape], int]
    inputs: tuple[str, ...] = ("tokens",)
    sequence: bool = False
    batched: bool = False
    needs_mlp: bool = True
    shape_fields: tuple[str, ...] = ()
    doc: str = ""

    def build(self, cfg: Any, data: Any) -> Any:
        return load(self.builder)(cfg, data)


def _no_copies(o: Any) -> int:
    return 0


def _no_shape(o: Any) -> tuple:
    return ()


@dataclass(frozen=True)
class TransformSpec:
    """A gradient or parameter transform (training.optim.transforms.base): on when `active(optim_cfg)` holds for any
    member; `builder` names a function trainer -> Transform.

    order: where it acts among the transforms, lower first (weight noise around the forward, then the gradient
    filters, then the parameter updates). sets_init: it changes the weights before step 0, so it is built before
    the others (decay to init then keeps the weights of step 0). state: what it keeps per member for a
    bit-identical resume. copies(o): parameter-sized buffers it holds (the memory estimate). shape(o): values that
    fix a buffer's shape or the code path (an ensemble's members agree on them). methods: named overrides of a
    base config that switch it on, for the accelerator sweeps."""

    name: str
    fields: tuple[str, ...]
    order: int
    active: Callable[[Any], bool]
    builder: str
    state: str = ""
    copies: Callable[[Any], int] = _no_copies
    shape: Callable[[Any], tuple] = _no_shape
    sets_init: bool = False
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    doc: str = ""

    def build(self, trainer: Any) -> Any:
        return load(self.builder)(trainer)


TASKS: dict[str, TaskSpec] = {}
ALIASES: dict[str, str] = {}
MODELS: dict[str, ModelSpec] = {}
TRANSFORMS: dict[str, TransformSpec] = {}


def _add(table: dict, spec: Any, kind: str) -> Any:
    if spec.name in table and table[spec.name] != spec:
        raise ValueError(f"{kind} '{spec.name}' is registered twice")
    table[spec.name] = spec
    return spec


def register_task(spec: TaskSpec) -> TaskSpec:
    for alias in spec.aliases:
        if ALIASES.get(alias, spec.name) != spec.name:
            raise ValueError(f"task alias '{alias}' names two tasks")
        ALIASES[alias] = spec.name
    return _add(TASKS, spec, "task")


def register_model(spec: ModelSpec) -> ModelSpec:
    return _add(MODELS, spec, "model")


def register_transform(spec: TransformSpec) -> TransformSpec:
    return _add(TRANSFORMS, spec, "transform")


def unknown(kind: str, name: str, known: Any, hint: str = "") -> ConfigError:
    return ConfigError(f"unknown {kind} '{name}' (choose from {', '.join(known)}{hint})")
