"""Fourier probes for modular arithmetic (Nanda et al. 2023, "Progress measures for grokking").

A model that groks x+y mod p embeds each token as cos/sin of a few key frequencies w_k = 2 pi k / p, multiplies
them in the MLP into cos(w_k(a+b)), sin(w_k(a+b)) and reads out logits ~ sum_k a_k cos(w_k(a+b-c)). The probes
here measure each piece, for one model or batched over a stack of checkpoints:

    basis           fourier_basis(n): orthonormal rows const, cos_1, sin_1, ..., (cos_{n/2} if n is even)
    weights         embedding_fourier_norms (W_E), neuron_logit_fourier_norms (W_L = W_U^T W_out), gini,
                    total_weight_norm
    neurons         neuron_transform: the 2-D transform of a neuron's activations over (a, b);
                    neuron_spectra: each neuron's share of variance in the {const, cos_k, sin_k}^2 block of
                    that transform, for every k; neuron_clusters: neurons with a share >= 0.85 at one k
    key frequencies key_frequencies(model): the frequencies with a neuron cluster (derived, never hard-coded)
    ablations       restricted loss (keep only the key-frequency directions cos/sin(w_k(a+b)) of the neuron
                    activations, plus their mean; test set) and excluded loss (remove them; training set)
    logits          logit_periodicity: share of logit variance explained by sum_k a_k cos(w_k(a+b-c))
    attention       mean attention from '=' to a, b and '='

Everything is laid out over the cyclic group of `interp.modular.ModularStructure` (Z_p for x+y, Z_(p-1) through
a primitive root for x*y and x/y). Notebook use:

    >>> run = interp.load_run("checkpoints/default")
    >>> model = run.model(run.steps[-1])
    >>> interp.fourier.key_frequencies(model, run)          # e.g. [4, 11, 17, 21]
    >>> probes = interp.fourier.probe(model, run)           # every probe at once, a FourierProbes

Frequency k is index k-1 in every per-frequency array ([..., n // 2]).

Neuron spectra never form the 2-D transform: for a real activation table A[i, j], the block of frequency k
holds the 2-D DFT entries X[f1, f2] with f1, f2 in {0, +-k}, and X[k, 0], X[0, k], X[k, k], X[k, -k] are the
1-D DFTs of A's row sums, column sums, sums along i+j and sums along i-j. Four O(n^2) reductions per neuron
replace the O(n^3) transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from interp.grid import (FAST_VIEWS, GridActivations, as_model, grid_activations, grid_summary, is_fast, is_linear,
                         stack_states, stacked_views, state_of, summarise)
from interp.constants import CLUSTER_THRESHOLD
from interp.modular import ModularStructure, additive_structure, modular_structure



# --- the basis ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FourierBasis:
    """Orthonormal real Fourier basis of Z_n.

    Attributes:
        n: group order.
        matrix: [n, n], row r is basis vector r evaluated at x = 0..n-1 (const, cos_1, sin_1, cos_2, ...).
        names: ["const", "cos 1", "sin 1", ...].
        freqs: [n] long, frequency of each row (0 for const).
    """

    n: int
    matrix: torch.Tensor
    names: tuple[str, ...]
    freqs: torch.Tensor


@lru_cache(maxsize=16)
def fourier_basis(n: int) -> FourierBasis:
    """const/sqrt(n), then sqrt(2/n) cos(2 pi k x/n) and sqrt(2/n) sin(2 pi k x/n) for k = 1..(n-1)//2, and for
    even n the alternating vector (-1)^x / sqrt(n) as "cos n/2"."""
    x = torch.arange(n, dtype=torch.float64)
    rows, names, freqs = [torch.ones(n) / math.sqrt(n)], ["const"], [0]
    for k in range(1, n // 2 + 1):
        w = 2 * math.pi * k / n
        if 2 * k == n:
            rows.append(torch.cos(w * x) / math.sqrt(n))
            names.append(f"cos {k}")
            freqs.append(k)
            continue
        rows += [torch.cos(w * x) * math.sqrt(2 / n), torch.sin(w * x) * math.sqrt(2 / n)]
        names += [f"cos {k}", f"sin {k}"]
        freqs += [k, k]
    return FourierBasis(n, torch.stack(rows).float(), tuple(names), torch.tensor(freqs))


def fourier_transform(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Coefficients of `x` in the Fourier basis along `dim` (x.shape[dim] = n); same shape as x."""
    F = fourier_basis(x.shape[dim]).matrix.to(x.dtype)
    return torch.movedim(torch.tensordot(F, torch.movedim(x, dim, 0), dims=([1], [0])), 0, dim)


