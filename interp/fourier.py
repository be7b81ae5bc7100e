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

The basis lives in `interp.fourier_basis`, the ablations and logit periodicity in `interp.fourier_ablations`; their
public names are importable from here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.constants import CLUSTER_THRESHOLD
from interp.fourier_ablations import (Ablations, cached_key_directions, fourier_ablations, key_directions,
                                      linear_ablations, logit_periodicity, row_losses)
from interp.fourier_basis import (FourierBasis, dft_tables, fourier_basis, fourier_transform, fourier_transform_2d,
                                  frequency_norms, gini)
from interp.grid import (FAST_VIEWS, as_model, grid_activations, grid_summary, is_fast, is_linear, stack_states,
                         stacked_views, state_of, summarise)
from interp.modular import ModularStructure, additive_structure, modular_structure

__all__ = ["Ablations", "FourierBasis", "FourierProbes", "NeuronClusters", "as_structure", "cached_key_directions",
           "embedding_fourier_norms", "fourier_ablations", "fourier_basis", "fourier_transform", "fourier_transform_2d",
           "frequency_norms", "gini", "key_directions", "key_frequencies", "key_frequencies_from_clusters",
           "linear_ablations", "logit_periodicity", "min_cluster_size", "neuron_clusters", "neuron_logit_fourier_norms",
           "neuron_spectra", "neuron_transform", "probe", "probe_states", "row_losses", "spectra_from_marginals",
           "total_weight_norm"]


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
    cos, sin = dft_tables(n)
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
