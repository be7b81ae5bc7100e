"""Run configuration: small frozen dataclasses, one per concern, nested in `RunConfig`.

Every field is a command-line flag (`--lr`, `--p`, `--frac`, ...), so field names are unique across the
sub-configs and adding a field is one line here. Model field names follow TransformerLens
(`n_layers, d_model, n_heads, d_head, d_mlp, act_fn, normalization_type`); `d_vocab`/`n_ctx` come from the task.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any


from training.errors import ConfigError  # noqa: F401  (re-exported: bad configuration value, one line, exit 2)


@dataclass(frozen=True)
class TaskConfig:
    """What is learned.

    Args:
        task: task name from `training.tasks.TASKS` (e.g. "add", "x/y", "kadd").
        p: modulus for the mod-p tasks.
        frac: training fraction of all operand tuples.
        k: number of summands for "kadd" (x1 + ... + xk mod p).
        split_seed: seed of the train/test split.
        group: group of the group tasks ("S5", "A5", "D59", "C113"; see training.groups).
        n_train: number of training samples for sampled/dataset tasks (0 = the task's default).
        n_test: number of test samples for sampled/dataset tasks (0 = the task's default).
        data_path: directory holding the MNIST IDX files (train-images-idx3-ubyte[.gz], ...) for task "mnist".
        n_bits: input length n of "parity" ((n, k)-sparse parity; `k` relevant bits; inputs drawn from split_seed).
        label_noise: fraction of training labels flipped ("parity"; test labels stay clean).
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


@dataclass(frozen=True)
class ModelConfig:
    """Network architecture (TransformerLens names).

    Args:
        model: "transformer", "mlp" or "lstm".
        n_layers: transformer blocks / MLP hidden layers / LSTM layers.
        d_model: residual width (transformer), per-operand embedding (mlp), hidden size (lstm).
        n_heads: attention heads.
        d_head: width of one head.
        d_mlp: MLP hidden width (transformer block or the mlp model).
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
    """

    ckpt_floor: int = 40
    ckpt_acc_delta: float = 0.02
    ckpt_loss_delta: float = 0.25
    ckpt_max: int = 400
    ckpt_max_mb: float = 1024.0


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
    kind = field_type(name)
    try:
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')}: expected {kind.__name__}, got '{text}'") from None


def validate(cfg: RunConfig) -> None:
    """Checks that need no task or model code; the task/model registries check their own names."""
    t, m, o, tr, c = cfg.task, cfg.model, cfg.optim, cfg.train, cfg.ckpt
    if not 0.0 < t.frac < 1.0:
        raise ConfigError(f"--frac must be in (0, 1), got {t.frac}")
    if t.p < 2:
        raise ConfigError(f"--p must be >= 2, got {t.p}")
    if tr.steps <= 0:
        raise ConfigError(f"--steps must be positive, got {tr.steps}")
    if tr.eval_every <= 0:
        raise ConfigError(f"--eval-every must be positive, got {tr.eval_every}")
    if o.lr <= 0:
        raise ConfigError(f"--lr must be positive, got {o.lr}")
    if o.wd < 0:
        raise ConfigError(f"--wd must be >= 0, got {o.wd}")
    if o.batch_size < 0:
        raise ConfigError(f"--batch-size must be >= 0 (0 = full batch), got {o.batch_size}")
    if o.warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be >= 0, got {o.warmup_steps}")
    if o.optimizer not in ("adamw", "adam", "sgd"):
        raise ConfigError(f"--optimizer must be adamw, adam or sgd, got '{o.optimizer}'")
    if m.act_fn not in ("relu", "gelu", "tanh"):
        raise ConfigError(f"--act-fn must be relu, gelu or tanh, got '{m.act_fn}'")
    if m.normalization_type not in ("none", "LN"):
        raise ConfigError(f"--normalization-type must be none or LN, got '{m.normalization_type}'")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {m.dropout}")
    if m.init_scale <= 0:
        raise ConfigError(f"--init-scale must be positive, got {m.init_scale}")
    if min(m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp) <= 0:
        raise ConfigError("model sizes (--n-layers, --d-model, --n-heads, --d-head, --d-mlp) must be positive")
    if tr.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got '{tr.device}'")
    if c.ckpt_floor < 2 or c.ckpt_max < c.ckpt_floor:
        raise ConfigError("need 2 <= --ckpt-floor <= --ckpt-max")
    if t.n_train < 0 or t.n_test < 0:
        raise ConfigError("--n-train and --n-test must be >= 0 (0 = the task's default)")
    if o.constrain_norm < 0:
        raise ConfigError(f"--constrain-norm must be >= 0 (0 = off), got {o.constrain_norm}")
    if o.wd_after_memorisation < 0 and o.wd_after_memorisation != -1:
        raise ConfigError(f"--wd-after-memorisation must be >= 0 (or -1 = off), got {o.wd_after_memorisation}")
    if o.lr_after_memorisation <= 0 and o.lr_after_memorisation != -1:
        raise ConfigError(f"--lr-after-memorisation must be positive (or -1 = off), got {o.lr_after_memorisation}")

