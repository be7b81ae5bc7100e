"""Finite permutation groups for the group tasks: S_n, A_n, D_n and C_n from one definition.

A group is a set of permutations of {0, ..., degree-1}, each stored as its image array (`perm[k]` is where k goes),
sorted lexicographically. That order is the token order of the group tasks, so it is fixed by the group's name
alone: element 0 is always the identity. Products compose right to left, as in cycle notation:
`(a * b)(k) = a(b(k))`, so `mul(a, b)` applies b first. For S5, `(0 1) * (1 2) = (0 1 2)`.

The analysis side (subgroups, conjugacy classes, cosets, characters) lives in `interp.groups`; this module only
holds what training needs: elements, the multiplication table and inverses.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from training.errors import ConfigError

MAX_ORDER = 1000  # the group tasks use every ordered pair: 1e6 examples at most


@dataclass(eq=False)
class Group:
    """A permutation group.

    Attributes:
        name: e.g. "S5", "A4", "D6", "C7".
        perms: [order, degree] int64, image arrays in lexicographic order (identity first).
    """

    name: str
    perms: np.ndarray

    def __post_init__(self):
        self.perms = np.asarray(self.perms, dtype=np.int64)
        codes = self._codes(self.perms)
        order = np.argsort(codes)
        self.perms, self.codes = self.perms[order], codes[order]
        if len(np.unique(self.codes)) != len(self.codes):
            raise ValueError(f"{self.name}: repeated elements")

    def __repr__(self) -> str:
        return f"Group({self.name}, order {self.order}, degree {self.degree})"

    def __len__(self) -> int:
        return self.order

    @property
    def order(self) -> int:
        return len(self.perms)

    @property
    def degree(self) -> int:
        return self.perms.shape[1]

    def _codes(self, perms: np.ndarray) -> np.ndarray:
        """Base-`degree` number of each image array; sorting codes sorts the arrays lexicographically."""
        n = perms.shape[-1]
        return perms @ (n ** np.arange(n - 1, -1, -1, dtype=np.int64))

    def index_of(self, perms: np.ndarray) -> np.ndarray:
        """Element indices of image arrays [..., degree] (ValueError if one is not in the group)."""
        codes = self._codes(np.asarray(perms, dtype=np.int64))
        idx = np.searchsorted(self.codes, codes).clip(0, self.order - 1)
        if not np.array_equal(self.codes[idx], codes):
            raise ValueError(f"not an element of {self.name}")
        return idx

    @cached_property
    def table(self) -> np.ndarray:
        """[order, order] int64: table[a, b] = index of a * b (b applied first)."""
        return self.index_of(self.perms[:, self.perms])  # [a, b, k] = a(b(k))

    @cached_property
    def inverse(self) -> np.ndarray:
        """[order] int64: inverse[a] = index of a^-1."""
        inv = np.empty_like(self.perms)
        np.put_along_axis(inv, self.perms, np.arange(self.degree)[None].repeat(self.order, 0), axis=1)
        return self.index_of(inv)

    def mul(self, a: int, b: int) -> int:
        return int(self.table[a, b])

    # --- cycle notation --------------------------------------------------------------------------------------

    def cycles(self, i: int) -> list[tuple[int, ...]]:
        """Cycles of element i of length > 1, each starting at its smallest point."""
        p, seen, out = self.perms[i], set(), []
        for start in range(self.degree):
            if start in seen:
                continue
            cyc, k = [], start
            while k not in seen:
                seen.add(k)
                cyc.append(k)
                k = int(p[k])
            if len(cyc) > 1:
                out.append(tuple(cyc))
        return out

    def cycle_str(self, i: int) -> str:
        """Element i in cycle notation, "(0 3)(1 4)"; the identity is "()"."""
        return "".join("(" + " ".join(map(str, c)) + ")" for c in self.cycles(i)) or "()"

    @cached_property
    def names(self) -> list[str]:
        """Cycle notation of every element, in token order."""
        return [self.cycle_str(i) for i in range(self.order)]

    def element(self, text: str) -> int:
        """Index of an element written in cycle notation: "(0 3)(1 4)", "(0,3)(1,4)", "()" or "e"."""
        text = text.strip()
        p = list(range(self.degree))
        if text not in ("", "e", "()", "id"):
            cycles = re.findall(r"\(([^()]*)\)", text)
            if not cycles or re.sub(r"\([^()]*\)", "", text).strip():
                raise ValueError(f"cannot read '{text}' as cycle notation")
            for cyc in reversed(cycles):  # right to left, like the product
                pts = [int(t) for t in re.split(r"[,\s]+", cyc.strip()) if t]
                if any(not 0 <= k < self.degree for k in pts) or len(set(pts)) != len(pts):
                    raise ValueError(f"'{text}' is not a permutation of 0..{self.degree - 1}")
                step = {pts[j]: pts[(j + 1) % len(pts)] for j in range(len(pts))}
                p = [step.get(k, k) for k in p]
        return int(self.index_of(np.array(p)))

    def cycle_type(self, i: int) -> tuple[int, ...]:
        """Cycle lengths of element i, fixed points included, largest first: (2, 2, 1) for (0 3)(1 4) in S5."""
        lengths = [len(c) for c in self.cycles(i)]
        return tuple(sorted(lengths + [1] * (self.degree - sum(lengths)), reverse=True))


def parity(perms: np.ndarray) -> np.ndarray:
    """0 for even, 1 for odd permutations ([m, n] -> [m]), from the inversion count."""
    p = np.asarray(perms)
    i, j = np.triu_indices(p.shape[1], 1)
    return (p[:, i] > p[:, j]).sum(1) % 2


def symmetric(n: int) -> Group:
    """S_n: all n! permutations of n points."""
    return Group(f"S{n}", np.array(list(itertools.permutations(range(n)))))


def alternating(n: int) -> Group:
    """A_n: the n!/2 even permutations."""
    perms = np.array(list(itertools.permutations(range(n))))
    return Group(f"A{n}", perms[parity(perms) == 0])


def cyclic(n: int) -> Group:
    """C_n: the rotations k -> k + r (mod n) of n points."""
    k = np.arange(n)
    return Group(f"C{n}", np.stack([(k + r) % n for r in range(n)]))


def dihedral(n: int) -> Group:
    """D_n (order 2n): the symmetries of a regular n-gon acting on its vertices, k -> r +- k (mod n)."""
    k = np.arange(n)
    return Group(f"D{n}", np.stack([(r + s * k) % n for s in (1, -1) for r in range(n)]))


FAMILIES = {"S": (symmetric, 2), "A": (alternating, 3), "C": (cyclic, 2), "D": (dihedral, 3)}


def group_order(name: str) -> int:
    """The order of the group named "S5", "A5", "D59", "C113", ... without building it (ConfigError for an
    unknown or too large one). Cheap for any input: a hostile "S999999999" is refused without a factorial."""
    m = re.fullmatch(r"\s*([SACD])([0-9]{1,18})\s*", name or "")
    if not m:
        raise ConfigError(f"unknown group '{name}' (use S<n>, A<n>, D<n> or C<n>, e.g. S5, A5, D59, C113)")
    family, n = m.group(1), int(m.group(2))
    smallest = FAMILIES[family][1]
    if n < smallest:
        raise ConfigError(f"group '{name}': {family}<n> needs n >= {smallest}")
    if family in "SA" and n > 20:  # 21! is far beyond MAX_ORDER; no need to compute it
        order = math.inf
    else:
        order = {"S": math.factorial(n), "A": math.factorial(n) // 2, "C": n, "D": 2 * n}[family]
    if order > MAX_ORDER:
        shown = order if order != math.inf else f"{n}!" + ("/2" if family == "A" else "")
        raise ConfigError(f"group '{name}' has order {shown}; the group tasks take groups of order <= {MAX_ORDER}")
    return int(order)


@lru_cache(maxsize=16)
def get_group(name: str) -> Group:
    """The group named "S5", "A5", "D59", "C113", ... (ConfigError for an unknown or too large one)."""
    group_order(name)
    m = re.fullmatch(r"\s*([SACD])([0-9]+)\s*", name)
    return FAMILIES[m.group(1)][0](int(m.group(2)))


# --- the binary operations of the group tasks (Power et al. 2022) ---------------------------------------------

GROUP_OPS = {
    "x*y": lambda G, x, y: G.table[x, y],
    "x*y*x^-1": lambda G, x, y: G.table[G.table[x, y], G.inverse[x]],
    "x*y*x": lambda G, x, y: G.table[G.table[x, y], x],
}
