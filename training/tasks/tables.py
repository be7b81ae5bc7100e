"""The operation-table tasks: binary operations mod p, k-term sums mod p, and group operations."""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch

from training.config import TaskConfig
from training.tasks.data import TaskData, random_split  # noqa: F401  (re-exported)
from training.tasks.groups import GROUP_OPS, get_group
from training.tasks.specs import MOD_OPS


def modular_task(name: str) -> Callable[[TaskConfig], TaskData]:
    op = MOD_OPS[name]

    def build(cfg: TaskConfig) -> TaskData:
        p = cfg.p
        ys = np.arange(1 if op.nonzero_y else 0, p)
        x, y = (a.ravel() for a in np.meshgrid(np.arange(p), ys, indexing="ij"))
        c = op.fn(x.astype(np.int64), y.astype(np.int64), p)
        inputs = torch.from_numpy(np.stack([x, y, np.full_like(x, p)], axis=1)).long()
        train_idx, test_idx = random_split(len(inputs), cfg.frac, cfg.split_seed)
        return TaskData(name, inputs, torch.from_numpy(c).long(), train_idx, test_idx, d_vocab=p + 1,
                        d_vocab_out=p, n_ctx=3, structure={"kind": "modular", "op": op.expr, "p": p})

    return build


def kadd(cfg: TaskConfig) -> TaskData:
    """x1 + ... + xk mod p over all p^k tuples."""
    p, k = cfg.p, cfg.k
    tuples = np.array(list(itertools.product(range(p), repeat=k)), dtype=np.int64)
    inputs = torch.from_numpy(np.concatenate([tuples, np.full((len(tuples), 1), p)], axis=1))
    train_idx, test_idx = random_split(len(inputs), cfg.frac, cfg.split_seed)
    return TaskData("kadd", inputs, torch.from_numpy(tuples.sum(1) % p), train_idx, test_idx, d_vocab=p + 1,
                    d_vocab_out=p, n_ctx=k + 1, structure={"kind": "modular", "op": "+".join(f"x{i+1}" for i in range(k)),
                                                         "p": p, "k": k})


# --- group operations (Power et al. 2022): every element an opaque token ------------------------------------


def group_task(name: str, expr: str) -> Callable[[TaskConfig], TaskData]:
    """x*y, x*y*x^-1 or x*y*x in `--group` (S5 by default) over all |G|^2 pairs; tokens [x, y, '='], '=' = |G|.

    Token i is element i of `training.tasks.groups.get_group(group)` (lexicographic image arrays, identity first);
    `structure["elements"]` spells them in cycle notation.
    """

    def build(cfg: TaskConfig) -> TaskData:
        G = get_group(cfg.group)
        n = G.order
        x, y = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
        c = GROUP_OPS[expr](G, x, y)
        inputs = torch.from_numpy(np.stack([x, y, np.full_like(x, n)], axis=1)).long()
        train_idx, test_idx = random_split(len(inputs), cfg.frac, cfg.split_seed)
        structure = {"kind": "group", "group": G.name, "op": expr, "n": n, "degree": G.degree, "elements": G.names}
        return TaskData(name, inputs, torch.from_numpy(np.asarray(c)).long(), train_idx, test_idx, d_vocab=n + 1,
                        d_vocab_out=n, n_ctx=3, structure=structure)

    return build