def fourier_transform_2d(x: torch.Tensor, dims: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """2-D transform over two axes, e.g. a [p, p, d_mlp] activation table over (a, b)."""
    return fourier_transform(fourier_transform(x, dims[0]), dims[1])


def frequency_norms(component_norms: torch.Tensor) -> torch.Tensor:
    """[..., n] norms per basis row -> [..., n // 2] per frequency, sqrt(|cos_k|^2 + |sin_k|^2)."""
    n = component_norms.shape[-1]
    freqs = fourier_basis(n).freqs.to(component_norms.device)
    out = torch.zeros(*component_norms.shape[:-1], n // 2 + 1, dtype=component_norms.dtype)
    out.index_add_(-1, freqs, component_norms**2)
    return out[..., 1:].sqrt()


def gini(x: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of non-negative values over the last axis (Hurley & Rickard 2009): 0 = all equal,
    -> 1 = all mass on one entry. G = 1 - 2 sum_k (x_(k) / |x|_1) (N - k + 1/2) / N with x sorted ascending."""
    x = x.double().sort(dim=-1).values
    N = x.shape[-1]
    k = torch.arange(1, N + 1, dtype=torch.float64)
    total = x.sum(-1, keepdim=True).clamp_min(1e-300)
    return 1 - 2 * ((x / total) * (N - k + 0.5) / N).sum(-1)


# --- structure and weights ------------------------------------------------------------------------------------


def as_structure(model: torch.nn.Module, structure: Any = None) -> ModularStructure:
    """A ModularStructure from a structure, a TaskData, a Run (anything with `.data`), or None (Z_p, a+b)."""
    if isinstance(structure, ModularStructure):
        return structure
    if structure is None:
        return additive_structure(model.cfg.d_vocab_out)
    data = getattr(structure, "data", structure)
    return modular_structure(data)


def embedding_fourier_norms(embed: torch.Tensor, s: ModularStructure) -> torch.Tensor:
    """[C, n] norm of each Fourier component of the embedding rows of the group elements ('=' left out).

    embed: [C, d_vocab, d_embed] stacked `embed_matrix` views (W_E; the MLP model's per-operand tables side by side).
    """
    return fourier_transform(embed[:, s.elements], dim=1).norm(dim=-1)


def neuron_logit_fourier_norms(W_L: torch.Tensor, s: ModularStructure) -> torch.Tensor:
    """[C, n] norm of each Fourier component (over the output c) of W_L [C, d_vocab_out, d_mlp]."""
    return fourier_transform(W_L[:, s.elements], dim=1).norm(dim=-1)


def total_weight_norm(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """[C] sqrt of the sum of squares of every parameter."""
    return torch.stack([w.double().flatten(1).pow(2).sum(1) for w in weights.values()]).sum(0).sqrt()


# --- neurons ------------------------------------------------------------------------------------------------


def _dft_tables(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(2 pi k t / n), sin(...) for k = 1..n//2 (rows) and t = 0..n-1 (columns)."""
    k = torch.arange(1, n // 2 + 1, dtype=torch.float64)[:, None]
    t = torch.arange(n, dtype=torch.float64)[None]
    return torch.cos(2 * math.pi * k * t / n), torch.sin(2 * math.pi * k * t / n)


def _group_sums(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """[C, G, D] -> [C, n, D]: sums of the rows sharing each value of `index` [G]."""
    out = torch.zeros(x.shape[0], n, x.shape[2], dtype=x.dtype)
    return out.index_add_(1, index, x)


def neuron_spectra(acts: torch.Tensor, s: ModularStructure) -> torch.Tensor:
    """Share of each neuron's variance over the grid in the {const, cos_k, sin_k}^2 block, per frequency k.

    acts: [C, n*n, d_mlp] on the grid of `s`. Returns [C, n // 2, d_mlp] (frequency k at index k-1); a neuron
    that is constant over the grid gets 0 everywhere.
    """
    marginals, squares, _ = summarise(acts, s)
    return spectra_from_marginals(marginals, squares, s)


def spectra_from_marginals(marginals: torch.Tensor, squares: torch.Tensor, s: ModularStructure) -> torch.Tensor:
    """`neuron_spectra` from the activation sums of a `GridSummary`: marginals [C, 4, n, d_mlp] (sums over j,
    over i, along i+j, along i-j) and squares [C, d_mlp]."""
    n, G = s.n, s.grid_size
    marginals = marginals.double()
    cos, sin = _dft_tables(n)
    power = torch.einsum("kt,cqtm->cqkm", cos, marginals) ** 2 + torch.einsum("kt,cqtm->cqkm", sin, marginals) ** 2
    weight = torch.full((4, n // 2), 2.0 / n**2, dtype=torch.float64)
    if n % 2 == 0:  # at k = n/2, -k = k: the block is {0, k}^2 and X[k, k] = X[k, -k] must count once
        weight[:, -1] = torch.tensor([1.0, 1.0, 1.0, 0.0]) / n**2
    energy = torch.einsum("qk,cqkm->ckm", weight, power)
    mean = marginals[:, 0].sum(1) / G
    total = squares - G * mean**2  # centred sum of squares
    alive = total > 1e-10 * squares.clamp_min(1e-30)
    return torch.where(alive[:, None], energy / total.clamp_min(1e-300)[:, None], torch.zeros((), dtype=torch.float64))


def neuron_transform(acts: torch.Tensor, s: ModularStructure, neurons: list[int] | None = None) -> torch.Tensor:
    """Full 2-D Fourier transform of neuron activations over the operand grid, centred: [n, n, len(neurons)].

    acts: [n*n, d_mlp] for one checkpoint (e.g. `cache["blocks.0.mlp.hook_post"][:, -1]` on `s.tokens`). Rows
    and columns follow `fourier_basis(s.n).names`. For a few neurons to look at; `neuron_spectra` summarises
    all of them without forming this.
    """
    a = acts if neurons is None else acts[:, neurons]
    grid = (a - a.mean(0)).reshape(s.n, s.n, -1)
    return fourier_transform_2d(grid, dims=(0, 1))


@dataclass
class NeuronClusters:
    """Each neuron's dominant frequency and which neurons form frequency clusters.

    Attributes:
        freq: [C, d_mlp] long, the frequency k whose block explains most of the neuron's variance.
        share: [C, d_mlp], that share.
        sizes: [C, n // 2] long, neurons with share >= threshold at frequency k (index k-1).
        threshold: the share a neuron needs to count as in a cluster.
    """

    freq: torch.Tensor
    share: torch.Tensor
    sizes: torch.Tensor
    threshold: float

    @property
    def in_cluster(self) -> torch.Tensor:
        return self.share >= self.threshold


def neuron_clusters(spectra: torch.Tensor, threshold: float = CLUSTER_THRESHOLD) -> NeuronClusters:
    """Frequency clusters from `neuron_spectra` output [C, n // 2, d_mlp]."""
    share, idx = spectra.max(dim=1)
    inside = share >= threshold
    sizes = torch.zeros(spectra.shape[0], spectra.shape[1], dtype=torch.long)
    sizes.scatter_add_(1, idx, inside.long())
    return NeuronClusters(idx + 1, share, sizes, threshold)


def min_cluster_size(d_mlp: int) -> int:
    """A frequency is key when at least this many neurons cluster on it: 1% of the neurons, and at least 2."""
    return max(2, math.ceil(0.01 * d_mlp))


def key_frequencies_from_clusters(sizes: torch.Tensor, d_mlp: int, min_size: int | None = None) -> list[int]:
    """Frequencies (ascending) whose neuron cluster holds >= `min_size` neurons; sizes: [n // 2]."""
    min_size = min_cluster_size(d_mlp) if min_size is None else min_size
    return [int(k) + 1 for k in torch.nonzero(sizes >= min_size).flatten()]


# --- ablations in Fourier space and logit periodicity ---------------------------------------------------------


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
    cos, _ = _dft_tables(n)
    proj = along @ cos.T  # [C, n // 2]: <L, cos(w_k(answer - c))>
    norm2 = G * (cos**2).sum(1)
    return proj**2 / norm2 / total.clamp_min(1e-300)[:, None]


# --- every probe over a stack of checkpoints ------------------------------------------------------------------


@dataclass
class FourierProbes:
    """Every probe for C checkpoints: CPU torch tensors with a leading [C] axis (frequency k at index k-1), like
    every other probe here; `probe(model)` gives C = 1.

    Attributes:
        key_freqs: the key frequencies the ablations and `periodicity` use.
        embed_norms: [C, n] Fourier component norms of W_E; unembed_norms: [C, n] of W_L = W_U^T W_out.
        gini_embed, gini_unembed: [C] Gini coefficients of those norms.
        weight_norm: [C] sqrt of the sum of squared weights.
        neuron_freq, neuron_share: [C, d_mlp] dominant frequency of each neuron and its share of variance.
        cluster_sizes: [C, n // 2] neurons in each frequency cluster; in_clusters: [C] their total.
        train_loss, test_loss, restricted_loss, excluded_loss: [C] (see `Ablations`).
        periodicity_by_freq: [C, n // 2] (see `logit_periodicity`); periodicity: [C] its sum over key_freqs.
        attention: [C, n_layers, n_heads, n_ctx] mean attention from '=' to a, b, '=' (None for the MLP model).
        embed_names: names of the basis rows.
    """

    key_freqs: list[int]
    embed_norms: torch.Tensor
    unembed_norms: torch.Tensor
    gini_embed: torch.Tensor
    gini_unembed: torch.Tensor
    weight_norm: torch.Tensor
    neuron_freq: torch.Tensor
    neuron_share: torch.Tensor
    cluster_sizes: torch.Tensor
    in_clusters: torch.Tensor
    train_loss: torch.Tensor
    test_loss: torch.Tensor
    restricted_loss: torch.Tensor
    excluded_loss: torch.Tensor
    periodicity_by_freq: torch.Tensor
    periodicity: torch.Tensor
    attention: torch.Tensor | None
    embed_names: tuple[str, ...] = field(default=())
    threshold: float = CLUSTER_THRESHOLD

    def derived_key_frequencies(self, c: int = -1) -> list[int]:
        """Key frequencies of checkpoint `c` from its clusters (`key_frequencies_from_clusters`)."""
        return key_frequencies_from_clusters(self.cluster_sizes[c], self.neuron_freq.shape[1])

    @staticmethod
    def concat(parts: list["FourierProbes"]) -> "FourierProbes":
        first = parts[0]
        out = {}
        for name in first.__dataclass_fields__:
            vals = [getattr(p, name) for p in parts]
            if isinstance(vals[0], torch.Tensor):
                out[name] = torch.cat(vals)
            else:
                out[name] = vals[0]
        return FourierProbes(**out)


@torch.no_grad()
def probe_states(model: torch.nn.Module, states: list[dict[str, torch.Tensor]], s: ModularStructure,
                 key_freqs: list[int] | None = None, threshold: float = CLUSTER_THRESHOLD) -> FourierProbes:
    """Every probe for each state dict in `states` (weights of `model`'s architecture), batched.

    key_freqs: the frequencies for the ablations and periodicity; None derives them from the last state's
    neuron clusters. The analysis derives them once from the final checkpoint and passes them for all.
    """
    model = as_model(model)
    W = stacked_views(model, states, (FAST_VIEWS if is_fast(model) else ()) + ("embed_matrix",))
    d_mlp = model.neuron_weights()[0].shape[1]
    if is_linear(model):  # everything from sums over the grid (streamed for the one-layer transformer)
        if key_freqs is None:  # a first pass for the clusters, a second for the key directions
            summary = grid_summary(model, states, s, stacked=W)
            spectra = spectra_from_marginals(summary.marginals, summary.squares, s)
            key_freqs = key_frequencies_from_clusters(neuron_clusters(spectra, threshold).sizes[-1], d_mlp)
            summary.coef = grid_summary(model, states, s, cached_key_directions(s, key_freqs), stacked=W).coef
        else:
            summary = grid_summary(model, states, s, cached_key_directions(s, key_freqs), stacked=W)
            spectra = spectra_from_marginals(summary.marginals, summary.squares, s)
        ab = linear_ablations(summary.coef, summary.logits, summary.W_L, s, key_freqs)
        logits, W_L, attention = summary.logits, summary.W_L, summary.attention
    else:  # a final LayerNorm: the ablations run the rest of the model on the whole activation table
        ga = grid_activations(model, states, s, stacked=W)
        spectra = neuron_spectra(ga.acts, s)
        if key_freqs is None:
            key_freqs = key_frequencies_from_clusters(neuron_clusters(spectra, threshold).sizes[-1], d_mlp)
        ab = fourier_ablations(ga, s, key_freqs)
        logits, W_L, attention = ga.logits, ga.W_L, ga.attention
    clusters = neuron_clusters(spectra, threshold)
    per_freq = logit_periodicity(logits, s)
    embed = embedding_fourier_norms(W["embed_matrix"], s)
    unembed = neuron_logit_fourier_norms(W_L, s)
    key_idx = [k - 1 for k in key_freqs]
    cpu = lambda t: t.detach().cpu()  # noqa: E731
    return FourierProbes(
        key_freqs=list(key_freqs), embed_norms=cpu(embed), unembed_norms=cpu(unembed),
        gini_embed=cpu(gini(embed)), gini_unembed=cpu(gini(unembed)),
        weight_norm=cpu(total_weight_norm(stack_states(states))),
        neuron_freq=cpu(clusters.freq), neuron_share=cpu(clusters.share), cluster_sizes=cpu(clusters.sizes),
        in_clusters=cpu(clusters.in_cluster.sum(1)), train_loss=cpu(ab.train_loss), test_loss=cpu(ab.test_loss),
        restricted_loss=cpu(ab.restricted_loss), excluded_loss=cpu(ab.excluded_loss), periodicity_by_freq=cpu(per_freq),
        periodicity=cpu(per_freq[:, key_idx].sum(1)), attention=None if attention is None else cpu(attention),
        embed_names=fourier_basis(s.n).names, threshold=threshold)


# --- one model (notebooks) ------------------------------------------------------------------------------------


def probe(model: torch.nn.Module, structure: Any = None, key_freqs: list[int] | None = None,
          threshold: float = CLUSTER_THRESHOLD) -> FourierProbes:
    """Every probe for one model (our model or a TransformerBridge; tensors keep their leading axis of length 1).

    structure: a ModularStructure, TaskData or Run (for the op, the group and the split); None means x+y over
    Z_p with no split (the losses are then NaN).
    """
    s = as_structure(model, structure)
    return probe_states(model, [state_of(model)], s, key_freqs, threshold)


def key_frequencies(model: torch.nn.Module, structure: Any = None, threshold: float = CLUSTER_THRESHOLD) -> list[int]:
    """The model's key frequencies: those with a cluster of >= `min_cluster_size(d_mlp)` neurons whose variance
    over the operand grid lies >= `threshold` in that frequency's {const, cos_k, sin_k}^2 block."""
    s = as_structure(model, structure)
    ga = grid_activations(model, [state_of(model)], s)
    sizes = neuron_clusters(neuron_spectra(ga.acts, s), threshold).sizes[0]
    return key_frequencies_from_clusters(sizes, ga.acts.shape[-1])
