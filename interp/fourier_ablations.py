"""Ablations in Fourier space and logit periodicity (Nanda et al. 2023, "Progress measures for grokking").

    restricted loss   keep only the key-frequency directions cos/sin(w_k(a+b)) of the neuron activations, plus their
                      mean (test pairs); excluded loss: remove them (training pairs)
    logit periodicity share of logit variance explained by sum_k a_k cos(w_k(a+b-c))

Losses are computed per row in float64 from float32 logits (`row_losses`), since a grokked model's losses lie below
float32's resolution of log(sum exp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from interp.fourier_basis import dft_tables
from interp.grid import GridActivations
from interp.modular import ModularStructure


def key_directions(s: ModularStructure, freqs: list[int]) -> torch.Tensor:
    """[n*n, r] orthonormal basis of cos(w_k answer), sin(w_k answer) over the grid for k in `freqs`, made
    orthogonal to the constant (for x+y: the directions cos/sin(w_k(a+b)) of Nanda et al.)."""
    if not freqs:
        return torch.zeros(s.grid_size, 0)
    ans = s.answer.double()
    cols = [torch.ones_like(ans)]
    for k in freqs:
        w = 2 * math.pi * k / s.n
        cols.append(torch.cos(w * ans))
        if 2 * k != s.n:
            cols.append(torch.sin(w * ans))
    q, r = torch.linalg.qr(torch.stack(cols, dim=1))
    keep = r.diagonal().abs() > 1e-8 * r.diagonal().abs().max()
    keep[0] = False  # drop the constant itself
    return q[:, keep].float()


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[C, R, V] logits, [R] labels -> [C, R] cross-entropy per row, in float64.

    Losses of grokked models reach 1e-7, below float32's resolution of log(sum exp). With m the row maximum,
    loss = (m - x_label) + log1p(sum over the other entries of exp(x - m)): each term is exact in float32 and
    log1p keeps the tiny ones, so this matches a float64 log-softmax at a fraction of its cost.
    """
    top, arg = logits.max(-1, keepdim=True)
    # exp(-80) is still a normal float32; below it the terms cannot matter, and denormals are ~50x slower
    rest = (logits - top).clamp_(min=-80.0).exp_().scatter_(-1, arg, 0.0).sum(-1)
    picked = logits.gather(-1, labels.expand(*logits.shape[:-1])[..., None])
    return (top - picked).squeeze(-1).double() + torch.log1p(rest.double())


