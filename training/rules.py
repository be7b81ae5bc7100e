"""The one rule of each config field's value, and its message: `--frac must be in (0, 1), got 1.5`.

A field's type is checked from its default (training.config); a rule between fields, or one that needs a task's
or a model's spec, lives in `training.config.validate` and in the specs. No torch here.
"""

from __future__ import annotations

from typing import Any, Callable

from training.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]  # (holds for a value, what it says: "must be >= 2")

MAX_LAYERS = 1000
MAX_INIT_SCALE = 1e6
MAX_CKPT_FLOOR = 100_000
MAX_GROKFAST_WINDOW = 10_000


def choices(names) -> str:
    """'a, b or c'."""
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _in(lo: float, hi: float, closed: str = "[)") -> Rule:
    left = (lambda v: v >= lo) if closed[0] == "[" else (lambda v: v > lo)
    right = (lambda v: v <= hi) if closed[1] == "]" else (lambda v: v < hi)
    return (lambda v: left(v) and right(v)), f"must be in {closed[0]}{lo:g}, {hi:g}{closed[1]}"


def _at_least(lo: float, note: str = "") -> Rule:
    return (lambda v: v >= lo), f"must be >= {lo:g}{note}"


def _positive(note: str = "") -> Rule:
    return (lambda v: v > 0), f"must be positive{note}"


def _one_of(*names: str) -> Rule:
    return (lambda v: v in names), f"must be {choices(names)}"


def _off_or(rule: Rule) -> Rule:
    return (lambda v: v == -1 or rule[0](v)), f"{rule[1]} (or -1 = off)"


CHECKS: dict[str, Rule] = {
    # task (the name, the group and --data-path are the task spec's to check)
    "frac": _in(0, 1, "()"), "p": _at_least(2), "k": _at_least(1), "split_seed": _at_least(0),
    "n_train": _at_least(0, " (0 = the task's default)"), "n_test": _at_least(0, " (0 = the task's default)"),
    "n_bits": _at_least(1), "label_noise": _in(0, 0.5, "[]"), "n_digits": _at_least(1), "seq_len": _at_least(1),
    "seq_vocab": _at_least(1), "repeat_len": _at_least(1), "n_repeats": _at_least(1),
    "repeat_interval": _at_least(0, " (0 = derived)"), "n_elements": _at_least(1), "n_values": _at_least(1),
    # model (the model name is checked against the registry in `validate`)
    "act_fn": _one_of("relu", "gelu", "tanh"), "normalization_type": _one_of("none", "LN"), "dropout": _in(0, 1),
    # float32 weights times a larger alpha overflow to inf at initialisation (Omnigrok's alphas stay below 1e2)
    "init_scale": _in(0, MAX_INIT_SCALE, "(]"),
    # each layer is a Python module: a million tiny ones fit in memory but take hours to build
    "n_layers": _in(1, MAX_LAYERS, "[]"), "d_model": _positive(), "n_heads": _positive(), "d_head": _positive(),
    "d_mlp": _at_least(0, " (0 = attention-only)"),
    # optim
    "optimizer": _one_of("adamw", "adam", "sgd"), "lr": _positive(), "wd": _at_least(0), "beta1": _in(0, 1),
    "beta2": _in(0, 1), "momentum": _in(0, 1), "batch_size": _at_least(0, " (0 = full batch)"),
    "warmup_steps": _at_least(0), "constrain_norm": _at_least(0, " (0 = off)"),
    "wd_after_memorisation": _off_or(_at_least(0)), "lr_after_memorisation": _off_or(_positive()),
    "weight_noise": _at_least(0, " (0 = off)"), "grokfast": _one_of("none", "ema", "ma"),
    "grokfast_alpha": _in(0, 1), "grokfast_lamb": _at_least(0),
    # the window is a ring buffer of that many gradients per parameter
    "grokfast_window": _in(1, MAX_GROKFAST_WINDOW, "[]"), "loss": _one_of("task", "stablemax"),
    # train
    "steps": _positive(), "eval_every": _positive(), "seed": _at_least(0), "batch_seed": _at_least(0),
    "device": _one_of("auto", "cpu", "cuda"), "stop_after_gen": _at_least(-1, " (-1 = never stop early)"),
    # ckpt (the floor is laid out as an array of that many steps before training starts)
    "ckpt_floor": _in(2, MAX_CKPT_FLOOR, "[]"), "ckpt_max": _at_least(2), "ckpt_acc_delta": _at_least(0),
    "ckpt_loss_delta": _at_least(0), "ckpt_max_mb": _positive(),
    "ckpt_every": _at_least(0, " (0 = off)"),
}


def check_fields(values: dict[str, Any]) -> None:
    """ConfigError naming the first field of `values` ({name: value}) that breaks its rule in CHECKS."""
    for name, value in values.items():
        rule = CHECKS.get(name)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"--{name.replace('_', '-')} {rule[1]}, got {value!r}")
