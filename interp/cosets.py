"""Coset probe: does a set of per-element vectors (rows of W_U, W_E, ...) cluster by the cosets of a subgroup?

Power et al. (2022) saw the S5 output layer fall into clusters that were cosets of <(0 3)(1 4), (1 2)(3 4)> or a
conjugate; Chughtai et al. (2023) and Stander et al. (2024) found a different subgroup per run. Here every
proper nontrivial subgroup H of G, with its left cosets gH and its right cosets Hg (once for a normal H), is a
candidate partition of the rows, and each is scored two ways:

- `ari`: the adjusted Rand index between the coset partition and a Ward clustering of the rows into as many
  clusters — "the rows fall into clusters and the clusters are these cosets". It ranks the candidates: a
  refinement (cosets of K < H) or a coarsening (cosets of L > H) of the clusters agrees less than the clusters do.
- `score`: how much of the rows' variance the cosets explain, chance-corrected: (R^2 - E[R^2]) / (1 - E[R^2]) with
  R^2 = 1 - within/total and E[R^2] = (k-1)/(n-1) its mean over random partitions into k equal blocks. 1 = every
  row sits on its coset's mean; 0 = no better than a random partition of the same shape. (`f`, the ANOVA ratio of
  between to within variance per degree of freedom, is kept beside it.)

Significance comes from a permutation null: the rows are shuffled `n_null` times and the largest `ari` over all
candidates recorded; the best candidate counts as structure when its `ari` beats the null (p <= alpha) and is at
least `min_ari`.

All functions take rows X [n, d] (n = |G|, row i belongs to element i in token order) or a stack [T, n, d].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage

from interp.groups import Group, Subgroup, coset_labels, subgroups

MIN_ARI = 0.5
ALPHA = 0.05


@dataclass(eq=False)
class Partition:
    """A candidate: the left or right cosets of one subgroup ("both" for a normal one)."""

    subgroup: Subgroup
    side: str
    labels: np.ndarray  # [n] coset of each element
    n_cosets: int

    def describe(self) -> str:
        side = "cosets" if self.side == "both" else f"{self.side} cosets"
        return f"{side} of {self.subgroup.label()}"


@lru_cache(maxsize=8)
def _partitions(G: Group) -> tuple[Partition, ...]:
    out = []
    for H in subgroups(G):
        if H.order in (1, G.order):
            continue
        for side in (("both",) if H.normal else ("left", "right")):
            labels = coset_labels(G, H, "left" if side == "both" else side)
            out.append(Partition(H, side, labels, int(labels.max()) + 1))
    return tuple(out)


def coset_partitions(G: Group) -> list[Partition]:
    """Every candidate partition of G: left and right cosets of each proper nontrivial subgroup (S5: 300)."""
    return list(_partitions(G))


class _Scorer:
    """Between-coset sums of squares of every candidate at once, as one sparse product.

    Row r of Q is the indicator of one coset divided by sqrt(its size), so ||Q_r X||^2 is that coset's share of
    the between-coset sum of squares; the rows of a partition are contiguous and summed with reduceat.
    """

    def __init__(self, G: Group):
        parts = coset_partitions(G)
        self.n = G.order
        self.k = np.array([p.n_cosets for p in parts], dtype=np.float64)
        rows, cols, vals, starts, r0 = [], [], [], [], 0
        for p in parts:
            starts.append(r0)
            size = self.n / p.n_cosets
            rows.append(r0 + p.labels)
            cols.append(np.arange(self.n))
            vals.append(np.full(self.n, 1 / np.sqrt(size)))
            r0 += p.n_cosets
        self.Q = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r0, self.n))
        self.starts = np.array(starts)

    def between(self, Xc: np.ndarray) -> np.ndarray:
        """Xc [n, m] centred -> between-coset sum of squares [P] of every partition."""
        S = self.Q @ Xc
        return np.add.reduceat((S * S).sum(1), self.starts)


@lru_cache(maxsize=8)
def _scorer(G: Group) -> _Scorer:
    return _Scorer(G)


def _reduce(X: np.ndarray, pcs: int = 0) -> np.ndarray:
    """Centre the rows; with pcs > 0 keep their top `pcs` principal components (the view of a PCA plot). Wide
    matrices are replaced by an orthonormal-basis equivalent of width <= n (same distances)."""
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(0)
    if pcs or Xc.shape[1] > Xc.shape[0]:
        U, S, _ = np.linalg.svd(Xc, full_matrices=False)
        k = min(pcs, len(S)) if pcs else len(S)
        Xc = U[:, :k] * S[:k]
    return Xc


def _stats(B: np.ndarray, total: float, k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r2, score, f) from between sums of squares B [..., P]."""
    total = max(total, 1e-300)
    r2 = np.clip(B / total, 0.0, 1.0)
    expected = (k - 1) / (n - 1)
    score = (r2 - expected) / (1 - expected)
    within = np.maximum(total - B, 1e-9 * total)  # an exact fit still ranks coarse partitions first
    f = (B / (k - 1)) / (within / (n - k))
    return r2, score, f


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie): 1 identical, ~0 unrelated."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    return float(_ari_many(a[None], int(a.max()) + 1, b, int(b.max()) + 1)[0])


