"""The built-in tasks' specs: what a task config asks for, worked out without building anything (and without torch).

Each family registers one `training.specs.TaskSpec` per task: the fields it reads, its constraints (checked by its
`shape`, which returns the sizes `training.tasks.build.build_task` will produce), the fields that change a tensor's
shape, and a lazy reference to its builder (training.tasks.build, training.tasks.sequence). `training.config.validate` asks
`training.registry.task_shape` for the shape to refuse a bad config and to estimate the memory a run needs,
before any tensor is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from training.errors import ConfigError
from training.tasks.groups import group_order
from training.specs import TASKS, TaskShape, TaskSpec, register_task

# --- binary operations mod p (their builders live in training.tasks.build) ------------------------------------------


@dataclass(frozen=True)
class ModOp:
    """c = fn(x, y) mod p on numpy int64 arrays; `prime` when the operation needs a field (division)."""

    expr: str
    fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    prime: bool = False
    nonzero_y: bool = False


def _inv(y: np.ndarray, p: int) -> np.ndarray:
    return np.array([pow(int(v), -1, p) for v in y.ravel()], dtype=np.int64).reshape(y.shape)


MOD_OPS: dict[str, ModOp] = {
    "add": ModOp("x+y", lambda x, y, p: (x + y) % p),
    "sub": ModOp("x-y", lambda x, y, p: (x - y) % p),
    "mul": ModOp("x*y", lambda x, y, p: (x * y) % p),
    "div": ModOp("x/y", lambda x, y, p: (x * _inv(y, p)) % p, prime=True, nonzero_y=True),
    "div_odd_sub": ModOp("x/y if y odd else x-y",
                         lambda x, y, p: np.where(y % 2 == 1, (x * _inv(np.maximum(y, 1), p)) % p, (x - y) % p),
                         prime=True),
    "sq_sum": ModOp("x^2+y^2", lambda x, y, p: (x * x + y * y) % p),
    "quad": ModOp("x^2+xy+y^2", lambda x, y, p: (x * x + x * y + y * y) % p),
    "quad_x": ModOp("x^2+xy+y^2+x", lambda x, y, p: (x * x + x * y + y * y + x) % p),
    "cubic": ModOp("x^3+xy", lambda x, y, p: (x * x % p * x + x * y) % p),
    "cubic_y": ModOp("x^3+xy^2+y", lambda x, y, p: (x * x % p * x + x * (y * y % p) + y) % p),
}
GROUP_TASKS = {"group_mul": "x*y", "group_conj": "x*y*x^-1", "group_xyx": "x*y*x"}
KADD_MAX_TUPLES = 5_000_000
TEACHER_WIDTHS = (5, 100, 100, 5)
DIGITS_IMAGES = 1797  # scikit-learn's 8x8 digits
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000  # the standard IDX files (the real count is checked when they are read)


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin: exact below 3.3e24, instant for any 64-bit --p (trial division up to
    sqrt(2^63) would take hours)."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n in bases:
        return True
    if any(n % b == 0 for b in bases):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _n_train(frac: float, n: int) -> int:
    """As training.tasks.data.random_split splits the table: the first floor(frac * n) of a permutation."""
    n_train = int(frac * n)
    if n_train == 0 or n_train == n:
        raise ConfigError(f"--frac {frac} leaves an empty train or test set ({n} examples)")
    return n_train


def _modular_shape(name: str) -> Callable[..., TaskShape]:
    op = MOD_OPS[name]

    def shape(cfg) -> TaskShape:
        p = cfg.p
        if op.prime and not is_prime(p):
            raise ConfigError(f"task '{name}' ({op.expr}) needs a prime modulus; --p {p} is not prime")
        n = p * (p - 1 if op.nonzero_y else p)
        return TaskShape(name, n, _n_train(cfg.frac, n), 3, p + 1, p)

    return shape


for _name, _op in MOD_OPS.items():
    register_task(TaskSpec(_name, "modular", ("p", "frac", "split_seed"), _modular_shape(_name),
                           "training.tasks.tables:modular_task", (_name,), shape_fields=("p",), aliases=(_op.expr,),
                           doc=f"{_op.expr} mod p over every operand pair (Power et al. 2022)"))


def _kadd_shape(cfg) -> TaskShape:
    if cfg.k < 2:
        raise ConfigError(f"--k must be >= 2 for kadd, got {cfg.k}")
    if cfg.k * math.log(cfg.p) > math.log(KADD_MAX_TUPLES):  # p**k itself could be astronomically large
        raise ConfigError(f"kadd with p={cfg.p}, k={cfg.k} has p^k tuples; keep p^k <= {KADD_MAX_TUPLES:.0e}")
    n = cfg.p**cfg.k
    return TaskShape("kadd", n, _n_train(cfg.frac, n), cfg.k + 1, cfg.p + 1, cfg.p)


register_task(TaskSpec("kadd", "modular", ("p", "k", "frac", "split_seed"), _kadd_shape, "training.tasks.tables:kadd",
                       shape_fields=("p", "k"), doc="x1 + ... + xk mod p over all p^k tuples"))


def _group_shape(name: str) -> Callable[..., TaskShape]:
    def shape(cfg) -> TaskShape:
        order = group_order(cfg.group)
        n = order * order
        return TaskShape(name, n, _n_train(cfg.frac, n), 3, order + 1, order)

    return shape


for _name, _expr in GROUP_TASKS.items():
    register_task(TaskSpec(_name, "group", ("group", "frac", "split_seed"), _group_shape(_name),
                           "training.tasks.tables:group_task", (_name, _expr), shape_fields=("group",),
                           doc=f"{_expr} in a finite group over every pair (Power et al. 2022)"))


# --- vector tasks (Omnigrok's teacher-student and images; (n, k)-sparse parity) -------------------------------

def _teacher_shape(cfg) -> TaskShape:
    n_train, n_test = cfg.n_train or 100, cfg.n_test or 100
    return TaskShape("teacher", n_train + n_test, n_train, 1, 0, TEACHER_WIDTHS[-1], TEACHER_WIDTHS[0])


def _digits_shape(cfg) -> TaskShape:
    n_train = cfg.n_train or 1000
    n_test = cfg.n_test or max(DIGITS_IMAGES - n_train, 0)
    if n_train + n_test > DIGITS_IMAGES or n_test <= 0:
        raise ConfigError(f"digits has {DIGITS_IMAGES} images; --n-train {n_train} + --n-test {n_test} must fit in it")
    return TaskShape("digits", DIGITS_IMAGES, n_train, 1, 0, 10, 64)  # the whole table, split by index


def _mnist_shape(cfg) -> TaskShape:
    if not cfg.data_path:
        raise ConfigError("task 'mnist' needs --data-path DIR holding the MNIST IDX files")
    n_train, n_test = cfg.n_train or 1000, cfg.n_test or MNIST_TEST
    return TaskShape("mnist", n_train + n_test, n_train, 1, 0, 10, 784)


def _parity_shape(cfg) -> TaskShape:
    if not 1 <= cfg.k <= cfg.n_bits:
        raise ConfigError(f"parity needs 1 <= --k <= --n-bits, got k={cfg.k}, n_bits={cfg.n_bits}")
    n_train, n_test = cfg.n_train or 1000, cfg.n_test or 1000
    return TaskShape("parity", n_train + n_test, n_train, 1, 0, 1, cfg.n_bits)


_SIZES = ("n_train", "n_test")
register_task(TaskSpec("teacher", "vector", (*_SIZES, "split_seed"), _teacher_shape, "training.tasks.vector:teacher",
                       shape_fields=_SIZES, doc="Omnigrok's teacher-student regression (MSE)"))
register_task(TaskSpec("digits", "vector", (*_SIZES, "split_seed"), _digits_shape, "training.tasks.vector:digits",
                       shape_fields=_SIZES, doc="scikit-learn's 8x8 digits (MSE on one-hot targets)"))
register_task(TaskSpec("mnist", "vector", ("data_path", *_SIZES), _mnist_shape, "training.tasks.vector:mnist",
                       shape_fields=("data_path", *_SIZES), doc="MNIST from its IDX files (MSE on one-hot targets)"))
register_task(TaskSpec("parity", "vector", ("n_bits", "k", *_SIZES, "label_noise", "split_seed"), _parity_shape,
                       "training.tasks.parity:parity", shape_fields=("n_bits", *_SIZES),
                       doc="(n, k)-sparse parity with the hinge loss (Barak et al. 2022)"))


# --- sequence tasks (Nanda 2022's phase-change tasks; their builders live in training.tasks.sequence) --------------

SEQ_N_TRAIN, SEQ_N_TEST = 1000, 1000  # defaults of --n-train / --n-test for the sequence tasks


def repeat_interval(cfg) -> int:
    return cfg.repeat_interval or (cfg.seq_len - 1) // cfg.n_repeats


def sequence_layout(name: str, cfg) -> tuple[int, int, int, float]:
    """(n_ctx, d_vocab, d_vocab_out, log10 of the number of distinct inputs), or ConfigError."""
    if name == "digit_add":
        # x_{n-1}..x_0 + y_{n-1}..y_0 = s_n..s_0; '+' = 10, '=' = 11
        return 3 * cfg.n_digits + 3, 12, 10, 2.0 * cfg.n_digits
    if name == "max_element":
        # START x_1..x_n END, START = n_values, END = n_values + 1
        _need(cfg.n_values >= 2, f"max_element needs --n-values >= 2, got {cfg.n_values}")
        return cfg.n_elements + 2, cfg.n_values + 2, cfg.n_values, cfg.n_elements * math.log10(cfg.n_values)
    interval = repeat_interval(cfg)
    _need(cfg.seq_vocab >= 2, f"repeat_subseq needs --seq-vocab >= 2 (token 0 is BOS), got {cfg.seq_vocab}")
    _need(cfg.n_repeats >= 2, f"repeat_subseq needs --n-repeats >= 2 (the targets are copies 2..), got {cfg.n_repeats}")
    _need(cfg.repeat_len >= 2, f"repeat_subseq needs --repeat-len >= 2, got {cfg.repeat_len}")
    _need(cfg.repeat_len <= interval,
          f"--repeat-len {cfg.repeat_len} does not fit in intervals of {interval} tokens (--repeat-interval)")
    _need(1 + cfg.n_repeats * interval <= cfg.seq_len,
          f"--seq-len {cfg.seq_len} is shorter than BOS + {cfg.n_repeats} intervals of {interval} tokens")
    free = cfg.seq_len - 1 - (cfg.n_repeats - 1) * cfg.repeat_len
    return cfg.seq_len, cfg.seq_vocab, cfg.seq_vocab, free * math.log10(cfg.seq_vocab - 1)


def sequence_shape(name: str, cfg) -> TaskShape:
    n_ctx, d_vocab, d_vocab_out, log_distinct = sequence_layout(name, cfg)
    n_train, n_test = cfg.n_train or SEQ_N_TRAIN, cfg.n_test or SEQ_N_TEST
    # a finite task draws n_train + n_test distinct inputs; the infinite one's fixed sets may share inputs
    if not cfg.infinite and math.log10(n_train + n_test) > log_distinct:
        raise ConfigError(f"{name} has only {10 ** log_distinct:.0f} distinct inputs; --n-train {n_train} + "
                          f"--n-test {n_test} do not fit")
    return TaskShape(name, n_train + n_test, n_train, n_ctx, d_vocab, d_vocab_out, sequence=True)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_SEQ = (*_SIZES, "infinite", "split_seed")
_SEQ_FIELDS = {"digit_add": ("n_digits",),
               "repeat_subseq": ("seq_len", "seq_vocab", "repeat_len", "n_repeats", "repeat_interval"),
               "max_element": ("n_elements", "n_values")}
_SEQ_DOCS = {"digit_add": "n-digit addition, the answer digits predicted left to right",
             "max_element": "the largest of n values, predicted at END",
             "repeat_subseq": "a repeated subsequence, each copy after the first predicted"}
for _name, _fields in _SEQ_FIELDS.items():
    register_task(TaskSpec(_name, "sequence", (*_fields, *_SEQ), lambda cfg, name=_name: sequence_shape(name, cfg),
                           "training.tasks.sequence:sequence_task", (_name,), shape_fields=(*_fields, *_SIZES, "infinite"),
                           doc=f"{_SEQ_DOCS[_name]} (Nanda 2022's phase-change tasks)"))

TASK_NAMES = tuple(TASKS)  # the built-in tasks (training.registry.task_names() adds any registered later)
