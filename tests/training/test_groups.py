"""The permutation groups behind the group tasks, and the tasks themselves."""

import itertools

import numpy as np
import pytest

from training.config import ConfigError, TaskConfig
from training.tasks.groups import get_group, parity
from training.tasks.build import build_task
from training.tasks.specs import GROUP_TASKS

GROUPS = ["S3", "S4", "S5", "A4", "A5", "D3", "D5", "D6", "C2", "C7", "C12"]


@pytest.mark.parametrize("name", GROUPS)
def test_group_axioms(name):
    G = get_group(name)
    T, inv, n = G.table, G.inverse, G.order
    assert T.min() >= 0 and T.max() < n  # closed
    assert np.array_equal(T[0], np.arange(n)) and np.array_equal(T[:, 0], np.arange(n))  # element 0 is the identity
    assert np.all(T[np.arange(n), inv] == 0) and np.all(T[inv, np.arange(n)] == 0)  # inverses
    a, b, c = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    assert np.array_equal(T[T[a, b], c], T[a, T[b, c]])  # associative
    assert all(sorted(row) == list(range(n)) for row in T.tolist())  # Latin square: a * x = b has one solution


@pytest.mark.parametrize("name, order, abelian", [("S5", 120, False), ("A5", 60, False), ("D6", 12, False),
                                                  ("C12", 12, True), ("S3", 6, False), ("A4", 12, False)])
def test_orders_and_commutativity(name, order, abelian):
    G = get_group(name)
    assert G.order == order and np.array_equal(G.table, G.table.T) == abelian


def test_families():
    assert np.all(parity(get_group("A5").perms) == 0)
    assert parity(get_group("S5").perms).sum() == 60
    assert len({tuple(p) for p in get_group("S4").perms}) == 24
    D = get_group("D5")  # rotations and reflections of a pentagon: every element preserves adjacency
    for p in D.perms:
        assert all((p[(k + 1) % 5] - p[k]) % 5 in (1, 4) for k in range(5))


def test_elements_are_in_lexicographic_order_and_cycle_notation_round_trips():
    G = get_group("S5")
    assert [tuple(p) for p in G.perms] == list(itertools.permutations(range(5)))
    for i in range(G.order):
        assert G.element(G.names[i]) == i
    assert G.element("(0,3)(1,4)") == G.element("(0 3)(1 4)") == G.element("(1 4)(3 0)")
    assert G.names[0] == "()" and G.element("e") == 0
    # products apply the right factor first, as cycle notation reads
    assert G.names[G.mul(G.element("(0 1)"), G.element("(1 2)"))] == "(0 1 2)"
    assert G.cycle_type(G.element("(0 3)(1 4)")) == (2, 2, 1)
    with pytest.raises(ValueError):
        G.element("(0 5)")
    with pytest.raises(ValueError):
        G.element("(0 1 1)")


@pytest.mark.parametrize("name, words", [("Q8", "unknown group"), ("S7", "order 5040"), ("D2", "n >= 3"),
                                         ("X5", "unknown group"), ("", "unknown group")])
def test_bad_group_names(name, words):
    with pytest.raises(ConfigError, match=words):
        get_group(name)


def compose(p, q):  # p * q: q first
    return tuple(p[k] for k in q)


def inverse(p):
    out = [0] * len(p)
    for i, v in enumerate(p):
        out[v] = i
    return tuple(out)


@pytest.mark.parametrize("task", list(GROUP_TASKS))
def test_group_tasks_match_plain_permutation_arithmetic(task):
    data = build_task(TaskConfig(task=task, group="S4", frac=0.5))
    G = get_group("S4")
    perms = [tuple(p) for p in G.perms]
    assert data.inputs.shape == (24 * 24, 3) and set(data.inputs[:, 2].tolist()) == {24}
    assert data.d_vocab == 25 and data.d_vocab_out == 24 and data.n_ctx == 3
    for (x, y, _), c in zip(data.inputs.tolist(), data.labels.tolist()):
        a, b = perms[x], perms[y]
        want = {"group_mul": compose(a, b), "group_conj": compose(compose(a, b), inverse(a)),
                "group_xyx": compose(compose(a, b), a)}[task]
        assert perms[c] == want
    s = data.structure
    assert s["kind"] == "group" and s["group"] == "S4" and s["n"] == 24 and s["op"] == GROUP_TASKS[task]
    assert s["elements"] == G.names


def test_group_task_split_is_seeded_and_unknown_group_is_a_config_error():
    a = build_task(TaskConfig(task="group_mul", group="S5", frac=0.4, split_seed=3))
    b = build_task(TaskConfig(task="group_mul", group="S5", frac=0.4, split_seed=3))
    assert len(a.train_idx) == int(0.4 * 14400) and np.array_equal(a.train_idx, b.train_idx)
    with pytest.raises(ConfigError, match="unknown group"):
        build_task(TaskConfig(task="group_mul", group="Q8"))


@pytest.mark.parametrize("name", ["power2022-s5", "chughtai-s5", "s5-cpu", "s5-transformer-cpu"])
def test_s5_presets_build(name):
    from training.config import validate
    from training.models.build import build_model
    from training.presets import get_preset

    cfg = get_preset(name)
    validate(cfg)
    data = build_task(cfg.task)
    model = build_model(cfg.model, data)
    assert data.structure["group"] == "S5" and data.d_vocab_out == 120
    assert model.answer_logits(data.inputs[:4]).shape == (4, 120)


def test_cli_refuses_an_unknown_group_before_writing(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "run"
    r = run_cli("--task", "group_mul", "--group", "Q8", "--model", "mlp", "--out", str(out))
    assert r.returncode == 2 and "unknown group 'Q8'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
