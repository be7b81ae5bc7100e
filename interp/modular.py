"""Which cyclic group a modular-arithmetic run is analysed in, and the full operand grid in that group's order.

The Fourier probes need the operands laid out along a cyclic group Z_n, so that "frequency k" means the
character x -> exp(2 pi i k x / n) of that group:

- x+y, x-y (and x1+x2): the additive group Z_p. Token t is the group element t; the answer is i+j or i-j.
- x*y, x/y (p prime): the multiplicative group Z_p^* = {1, ..., p-1}, cyclic of order p-1. With a primitive
  root g, token g^i is group element i of Z_(p-1), and x*y, x/y become i+j, i-j mod p-1 (the observation that
  x/y mod 97 behaves like x-y mod 96). Token 0 is not in the group: pairs with a 0 operand and the output
  class 0 are left out of the grid.
- every other binary operation (x^2+y^2, x^3+xy, "x/y if y odd else x-y", ...): Z_p with the token values as
  group elements. These are not group operations, so the trig algorithm of x+y is not expected; the probes
  still run, and logit periodicity is measured against the true answer, cos(w_k(answer - c)).

`modular_structure(data)` builds it from a run's `TaskData`; `additive_structure(p)` is the bare Z_p layout
for a model on its own (no split, answer a+b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from training.errors import GrokscopeError
from training.tasks.data import TaskData
from training.tasks.specs import is_prime


class NotModularError(GrokscopeError, ValueError):
    """The run is not a binary modular-arithmetic task the Fourier analysis can lay out on a cyclic group."""


ADDITIVE_GROUP_OPS = {"x+y": "i+j", "x-y": "i-j", "x1+x2": "i+j"}
MULTIPLICATIVE_GROUP_OPS = {"x*y": "i+j", "x/y": "i-j"}


@dataclass
class ModularStructure:
    """The operand grid of a binary modular operation, in the order of the cyclic group Z_n it is analysed in.

    Attributes:
        op: the operation, e.g. "x+y"; p: the modulus.
        group: "additive" (Z_p) or "multiplicative" (Z_p^* = Z_(p-1) through the primitive root `generator`).
        n: the group order (p or p-1).
        generator: primitive root g for the multiplicative group (token of element i = g^i mod p), else None.
        group_law: "i+j" or "i-j" when the operation is the group operation, None otherwise.
        elements: [n] long, the token of group element i.
        tokens: [n*n, 3] long, the inputs [elements[i], elements[j], '='] in row-major (i, j) order.
        answer: [n*n] long, group element of the correct output of pair (i, j).
        labels: [n*n] long, the correct output class (token) of pair (i, j).
        train: [n*n] bool, pair (i, j) is in the training split (all False without a split).
        rows: [n*n] long, index of pair (i, j) in `TaskData.inputs` (-1 without data).
        description: one line saying what is analysed in which group.
    """

    op: str
    p: int
    group: str
    n: int
    generator: int | None
    group_law: str | None
    elements: torch.Tensor
    tokens: torch.Tensor
    answer: torch.Tensor
    labels: torch.Tensor
    train: torch.Tensor
    rows: torch.Tensor
    description: str
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # derived tables the probes reuse

    @property
    def grid_size(self) -> int:
        return self.n * self.n

    def to_dict(self) -> dict:
        return {"op": self.op, "p": self.p, "group": self.group, "n": self.n, "generator": self.generator,
                "group_law": self.group_law, "description": self.description,
                "left_out_tokens": [] if self.group == "additive" else [0]}


def primitive_root(p: int) -> int:
    """Smallest generator of Z_p^* (p prime): g with g^((p-1)/q) != 1 for every prime q dividing p-1."""
    n, factors, q = p - 1, set(), 2
    m = n
    while q * q <= m:
        while m % q == 0:
            factors.add(q)
            m //= q
        q += 1
    if m > 1:
        factors.add(m)
    return next(g for g in range(1, p) if all(pow(g, n // q, p) != 1 for q in factors))


def _layout(p: int, group: str, generator: int | None):
    """Group elements' tokens, the grid inputs [n*n, 3] and the (i, j) of each grid row."""
    n = p - 1 if group == "multiplicative" else p
    if group == "multiplicative":
        elements = torch.tensor([pow(generator, i, p) for i in range(n)], dtype=torch.long)
    else:
        elements = torch.arange(n)
    i, j = (t.reshape(-1) for t in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    tokens = torch.stack([elements[i], elements[j], torch.full_like(i, p)], dim=1)
    return n, elements, tokens, i, j


def additive_structure(p: int, op: str = "x+y") -> ModularStructure:
    """Z_p layout for a model on its own: answer a+b (or a-b for op "x-y"), no split."""
    law = ADDITIVE_GROUP_OPS.get(op, "i+j")
    n, elements, tokens, i, j = _layout(p, "additive", None)
    answer = (i + j) % n if law == "i+j" else (i - j) % n
    return ModularStructure(op, p, "additive", n, None, law, elements, tokens, answer, elements[answer],
                            torch.zeros(n * n, dtype=torch.bool), torch.full((n * n,), -1, dtype=torch.long),
                            f"{op} mod {p} over the additive group Z_{p} (tokens are group elements)")


def modular_structure(data: TaskData) -> ModularStructure:
    """The grid of `data` (a binary modular task) in the group it is analysed in; NotModularError otherwise."""
    s = data.structure or {}
    if s.get("kind") != "modular":
        raise NotModularError(f"task '{data.name}' is not a modular-arithmetic task (structure kind "
                              f"'{s.get('kind', 'none')}'); the Fourier analysis needs a mod-p task such as "
                              "add, sub, mul or div")
    op, p = s["op"], int(s["p"])
    if data.n_ctx != 3 or data.d_vocab != p + 1:
        raise NotModularError(f"task '{data.name}' ({op}) has {data.n_ctx - 1} operands; the Fourier analysis "
                              "handles binary operations [a, b, =]")
    if op in MULTIPLICATIVE_GROUP_OPS:
        if not is_prime(p):
            raise NotModularError(f"{op} mod {p}: {p} is not prime, so the nonzero residues do not form a cyclic "
                                  "group; the Fourier analysis of x*y and x/y needs a prime modulus")
        group, generator, law = "multiplicative", primitive_root(p), MULTIPLICATIVE_GROUP_OPS[op]
        describe = (f"{op} mod {p} over the multiplicative group Z_{p}^* = Z_{p - 1}: token {generator}^i is "
                    f"element i ({generator} is a primitive root), so {op} is {law} mod {p - 1}; pairs with a 0 "
                    "operand and output 0 are left out")
    else:
        group, generator, law = "additive", None, ADDITIVE_GROUP_OPS.get(op)
        describe = (f"{op} mod {p} over the additive group Z_{p} (tokens are group elements)" if law else
                    f"{op} mod {p}, laid out over Z_{p} by token value ({op} is not a group operation there, "
                    "so periodicity is measured against the true answer)")
    n, elements, tokens, i, j = _layout(p, group, generator)

    # where each grid pair sits in the task's table, and its label and split
    lookup = np.full((p + 1, p + 1), -1, dtype=np.int64)
    inputs = data.inputs.numpy()
    lookup[inputs[:, 0], inputs[:, 1]] = np.arange(len(inputs))
    rows = torch.from_numpy(lookup[tokens[:, 0].numpy(), tokens[:, 1].numpy()])
    if (rows < 0).any():
        raise NotModularError(f"task '{data.name}' ({op}) does not define every operand pair of its group")
    labels = data.labels[rows]
    element_of = torch.full((p,), -1, dtype=torch.long)
    element_of[elements] = torch.arange(n)
    answer = element_of[labels]
    if (answer < 0).any():
        raise NotModularError(f"task '{data.name}' ({op}) has outputs outside the group {describe}")
    train = torch.zeros(len(inputs), dtype=torch.bool)
    train[data.train_idx] = True
    return ModularStructure(op, p, group, n, generator, law, elements, tokens, answer, labels, train[rows], rows,
                            describe)
