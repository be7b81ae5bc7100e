"""Which group each modular operation is analysed in, and refusing what is not a binary mod-p task."""

import pytest
import torch

from interp.modular import NotModularError, additive_structure, modular_structure, primitive_root
from training.config import TaskConfig
from training.tasks.build import build_task


def test_primitive_roots():
    assert primitive_root(97) == 5 and primitive_root(113) == 3 and primitive_root(23) == 5
    for p in (7, 11, 13, 97):
        g = primitive_root(p)
        assert sorted(pow(g, i, p) for i in range(p - 1)) == list(range(1, p))


@pytest.mark.parametrize("task, law", [("add", "i+j"), ("sub", "i-j")])
def test_additive_ops_live_in_z_p(task, law):
    data = build_task(TaskConfig(task=task, p=13, frac=0.5))
    s = modular_structure(data)
    assert s.group == "additive" and s.n == 13 and s.group_law == law and s.grid_size == 169
    i, j = torch.arange(169) // 13, torch.arange(169) % 13
    assert torch.equal(s.answer, (i + j) % 13 if law == "i+j" else (i - j) % 13)
    assert torch.equal(data.inputs[s.rows], s.tokens) and torch.equal(data.labels[s.rows], s.labels)
    assert s.train.sum() == len(data.train_idx)


def test_division_mod_97_is_subtraction_mod_96_in_discrete_logs():
    """x/y mod 97 ~ x-y mod 96: with g = 5, 5^i / 5^j = 5^(i-j)."""
    data = build_task(TaskConfig(task="x/y", p=97, frac=0.5))
    s = modular_structure(data)
    assert s.group == "multiplicative" and s.n == 96 and s.generator == 5 and s.group_law == "i-j"
    i, j = torch.arange(96 * 96) // 96, torch.arange(96 * 96) % 96
    assert torch.equal(s.answer, (i - j) % 96)
    assert torch.equal(s.elements[s.answer], s.labels)  # the labels really are 5^(i-j) mod 97
    assert 0 not in s.tokens[:, :2] and "Z_96" in s.description
    mul = modular_structure(build_task(TaskConfig(task="mul", p=97, frac=0.5)))
    assert mul.group_law == "i+j" and mul.grid_size == 96 * 96  # the 0 row and column are left out


def test_non_group_operations_use_token_values_and_the_true_answer():
    data = build_task(TaskConfig(task="x^2+y^2", p=11, frac=0.5))
    s = modular_structure(data)
    assert s.group == "additive" and s.group_law is None and "not a group operation" in s.description
    assert torch.equal(s.answer, s.labels)


@pytest.mark.parametrize("data, words", [
    (dict(task="kadd", p=5, k=3), "3 operands"),
    (dict(task="mul", p=12), "not prime"),
])
def test_refused_tasks(data, words):
    with pytest.raises(NotModularError, match=words):
        modular_structure(build_task(TaskConfig(**data)))


def test_refuses_a_task_that_is_not_modular():
    data = build_task(TaskConfig(task="add", p=5, frac=0.5))
    data.structure = {"kind": "parity", "n": 40, "k": 3}
    with pytest.raises(NotModularError, match="not a modular-arithmetic task"):
        modular_structure(data)


def test_bare_additive_layout_for_a_model_alone():
    s = additive_structure(7)
    assert s.grid_size == 49 and not s.train.any() and (s.rows == -1).all()
    assert torch.equal(s.labels, (s.tokens[:, 0] + s.tokens[:, 1]) % 7)
