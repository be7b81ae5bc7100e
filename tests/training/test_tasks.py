import numpy as np
import pytest
import torch

from training.config import ConfigError, TaskConfig
from training.specs import ALIASES
from training.tasks.build import build_task
from training.tasks.data import random_split
from training.tasks.specs import MOD_OPS

P = 7


def reference(name: str, x: int, y: int, p: int) -> int:
    inv = pow(y, -1, p) if y % p else None
    return {
        "add": (x + y) % p, "sub": (x - y) % p, "mul": (x * y) % p,
        "div": (x * inv) % p if inv is not None else None,
        "div_odd_sub": (x * inv) % p if y % 2 == 1 else (x - y) % p,
        "sq_sum": (x**2 + y**2) % p, "quad": (x**2 + x * y + y**2) % p, "quad_x": (x**2 + x * y + y**2 + x) % p,
        "cubic": (x**3 + x * y) % p, "cubic_y": (x**3 + x * y**2 + y) % p,
    }[name]


@pytest.mark.parametrize("name", list(MOD_OPS))
def test_every_operation_matches_plain_python(name):
    data = build_task(TaskConfig(task=name, p=P, frac=0.5))
    x, y, eq = data.inputs.T.tolist()
    assert set(eq) == {P} and data.d_vocab == P + 1 and data.d_vocab_out == P and data.n_ctx == 3
    for a, b, c in zip(x, y, data.labels.tolist()):
        assert c == reference(name, a, b, P)
    expected = P * (P - 1) if name == "div" else P * P
    assert len(data.inputs) == expected  # division: every pair with y != 0, no pair missing


def test_expressions_are_aliases():
    assert ALIASES["x/y"] == "div" and ALIASES["x^3+xy^2+y"] == "cubic_y"
    a, b = build_task(TaskConfig(task="x-y", p=P)), build_task(TaskConfig(task="sub", p=P))
    assert torch.equal(a.labels, b.labels)


def test_prime_only_operation_refuses_composite_modulus():
    with pytest.raises(ConfigError, match="prime"):
        build_task(TaskConfig(task="div", p=12))
    build_task(TaskConfig(task="add", p=12))  # addition is fine mod 12


def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown task"):
        build_task(TaskConfig(task="x**y"))


def test_split_sizes_match_nanda():
    data = build_task(TaskConfig(task="add", p=113, frac=0.3))
    assert (len(data.train_idx), len(data.test_idx)) == (3830, 8939)


def test_split_is_seeded_disjoint_and_complete():
    a1, b1 = random_split(100, 0.3, seed=1)
    a2, b2 = random_split(100, 0.3, seed=1)
    a3, _ = random_split(100, 0.3, seed=2)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)
    assert sorted(a1.tolist() + b1.tolist()) == list(range(100))


def test_kadd():
    data = build_task(TaskConfig(task="kadd", p=5, k=3, frac=0.5))
    assert data.inputs.shape == (125, 4) and data.n_ctx == 4
    ops = data.inputs[:, :3].numpy()
    assert np.array_equal(data.labels.numpy(), ops.sum(1) % 5)
