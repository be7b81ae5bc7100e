"""Run configuration: small frozen dataclasses, one per concern, nested in `RunConfig`.

Every field is a command-line flag (`--lr`, `--p`, `--frac`, ...), so field names are unique across the
sub-configs and adding a field is one line here. Model field names follow TransformerLens
(`n_layers, d_model, n_heads, d_head, d_mlp, act_fn, normalization_type`); `d_vocab`/`n_ctx` come from the task.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any


from training.constants import MAX_INT
from training.errors import ConfigError  # noqa: F401  (re-exported: bad configuration value, one line, exit 2)
from training.memory import check_memory
from training.registry import check_pairing, model_names, model_spec, task_shape
from training.rules import check_fields, choices


@dataclass(frozen=True)
class TaskConfig:
    """What is learned.

    Args:
        task: task name (`training.registry.task_names()`, e.g. "add", "x/y", "kadd").
        p: modulus for the mod-p tasks.
        frac: training fraction of all operand tuples.
        k: number of summands for "kadd" (x1 + ... + xk mod p).
        split_seed: seed of the train/test split.
        group: group of the group tasks ("S5", "A5", "D59", "C113"; see training.tasks.groups).
        n_train: number of training samples for sampled/dataset tasks (0 = the task's default).
        n_test: number of test samples for sampled/dataset tasks (0 = the task's default).
        data_path: directory holding the MNIST IDX files (train-images-idx3-ubyte[.gz], ...) for task "mnist".
        n_bits: input length n of "parity" ((n, k)-sparse parity; `k` relevant bits; inputs drawn from split_seed).
        label_noise: fraction of training labels flipped ("parity"; test labels stay clean).
        infinite: sequence tasks: a fresh seeded batch every step (a pure function of split_seed, batch_seed and
            the step) instead of a fixed training set; n_train is then the size of the fixed sample the train
            metrics are measured on.
        n_digits: digits per operand of "digit_add" (the answer has n_digits + 1).
        seq_len: tokens per sequence of "repeat_subseq" (BOS included).
        seq_vocab: token vocabulary of "repeat_subseq" (0 = BOS, 1..seq_vocab-1 ordinary tokens).
        repeat_len: length of the repeated subsequence ("repeat_subseq").
        n_repeats: how many times it appears (targets: copies 2..n_repeats).
        repeat_interval: copy i starts uniformly inside the i-th interval of this many tokens after BOS, placed
            so that it ends inside it too (0 = (seq_len - 1) // n_repeats).
        n_elements: values per sequence of "max_element" (tokens START x1..xn END).
        n_values: the values of "max_element" are 0..n_values-1.
    """

    task: str = "add"
    p: int = 113
    frac: float = 0.3
    k: int = 3
    split_seed: int = 0
    group: str = "S5"
    n_train: int = 0
    n_test: int = 0
    data_path: str = ""
    n_bits: int = 40
    label_noise: float = 0.0
    infinite: bool = False
    n_digits: int = 5
    seq_len: int = 85
    seq_vocab: int = 128
    repeat_len: int = 16
    n_repeats: int = 3
    repeat_interval: int = 0
    n_elements: int = 11
    n_values: int = 32


@dataclass(frozen=True)
class ModelConfig:
    """Network architecture (TransformerLens names).

    Args:
        model: "transformer", "mlp" or "lstm".
        n_layers: transformer blocks / MLP hidden layers / LSTM layers.
        d_model: residual width (transformer), per-operand embedding (mlp), hidden size (lstm).
        n_heads: attention heads.
        d_head: width of one head.
        d_mlp: MLP hidden width (transformer block or the mlp model); 0 = attention-only transformer blocks.
        act_fn: "relu", "gelu" or "tanh".
        normalization_type: "none" (Nanda 2023) or "LN" (pre-LN blocks + final LN).
        dropout: dropout probability (0 = off).
        init_scale: alpha, multiplies every initial weight (Omnigrok's large-init knob).
    """

    model: str = "transformer"
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    act_fn: str = "relu"
    normalization_type: str = "none"
    dropout: float = 0.0
    init_scale: float = 1.0


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Args:
        optimizer: "adamw", "adam" or "sgd".
        lr: peak learning rate.
        wd: weight decay (decoupled for AdamW, L2 for Adam and SGD).
        beta1, beta2: Adam betas.
        momentum: SGD momentum.
        warmup_steps: linear warmup from 0 to lr over this many steps.
        batch_size: 0 = full batch.
        float64_loss: compute log-softmax and loss in float64 (Nanda 2023).
        constrain_norm: rescale all parameters to this multiple of the initial total norm after every step (0 = off).
        wd_after_memorisation: weight decay from the first evaluation with train accuracy 1 on (-1 = unchanged).
        lr_after_memorisation: learning rate from that evaluation on (-1 = unchanged).
        weight_noise: sigma of Gaussian noise added to every weight for each training forward (0 = off).
        decay_to_init: weight decay pulls towards the initial weights instead of 0.
        grokfast: gradient filter of Grokfast: "none", "ema" (alpha, lamb) or "ma" (window, lamb).
        grokfast_alpha: EMA momentum of grokfast "ema", in [0, 1).
        grokfast_lamb: amplification of the filtered (slow) gradient.
        grokfast_window: number of gradients averaged by grokfast "ma".
        perp_grad: remove from each tensor's gradient its component along the weights (⊥Grad).
        loss: "task" (the task's own loss) or "stablemax" (StableMax cross-entropy; classification tasks).
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    wd: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    momentum: float = 0.0
    warmup_steps: int = 10
    batch_size: int = 0
    float64_loss: bool = True
    constrain_norm: float = 0.0
    wd_after_memorisation: float = -1.0
    lr_after_memorisation: float = -1.0
    weight_noise: float = 0.0
    decay_to_init: bool = False
    grokfast: str = "none"
    grokfast_alpha: float = 0.98
    grokfast_lamb: float = 2.0
    grokfast_window: int = 100
    perp_grad: bool = False
    loss: str = "task"


@dataclass(frozen=True)
class TrainConfig:
    """The loop.

    Args:
        steps: optimiser steps.
        eval_every: evaluate train/test metrics every this many steps.
        seed: model initialisation seed.
        batch_seed: minibatch sampling (and dropout) seed.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        stop_after_gen: stop this many steps after test accuracy first reaches 99% (-1 = never stop early).
    """

    steps: int = 40_000
    eval_every: int = 10
    seed: int = 0
    batch_seed: int = 0
    device: str = "auto"
    stop_after_gen: int = -1


@dataclass(frozen=True)
class CheckpointConfig:
    """Adaptive checkpointing: a log-spaced floor plus extra checkpoints where the test metrics move.

    Args:
        ckpt_floor: number of log-spaced steps always checkpointed (step 0 and the last step included).
        ckpt_acc_delta: checkpoint when test accuracy moved this much since the last checkpoint.
        ckpt_loss_delta: ... or when log test loss moved this much.
        ckpt_max: budget on the number of checkpoints.
        ckpt_max_mb: budget on their total size in MiB.
        ckpt_every: also checkpoint every N steps, whatever the budget (a multiple of eval_every; 0 = off).
    """

    ckpt_floor: int = 40
    ckpt_acc_delta: float = 0.02
    ckpt_loss_delta: float = 0.25
    ckpt_max: int = 400
    ckpt_max_mb: float = 1024.0
    ckpt_every: int = 0


SECTIONS = {"task": TaskConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "ckpt": CheckpointConfig}


@dataclass(frozen=True)
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        parts = {}
        for name, sub in SECTIONS.items():
            values = dict(d.get(name, {}))
            names = {f.name for f in fields(sub)}
            bad = set(values) - names
            if bad:
                raise ConfigError(f"unknown field(s) in '{name}': {', '.join(sorted(bad))}")
            parts[name] = sub(**values)
        return cls(**parts)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, s: str) -> "RunConfig":
        return cls.from_dict(json.loads(s))

    def replace(self, **flat: Any) -> "RunConfig":
        """New config with flat field overrides, e.g. `cfg.replace(lr=3e-3, p=59)`."""
        parts = {name: getattr(self, name) for name in SECTIONS}
        for key, value in flat.items():
            section = FIELD_SECTION.get(key)
            if section is None:
                raise ConfigError(f"unknown option '{key}'")
            parts[section] = dataclasses.replace(parts[section], **{key: value})
        return RunConfig(**parts)

    def flat(self) -> dict[str, Any]:
        return {k: v for name in SECTIONS for k, v in dataclasses.asdict(getattr(self, name)).items()}


FIELD_SECTION: dict[str, str] = {}
for _name, _sub in SECTIONS.items():
    for _f in fields(_sub):
        assert _f.name not in FIELD_SECTION, f"config field {_f.name} defined twice"
        FIELD_SECTION[_f.name] = _name


def field_type(name: str) -> type:
    """Python type of a flat field (from its default), used to parse command-line values."""
    sub = SECTIONS[FIELD_SECTION[name]]
    default = next(f.default for f in fields(sub) if f.name == name)
    return type(default)


def parse_value(name: str, text: str) -> Any:
    """A command-line value for field `name`: ints also as 1e4, floats finite, bools as true/false/1/0/yes/no."""
    kind = field_type(name)
    flag = f"--{name.replace('_', '-')}"
    if kind is str:
        return text
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{flag}: expected true or false, got '{text}'")
    try:
        x = float(text)  # "1e400" is inf here, not an OverflowError from int(float(...)) later
    except ValueError:
        raise ConfigError(f"{flag}: expected {kind.__name__}, got '{text}'") from None
    if not math.isfinite(x):
        raise ConfigError(f"{flag}: expected a finite number, got '{text}'")
    if kind is float:
        return x
    try:
        value = int(text)  # exact for long integers, which a float would round
    except ValueError:
        if x != int(x):
            raise ConfigError(f"{flag}: expected an integer, got '{text}'") from None
        value = int(x)
    if abs(value) > MAX_INT:
        raise ConfigError(f"{flag}: {text} is out of range (at most {MAX_INT})")
    return value


def _check_types(cfg: RunConfig) -> None:
    """Field types as declared, so a config.json or a Python caller cannot pass "abc" as --p or a bool as a size."""
    for name, value in cfg.flat().items():
        kind, flag = field_type(name), f"--{name.replace('_', '-')}"
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{flag}: expected {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"{flag}: expected a finite number, got {value}")
        if kind is int and abs(value) > MAX_INT:
            raise ConfigError(f"{flag}: {value} is out of range (at most {MAX_INT})")
        if kind is str and "\0" in value:
            raise ConfigError(f"{flag}: contains a NUL character")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: RunConfig) -> None:
    """Every check on a config that needs no tensor: types and field rules here, then the model's and the task's
    own constraints (their specs, training.registry) and the memory estimate (training.memory). Called once per
    run, before anything is written: by training.run, the sweeps (their planner, and each executor for the runs
    it starts) and the analyses that train; `training.loop` trains configs that passed it. No torch here."""
    _check_types(cfg)
    check_fields(cfg.flat())
    m = cfg.model
    _need(m.model in model_names(), f"--model must be {choices(model_names())}, got '{m.model}'")
    attention_only = [name for name in model_names() if not model_spec(name).needs_mlp]
    _need(m.d_mlp > 0 or m.model in attention_only,
          f"--d-mlp must be positive (0 = attention-only, {choices(attention_only)} only), got {m.d_mlp}")
    _need(cfg.ckpt.ckpt_floor <= cfg.ckpt.ckpt_max, "need 2 <= --ckpt-floor <= --ckpt-max")
    _need(cfg.ckpt.ckpt_every % cfg.train.eval_every == 0,
          f"--ckpt-every must be a multiple of --eval-every ({cfg.train.eval_every}): checkpoints are taken at "
          f"evaluations, got {cfg.ckpt.ckpt_every}")
    shape = task_shape(cfg.task)
    check_pairing(model_spec(m.model), shape.name, vectors=shape.d_vocab == 0, sequence=shape.sequence)
    # token tasks are the classification ones (cross-entropy); vector tasks train MSE or the hinge loss
    _need(cfg.optim.loss == "task" or shape.d_vocab > 0,
          f"--loss {cfg.optim.loss} needs a classification task; '{shape.name}' is not one")
    if shape.sequence:
        _need(cfg.optim.loss == "task", f"--loss {cfg.optim.loss} is not available for sequence task '{shape.name}'")
        _need(not cfg.task.infinite or cfg.optim.batch_size > 0,
              "--infinite true draws a fresh batch every step; give its size with --batch-size N")
    else:
        _need(not cfg.task.infinite, f"--infinite true is for the sequence tasks; '{shape.name}' is not one")
    check_memory(cfg, shape)