def _ari_many(labels: np.ndarray, ka: int, cut: np.ndarray, kb: int) -> np.ndarray:
    """ARI of each row of labels [m, n] (values < ka) against one labeling cut [n] (values < kb): [m]."""
    m, n = labels.shape
    cells = (labels * kb + cut[None]) + (np.arange(m) * ka * kb)[:, None]
    table = np.bincount(cells.ravel(), minlength=m * ka * kb).reshape(m, ka, kb).astype(np.float64)

    def pairs(x):
        return (x * (x - 1) / 2).sum(-1)

    index = pairs(table.reshape(m, -1))
    rows, cols, total = pairs(table.sum(2)), pairs(table.sum(1)), n * (n - 1) / 2
    expected = rows * cols / total
    top = (rows + cols) / 2 - expected
    return np.where(top > 0, (index - expected) / np.where(top > 0, top, 1.0), 1.0)


class _Clusters:
    """Ward clustering of one matrix's rows, cut at every coset count, and the ARI of any relabelling of the
    candidates against it (a row shuffle of X is a relabelling of the candidates)."""

    def __init__(self, Xc: np.ndarray, G: Group):
        parts = coset_partitions(G)
        Z = linkage(Xc, method="ward")
        self.by_k: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for k in sorted({p.n_cosets for p in parts}):
            idx = np.array([i for i, p in enumerate(parts) if p.n_cosets == k])
            cut = fcluster(Z, k, criterion="maxclust") - 1
            self.by_k[k] = (idx, np.stack([parts[i].labels for i in idx]), cut)
        self.P = len(parts)

    def ari(self, perm: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(self.P)
        for k, (idx, labels, cut) in self.by_k.items():
            out[idx] = _ari_many(labels if perm is None else labels[:, perm], k, cut, int(cut.max()) + 1)
        return out


def _best(ari: np.ndarray, G: Group) -> int:
    """Highest ARI; a tie goes to the larger subgroup (the coarser partition)."""
    orders = np.array([p.subgroup.order for p in coset_partitions(G)])
    return int(np.lexsort((-orders, -np.round(ari, 12)))[0])


def _null_ari(clusters: _Clusters, n: int, n_null: int, rng: np.random.Generator) -> np.ndarray:
    return np.array([clusters.ari(rng.permutation(n)).max() for _ in range(n_null)])


@dataclass
class CosetFit:
    """Best coset partition of one matrix's rows.

    Attributes:
        structure: the best candidate is significant (p <= alpha) and its ari >= min_ari.
        best: index into `coset_partitions(G)` (the top by ari, reported even without structure).
        ari, score, r2, f: [P] arrays over all candidates.
        null_ari: [n_null] largest ari over all candidates for each row shuffle.
        p_value: (1 + #{null_ari >= ari[best]}) / (1 + n_null).
    """

    group: Group
    structure: bool
    best: int
    ari: np.ndarray
    score: np.ndarray
    r2: np.ndarray
    f: np.ndarray
    null_ari: np.ndarray
    p_value: float
    min_ari: float = MIN_ARI
    alpha: float = ALPHA

    @property
    def partition(self) -> Partition:
        return coset_partitions(self.group)[self.best]

    def ranking(self, top: int = 10) -> list[int]:
        orders = np.array([p.subgroup.order for p in coset_partitions(self.group)])
        return [int(i) for i in np.lexsort((-orders, -np.round(self.ari, 12)))[:top]]

    def describe(self, i: int | None = None) -> dict[str, Any]:
        """JSON-able record of candidate i (the best by default)."""
        i = self.best if i is None else i
        p = coset_partitions(self.group)[i]
        H = p.subgroup
        return {"partition": i, "subgroup": H.label(), "generators": H.generator_names, "order": H.order,
                "side": p.side, "n_cosets": p.n_cosets, "conj_class": H.conj_class, "class_size": H.class_size,
                "subgroup_index": H.index, "normal": H.normal, "ari": float(self.ari[i]),
                "score": float(self.score[i]), "r2": float(self.r2[i]), "f": float(self.f[i])}

    def best_in_class(self, conj_class: int) -> int:
        """The best candidate among the cosets (either side) of one conjugacy class of subgroups."""
        idx = [i for i, p in enumerate(coset_partitions(self.group)) if p.subgroup.conj_class == conj_class]
        return idx[int(np.argmax(self.ari[idx]))]

    def summary(self, top: int = 10) -> dict[str, Any]:
        classes = sorted({p.subgroup.conj_class for p in coset_partitions(self.group)})
        return {"structure": self.structure, "best": self.describe(), "p_value": self.p_value,
                "null_ari_max": float(self.null_ari.max()) if len(self.null_ari) else None,
                "min_ari": self.min_ari, "alpha": self.alpha,
                "top": [self.describe(i) for i in self.ranking(top)],
                "by_class": [self.describe(self.best_in_class(c)) for c in classes]}


def fit_cosets(X: np.ndarray, G: Group, n_null: int = 99, alpha: float = ALPHA, min_ari: float = MIN_ARI,
               seed: int = 0, pcs: int = 0) -> CosetFit:
    """Score every coset partition of G on the rows of X [n, d] and pick the best (see the module docstring).

    pcs > 0 scores the rows' top `pcs` principal components only (what a PCA plot of them shows)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != G.order:
        raise ValueError(f"expected rows [{G.order}, d] for {G.name}, got {tuple(X.shape)}")
    scorer = _scorer(G)
    Xc = _reduce(X, pcs)
    total = float((Xc * Xc).sum())
    r2, score, f = _stats(scorer.between(Xc), total, scorer.k, G.order)
    clusters = _Clusters(Xc, G)
    ari = clusters.ari()
    best = _best(ari, G)
    null = _null_ari(clusters, G.order, n_null, np.random.default_rng(seed))
    p_value = float((1 + (null >= ari[best]).sum()) / (1 + n_null))
    structure = bool(p_value <= alpha and ari[best] >= min_ari and total > 0)
    return CosetFit(G, structure, best, ari, score, r2, f, null, p_value, min_ari, alpha)


@dataclass
class CosetTimeline:
    """The coset structure of one matrix across checkpoints.

    Attributes:
        steps: [T]; ari, score: [T, P] every candidate at every step; null_ari: [T] largest null ari per step
        (max over shuffles); top: [T] best candidate per step; significant: [T, P] ari > null_ari and >= min_ari.
    """

    steps: np.ndarray
    ari: np.ndarray
    score: np.ndarray
    null_ari: np.ndarray
    top: np.ndarray
    min_ari: float = MIN_ARI
    significant: np.ndarray = field(init=False)

    def __post_init__(self):
        self.significant = (self.ari > self.null_ari[:, None]) & (self.ari >= self.min_ari)

    def appears_at(self, partition: int) -> int | None:
        """First step from which `partition` is significant at every later checkpoint (None if not at the end)."""
        return self._from(self.significant[:, partition])

    def top_from(self, partition: int) -> int | None:
        """First step from which `partition` is the top candidate at every later checkpoint."""
        return self._from(self.top == partition)

    def _from(self, ok: np.ndarray) -> int | None:
        if not ok[-1]:
            return None
        bad = np.flatnonzero(~ok)
        return int(self.steps[bad[-1] + 1]) if len(bad) else int(self.steps[0])


def coset_timeline(Xs: np.ndarray, steps, G: Group, n_null: int = 9, min_ari: float = MIN_ARI,
                   seed: int = 0, pcs: int = 0) -> CosetTimeline:
    """Scores of every candidate on a stack of row matrices Xs [T, n, d] (one per checkpoint)."""
    scorer = _scorer(G)
    rng = np.random.default_rng(seed)
    aris, scores, nulls, tops = [], [], [], []
    for X in Xs:
        Xc = _reduce(X, pcs)
        total = float((Xc * Xc).sum())
        _, score, _ = _stats(scorer.between(Xc), total, scorer.k, G.order)
        clusters = _Clusters(Xc, G)
        ari = clusters.ari()
        aris.append(ari)
        scores.append(score)
        tops.append(_best(ari, G))
        nulls.append(_null_ari(clusters, G.order, n_null, rng).max() if n_null else -1.0)
    return CosetTimeline(np.asarray(steps), np.array(aris), np.array(scores), np.array(nulls), np.array(tops), min_ari)


# --- rows of a group task's weights -------------------------------------------------------------------------


def group_rows(model: Any, n: int) -> dict[str, np.ndarray]:
    """The per-element row matrices of a group-task model (any of ours, or a TransformerBridge): {"W_U": [n, d],
    "W_E": [n, d]}, or with one embedding table per operand (the MLP model) "W_E_x", "W_E_y", ..."""
    from interp.grid import as_model

    model = as_model(model)
    out = {"W_U": model.W_U.detach().cpu().double().numpy().T[:n]}
    tables = model.embed_tables.detach().cpu().double().numpy()  # [n_tables, d_vocab, d_model]
    if len(tables) == 1:
        out["W_E"] = tables[0, :n]
    else:
        for i, name in zip(range(len(tables)), ("x", "y", "z")):
            out[f"W_E_{name}"] = tables[i, :n]
    return out