def _mean_over(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[C, R] per-row values -> [C] mean over the rows in `mask` (NaN when there are none)."""
    n = int(mask.sum())
    if n == 0:
        return torch.full((rows.shape[0],), float("nan"), dtype=torch.float64)
    return (rows * mask).sum(1) / n


def cached_key_directions(s: ModularStructure, freqs: list[int]) -> torch.Tensor:
    key = ("key_directions", tuple(freqs))
    if key not in s.cache:
        s.cache[key] = key_directions(s, freqs)
    return s.cache[key]


@dataclass
class Ablations:
    """[C] losses: the model's own on the grid's train and test pairs, restricted (key frequencies only) on the
    test pairs, excluded (key frequencies removed) on the train pairs."""

    train_loss: torch.Tensor
    test_loss: torch.Tensor
    restricted_loss: torch.Tensor
    excluded_loss: torch.Tensor


def fourier_ablations(ga: GridActivations, s: ModularStructure, freqs: list[int]) -> Ablations:
    """Restricted and excluded loss (Nanda et al. 2023, section 5.1) for key frequencies `freqs`.

    The neuron activations' components along the key directions (`key_directions`) are kept (restricted: plus
    their mean over the grid, with the rest of the logits replaced by their grid mean) or removed (excluded: the
    rest of the model left as it is).
    """
    Q = cached_key_directions(s, freqs)  # [G, r]
    coef = Q.T @ ga.acts  # [C, r, d_mlp]
    if ga.linear:
        return linear_ablations(coef, ga.logits, ga.W_L, s, freqs)
    train_rows, test_rows = _split_rows(s)
    C = ga.acts.shape[0]
    approx = ga.acts.mean(1, keepdim=True) + Q @ coef
    restricted = torch.stack([ga.finish(c, approx[c], ga.resid[c].mean(0, keepdim=True)) for c in range(C)])
    restricted += ga.logits.mean(1, keepdim=True) - restricted.mean(1, keepdim=True)
    excluded = torch.stack([ga.finish(c, ga.acts[c, train_rows] - Q[train_rows] @ coef[c], ga.resid[c, train_rows])
                            for c in range(C)])
    return _ablations(ga.logits, restricted.index_select(1, test_rows), excluded, s)


def linear_ablations(coef: torch.Tensor, logits: torch.Tensor, W_L: torch.Tensor, s: ModularStructure,
                     freqs: list[int]) -> Ablations:
    """`fourier_ablations` when the logits are linear in the neurons, from coef = Q^T acts [C, r, d_mlp] alone."""
    Q = cached_key_directions(s, freqs)
    train_rows, test_rows = _split_rows(s)
    key_out = coef @ W_L.transpose(1, 2)  # [C, r, V]: what the key components add to the logits
    restricted = torch.baddbmm(logits.mean(1, keepdim=True), Q[test_rows].expand(len(coef), -1, -1), key_out)
    excluded = logits.index_select(1, train_rows) - Q[train_rows] @ key_out
    return _ablations(logits, restricted, excluded, s)


def _ablations(logits: torch.Tensor, restricted_test: torch.Tensor, excluded_train: torch.Tensor,
               s: ModularStructure) -> Ablations:
    train_rows, test_rows = _split_rows(s)
    full, y = row_losses(logits, s.labels), s.labels
    return Ablations(_mean_over(full, s.train), _mean_over(full, ~s.train),
                     _mean(row_losses(restricted_test, y[test_rows])), _mean(row_losses(excluded_train, y[train_rows])))


def _split_rows(s: ModularStructure) -> tuple[torch.Tensor, torch.Tensor]:
    if "split_rows" not in s.cache:
        s.cache["split_rows"] = (s.train.nonzero().flatten(), (~s.train).nonzero().flatten())
    return s.cache["split_rows"]


def _mean(rows: torch.Tensor) -> torch.Tensor:
    return rows.mean(1) if rows.shape[1] else torch.full((rows.shape[0],), float("nan"), dtype=torch.float64)


def logit_periodicity(logits: torch.Tensor, s: ModularStructure) -> torch.Tensor:
    """Share of logit variance explained by cos(w_k(answer - c)), per frequency: [C, n // 2].

    logits: [C, n*n, d_vocab_out]. Only the classes of group elements are used (for x*y, x/y class 0 is left
    out); the logits are centred over classes for each input (softmax ignores that offset) and over inputs for
    each class. The terms for different k are orthogonal, so the share of sum_k a_k cos(w_k(a+b-c)) with the
    best a_k over a set K of frequencies is the sum of these entries over K.
    """
    C, G, V = logits.shape
    n = s.n
    L = logits if V == n and s.group == "additive" else logits[:, :, s.elements]
    # everything from three passes over L: sums grouped by answer, row sums and the sum of squares
    by_answer = _group_sums(L, s.answer, n).double()  # [C, answer, c]
    row_sum = L.sum(2, dtype=torch.float64)  # [C, G]
    squares = torch.linalg.vecdot(L, L).sum(1, dtype=torch.float64)  # short float32 dots, summed in float64
    by_answer -= by_answer.sum(2, keepdim=True) / n  # centred over classes for each input
    col = by_answer.sum(1) / G  # [C, c], class means over inputs (of the class-centred logits)
    total = squares - row_sum.square().sum(1) / n - G * col.square().sum(1)
    counts = torch.bincount(s.answer, minlength=n).double()
    by_answer -= counts[:, None] * col[:, None, :]  # centred over inputs too
    diff = (torch.arange(n)[:, None] - torch.arange(n)[None]) % n  # answer - c
    along = torch.zeros(C, n, dtype=torch.float64).index_add_(1, diff.flatten(), by_answer.flatten(1))
    cos, _ = dft_tables(n)
    proj = along @ cos.T  # [C, n // 2]: <L, cos(w_k(answer - c))>
    norm2 = G * (cos**2).sum(1)
    return proj**2 / norm2 / total.clamp_min(1e-300)[:, None]


def _group_sums(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """[C, G, D] -> [C, n, D]: sums of the rows sharing each value of `index` [G]."""
    out = torch.zeros(x.shape[0], n, x.shape[2], dtype=x.dtype)
    return out.index_add_(1, index, x)
