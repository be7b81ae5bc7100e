"""The views of Nanda's grokking demo as probes, for our models or a TransformerBridge (read as our transformer).

    task_loss            the task's loss at the answer position (the bridge's own return_type="loss" is the
                         next-token loss over [a, b, =], which meets '=' and fails; this is the loss trained)
    grid_cache           run_with_cache on every operand pair of the group grid; to_grid: [n*n, ...] -> [n, n, ...]
    neuron_input_map     W_neur = W_E (W_V W_O per head) W_in over the group elements, [n_heads, n, d_mlp]
    in_fourier_basis     any per-element axis (tokens of W_E or W_neur, outputs of W_logit, both sides of OV)
                         in the Fourier basis of the group
    trig_fits            each neuron's activations over (a, b) fitted by 1, cos/sin(w a), cos/sin(w b),
                         cos/sin(w(a+b)), cos/sin(w(a-b)) at its frequency, with the variance explained
    direct_logit_attribution   each residual component's contribution to the correct logit
    patch_checkpoints    activation patching: one checkpoint's activations into another's run, hook by hook

Shapes in each docstring; n is the group order of the `ModularStructure` (p for x+y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from interp.fourier import fourier_basis, neuron_spectra
from interp.grid import as_model
from interp.modular import ModularStructure


def task_loss(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """The task's loss (`run.data.loss`) of our model or a bridge on tokens [batch, n_ctx] against the answers
    labels [batch], at the last position, in float64: `model(tokens, return_type="loss", labels=labels)`."""
    with torch.no_grad():
        return as_model(model)(tokens, return_type="loss", labels=labels, loss=loss)


def to_grid(act: torch.Tensor, s: ModularStructure) -> torch.Tensor:
    """[n*n, ...] rows in grid order (a, b) -> [n, n, ...] indexed by the group elements of a and b."""
    return act.reshape(s.n, s.n, *act.shape[1:])


def grid_cache(model: torch.nn.Module, s: ModularStructure, names_filter=None):
    """(logits, ActivationCache) on every operand pair of the grid of `s`, full positions (the transformer's logits
    [n*n, n_ctx, d_vocab_out], the answer's `logits[:, -1]`; `logits_at_answer(logits)` of any of our models):
    `to_grid(cache["post", 0][:, -1], s)` is the demo's neuron activations over (a, b) [n, n, d_mlp]."""
    return cache_on(model, s.tokens, names_filter)


def neuron_input_map(model: torch.nn.Module, s: ModularStructure, layer: int = 0) -> torch.Tensor:
    """[n_heads, n, d_mlp] W_neur = W_E[elements] W_V[h] W_O[h] W_in: what each head carries from a token to
    the neurons of block `layer` (the demo's W_neur, one-layer transformer)."""
    m = as_model(model)
    return (m.W_E[s.elements] @ m.OV[layer].AB @ m.W_in[layer]).detach()


def in_fourier_basis(x: torch.Tensor, dims: int | tuple[int, ...] = 0) -> torch.Tensor:
    """x with each axis in `dims` (of length n, group elements in order) in the Fourier basis: axis entry r is
    basis row r (const, cos 1, sin 1, ...; `fourier_basis(n).names`). E.g. W_neur [heads, n, d_mlp] with dims=1,
    W_logit [d_mlp, n] with dims=1, the OV circuit W_E OV W_E^T [heads, n, n] with dims=(1, 2)."""
    for d in (dims,) if isinstance(dims, int) else dims:
        F = fourier_basis(x.shape[d]).matrix.to(x.dtype)
        x = torch.movedim(torch.tensordot(F, torch.movedim(x, d, 0), dims=([1], [0])), 0, d)
    return x


TRIG_TERMS = ("1", "cos wa", "sin wa", "cos wb", "sin wb", "cos w(a+b)", "sin w(a+b)", "cos w(a-b)", "sin w(a-b)")


@dataclass
class TrigFits:
    """Per-neuron least-squares fits over the grid: act(a, b) ~ sum_t coef[t] term_t(a, b), terms `TRIG_TERMS`
    at the neuron's frequency w = 2 pi freq / n.

    Attributes:
        freq: [d_mlp] long, each neuron's dominant frequency (largest share in `neuron_spectra`).
        coef: [d_mlp, 9] the fitted coefficients.
        explained: [d_mlp] share of the neuron's variance over the grid the fit explains (0 for a constant neuron).
    """

    freq: torch.Tensor
    coef: torch.Tensor
    explained: torch.Tensor
    terms: tuple[str, ...] = TRIG_TERMS


def trig_terms(s: ModularStructure, k: int) -> torch.Tensor:
    """[n*n, 9] the `TRIG_TERMS` at frequency k on the grid rows (a, b) = (i, j) group elements."""
    i = torch.arange(s.grid_size, dtype=torch.float64) // s.n
    j = torch.arange(s.grid_size, dtype=torch.float64) % s.n
    w = 2 * math.pi * k / s.n
    cols = [torch.ones_like(i)]
    for x in (i, j, i + j, i - j):
        cols += [torch.cos(w * x), torch.sin(w * x)]
    return torch.stack(cols, dim=1)


def trig_fits(acts: torch.Tensor, s: ModularStructure) -> TrigFits:
    """Fit each neuron's activations acts [n*n, d_mlp] (one checkpoint, grid order) at its own frequency."""
    freq = neuron_spectra(acts[None], s)[0].argmax(0) + 1  # [d_mlp]
    a = acts.double()
    coef = torch.zeros(a.shape[1], len(TRIG_TERMS), dtype=torch.float64)
    explained = torch.zeros(a.shape[1], dtype=torch.float64)
    centred = (a - a.mean(0)).square().sum(0)
    for k in freq.unique().tolist():
        idx = (freq == k).nonzero().flatten()
        X = trig_terms(s, k)
        c = torch.linalg.lstsq(X, a[:, idx]).solution  # [9, m]
        resid = (a[:, idx] - X @ c).square().sum(0)
        coef[idx] = c.T
        explained[idx] = torch.where(centred[idx] > 0, 1 - resid / centred[idx].clamp_min(1e-300), 0.0)
    return TrigFits(freq, coef, explained)


def direct_logit_attribution(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor):
    """Transformers: (attributions [components, batch], labels of the components): each residual component's contribution at
    the last position to the correct logit, `cache.decompose_resid` (embed, pos_embed, 0_attn_out, 0_mlp_out,
    ...) through the final LayerNorm (its scale frozen, as TransformerLens does) and W_U[:, label]. Without a
    final LayerNorm they add up to the correct logit."""
    m = as_model(model)
    _, cache = cache_on(m, tokens)
    parts, names = cache.decompose_resid(pos_slice=-1, apply_ln=True, return_labels=True)  # [C, batch, d_model]
    directions = m.tokens_to_residual_directions(labels)  # [batch, d_model]
    return (parts * directions).sum(-1).detach(), names


def cache_on(model: torch.nn.Module, tokens: torch.Tensor, names_filter=None):
    """(logits, ActivationCache) of our model (or a bridge) on any tokens [batch, n_ctx], full positions."""
    with torch.no_grad():
        return as_model(model).run_with_cache(tokens, names_filter=names_filter)


def patch_checkpoints(source: torch.Tensor | torch.nn.Module, target: torch.nn.Module, tokens: torch.Tensor,
                      labels: torch.Tensor, hooks: list[str]) -> dict[str, float]:
    """Activation patching between two checkpoints: for each hook, `target` runs on tokens [batch, n_ctx] with
    that activation replaced by `source`'s on the same tokens; returns {hook: the task loss}, plus "source" and
    "target" for the unpatched losses. E.g. a memorising checkpoint patched with a grokked one's
    blocks.0.mlp.hook_post shows how much of the generalisation lives in the MLP."""
    src, tgt = as_model(source), as_model(target)
    with torch.no_grad():
        _, cache = src.run_with_cache(tokens, names_filter=lambda name: name in hooks)
        out = {"source": float(task_loss(src, tokens, labels)), "target": float(task_loss(tgt, tokens, labels))}
        for name in hooks:
            patched = tgt.run_with_hooks(tokens, return_type="loss", labels=labels,
                                         fwd_hooks=[(name, lambda act, hook: cache[hook.name])])
            out[name] = float(patched)
    return out
