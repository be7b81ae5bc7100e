"""Activations of a modular-arithmetic model on every operand pair, for a stack of checkpoints at once.

The Fourier probes read three things on the full n x n operand grid (`ModularStructure` order): the neuron
activations of the last MLP at '=', the logits, and the mean attention from '=' to each position. For the
one-layer transformer without LayerNorm (Nanda et al. 2023) they are computed from stacked weights of C
checkpoints without running the model on n^2 sequences:

- the query at '=' is the same for every input, so attention scores are per-token tables [C, H, n] and the
  pattern over the grid is a softmax of three broadcast tables;
- each head's output is a pattern-weighted sum of per-token rows OV[token] = x W_V W_O; pushing those rows
  through W_in (or W_U) first turns the MLP input (or the direct-path logits) into small batched matmuls with
  inner dimension n_heads, instead of one d_model-deep matmul over the grid;
- the logits are acts @ (W_out W_U) plus that direct path.

The probes need the [n*n, d_mlp] activation table only through sums over the grid (row, column and diagonal
sums, sums of squares, projections on a few directions) and the logits. `grid_summary` streams the table in
blocks of rows that stay in cache and keeps only those (`GridSummary`), which is what the analysis runs;
`grid_activations` materialises it for notebooks. Any other model (more layers, LayerNorm, the MLP model, the
LSTM) goes through `run_with_cache` one checkpoint at a time.

Everything is read through the models' common interface (`training.models.base.GrokModel`: `W_*` views,
`neuron_hook`, `neuron_readout`, `attention_hooks`, ...), never a model class or a weight name; a
TransformerBridge is turned into our model first (`as_model`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from interp.modular import ModularStructure
from training.models.base import ACTIVATIONS, GrokModel
from training.models.bridge import from_bridge

CHUNK_ROWS = 16384  # grid rows per forward on the hook path


@dataclass
class GridActivations:
    """C checkpoints on the G = n*n operand grid (rows in (i, j) order).

    Attributes:
        acts: [C, G, d_mlp] neuron activations of the last MLP layer (at '=' for the transformer).
        logits: [C, G, d_vocab_out].
        W_L: [C, d_vocab_out, d_mlp] neuron -> logit map W_U^T W_out (W_U^T for the MLP model; with a final
            LayerNorm its gain is folded in and the map is only approximate).
        attention: [C, n_layers, n_heads, n_ctx] mean attention from '=' to each position, or None.
        linear: logits = acts @ W_L^T + terms that do not depend on the neurons (no final LayerNorm).
        resid: [C, G, d_model] residual stream entering the last MLP (only kept when not `linear`).
        finish: for a non-linear readout, (checkpoint c, acts [R, d_mlp], resid [R, d_model]) -> logits [R, d_vocab_out].
    """

    acts: torch.Tensor
    logits: torch.Tensor
    W_L: torch.Tensor
    attention: torch.Tensor | None
    linear: bool = True
    resid: torch.Tensor | None = None
    finish: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


@dataclass
class GridSummary:
    """What the probes read from the neuron activations, summed over the grid, for C checkpoints.

    Attributes:
        marginals: [C, 4, n, d_mlp] activation sums over j (per i), over i (per j), along i+j and along i-j (mod n).
        squares: [C, d_mlp] float64 sums of squared activations.
        coef: [C, r, d_mlp] projections Q^T acts on the r grid directions asked for (None if none were).
        logits: [C, n*n, d_vocab_out]; W_L: [C, d_vocab_out, d_mlp]; attention as in `GridActivations`.
    """

    marginals: torch.Tensor
    squares: torch.Tensor
    coef: torch.Tensor | None
    logits: torch.Tensor
    W_L: torch.Tensor
    attention: torch.Tensor | None


def grid_index(s: ModularStructure) -> tuple[torch.Tensor, torch.Tensor]:
    """(i+j) mod n and (i-j) mod n of each grid row."""
    if "plus_minus" not in s.cache:
        i, j = torch.arange(s.grid_size) // s.n, torch.arange(s.grid_size) % s.n
        s.cache["plus_minus"] = ((i + j) % s.n, (i - j) % s.n)
    return s.cache["plus_minus"]


def summarise(acts: torch.Tensor, s: ModularStructure, Q: torch.Tensor | None = None) -> tuple:
    """(marginals, squares, coef) of an activation table [C, n*n, d_mlp] (see `GridSummary`)."""
    C, G, m = acts.shape
    n = s.n
    plus, minus = grid_index(s)
    grid = acts.view(C, n, n, m)
    marginals = torch.stack([grid.sum(2), grid.sum(1), torch.zeros(C, n, m).index_add_(1, plus, acts),
                             torch.zeros(C, n, m).index_add_(1, minus, acts)], dim=1)
    squares = acts.square().view(C, n, n, m).sum(1).double().sum(1)
    return marginals, squares, None if Q is None else Q.T @ acts


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{name: [C, ...]} from C state dicts with the same keys, in float32."""
    return {k: torch.stack([s[k].float() for s in states]) for k in states[0]}


def as_model(model: torch.nn.Module) -> GrokModel:
    """Our model for `model`: itself, or a TransformerBridge's weights in our Transformer (an exact map)."""
    return model if isinstance(model, GrokModel) else from_bridge(model)


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The (detached) state dict of `model`, or of our model for a bridge."""
    return {k: v.detach() for k, v in as_model(model).state_dict().items()}


FAST_VIEWS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "b_in", "W_out", "b_out", "W_U")


@torch.no_grad()
def stacked_views(model: GrokModel, states: list[dict[str, torch.Tensor]], names) -> dict[str, torch.Tensor]:
    """{name: [C, ...]} the model's views `names` (`W_E`, `embed_matrix`, `W_Q`, ...) with each state loaded."""
    m = copy.deepcopy(model)
    out: dict[str, list] = {n: [] for n in names}
    for state in states:
        m.load_state_dict(state)
        for n in names:
            out[n].append(getattr(m, n).detach().float().clone())
    return {n: torch.stack(v) for n, v in out.items()}


def is_fast(model: GrokModel) -> bool:
    """One attention layer over [a, b, =] whose neurons read out linearly (the one-layer transformer without
    LayerNorm, Nanda et al. 2023): the batched path applies."""
    return (len(model.attention_hooks) == 1 and model.n_neuron_layers == 1 and model.cfg.n_ctx == 3
            and model.neuron_readout() is not None)


def is_linear(model: GrokModel) -> bool:
    """The logits are affine in the last hidden layer's neurons."""
    return model.neuron_readout() is not None


@torch.no_grad()
def grid_activations(model: torch.nn.Module, states: list[dict[str, torch.Tensor]], s: ModularStructure,
                     stacked: dict[str, torch.Tensor] | None = None) -> GridActivations:
    """Activations of `model`'s architecture (our model or a TransformerBridge) with each of `states` loaded, on
    the grid of `s` (`stacked`: `stacked_views(model, states, FAST_VIEWS)`, if the caller has it already)."""
    model = as_model(model)
    if is_fast(model):
        W = stacked if stacked is not None else stacked_views(model, states, FAST_VIEWS)
        return _one_layer(W, model.cfg.act_fn, s, materialise=True)
    return _with_hooks(model, states, s)


@torch.no_grad()
def grid_summary(model: torch.nn.Module, states: list[dict[str, torch.Tensor]], s: ModularStructure,
                 Q: torch.Tensor | None = None, stacked: dict[str, torch.Tensor] | None = None) -> GridSummary:
    """`GridSummary` of `model`'s architecture with each of `states` loaded (linear readouts only: no final
    LayerNorm); Q: [n*n, r] grid directions to project the activations on."""
    model = as_model(model)
    if is_fast(model):
        W = stacked if stacked is not None else stacked_views(model, states, FAST_VIEWS)
        return _one_layer(W, model.cfg.act_fn, s, Q)
    ga = grid_activations(model, states, s)
    if not ga.linear:
        raise ValueError("grid_summary needs a linear readout; use grid_activations for LayerNorm models")
    return GridSummary(*summarise(ga.acts, s, Q), ga.logits, ga.W_L, ga.attention)


def _mix(pat_a: torch.Tensor, tab_a: torch.Tensor, pat_b: torch.Tensor, tab_b: torch.Tensor, tab_eq: torch.Tensor,
         const: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
    """const[c] + sum_h (pat_a[c,h,i,j] tab_a[c,h,i] + pat_b[c,h,i,j] tab_b[c,h,j] + pat_eq[c,h,i,j] tab_eq[c,h])
    for the grid rows i in `rows`.

    pat_a, pat_b: [C, H, n, n] attention to a and b (the rest, pat_eq = 1 - pat_a - pat_b, goes to '=');
    tab_a, tab_b: [C, H, n, D] per-token rows; tab_eq: [C, H, D]; const: [C, D]. Returns [C, rows, n, D] from two
    batched matmuls with inner dimension H (+1 for the constant): for each row i, [n_j, H+1] @ [H+1, D]; for
    each column j, [n_i, H] @ [H, D], added transposed.
    """
    C, H, n, _ = pat_a.shape
    D = tab_a.shape[-1]
    pat_a, tab_a, pat_b = pat_a[:, :, rows], tab_a[:, :, rows], pat_b[:, :, rows]
    b = pat_a.shape[2]
    left = torch.cat([pat_a, torch.ones(C, 1, b, n, dtype=pat_a.dtype)], dim=1).permute(0, 2, 3, 1)  # [C, i, j, H+1]
    right = torch.cat([tab_a - tab_eq[:, :, None], (const + tab_eq.sum(1))[:, None, None].expand(C, 1, b, D)], dim=1)
    out = left @ right.transpose(1, 2)  # [C, i, j, D]
    out += (pat_b.permute(0, 3, 2, 1) @ (tab_b - tab_eq[:, :, None]).transpose(1, 2)).transpose(1, 2)
    return out


BLOCK_BYTES = 4 * 2**20  # rows of the activation table streamed at a time: a few MB stay in cache


def _one_layer(W: dict[str, torch.Tensor], act_fn: str, s: ModularStructure, Q: torch.Tensor | None = None,
               materialise: bool = False) -> GridSummary | GridActivations:
    """Grid activations of the one-layer transformer from stacked weights: a `GridSummary` (streamed) or, with
    `materialise`, `GridActivations`."""
    E, P, W_U = W["W_E"], W["W_pos"], W["W_U"]  # the views of `FAST_VIEWS`, layer 0 of the stacked ones
    W_Q, W_K, W_V, W_O, W_in, b_in, W_out, b_out = (W[n][:, 0] for n in FAST_VIEWS[2:-1])
    C, n, m = W_Q.shape[0], s.n, W_in.shape[-1]

    x = torch.stack([E[:, s.elements] + P[:, 0, None], E[:, s.elements] + P[:, 1, None]], dim=1)  # [C, 2, n, d]
    x_eq = E[:, s.p] + P[:, 2]  # [C, d]
    q = torch.einsum("cd,chde->che", x_eq, W_Q)
    k_dir = torch.einsum("chde,che->chd", W_K, q) / W_Q.shape[-1] ** 0.5  # score = x . k_dir
    scores = torch.einsum("cpnd,chd->cphn", x, k_dir)  # [C, 2, H, n]
    score_eq = torch.einsum("cd,chd->ch", x_eq, k_dir)
    # softmax over the three keys, on the grid: exp(score - max) per pair, from per-token tables
    sa, sb, se = scores[:, 0, :, :, None], scores[:, 1, :, None, :], score_eq[:, :, None, None]
    top = torch.maximum(torch.maximum(sa, sb), se)  # [C, H, n, n]
    pat_a, pat_b = (sa - top).exp(), (sb - top).exp()
    norm = pat_a + pat_b + (se - top).exp()
    pat_a /= norm
    pat_b /= norm
    to_a, to_b = pat_a.mean((2, 3)), pat_b.mean((2, 3))
    attention = torch.stack([to_a, to_b, 1 - to_a - to_b], dim=-1)[:, None]  # [C, 1, H, 3]

    ov = torch.einsum("cpnd,chde->cphne", x, W_V) @ W_O[:, None]  # [C, 2, H, n, d]
    ov_eq = torch.einsum("cd,chde,chef->chf", x_eq, W_V, W_O)  # [C, H, d]
    mlp_in = (pat_a, ov[:, 0] @ W_in[:, None], pat_b, ov[:, 1] @ W_in[:, None], ov_eq @ W_in,
              torch.einsum("cd,cdm->cm", x_eq, W_in) + b_in)
    W_L_T = W_out @ W_U  # [C, d_mlp, d_vocab_out]
    logits = _mix(pat_a, ov[:, 0] @ W_U[:, None], pat_b, ov[:, 1] @ W_U[:, None], ov_eq @ W_U,
                  torch.einsum("cd,cdv->cv", x_eq + b_out, W_U)).reshape(C, n * n, -1)  # the direct path, for now
    act = (lambda x: x.clamp_(min=0)) if act_fn == "relu" else ACTIVATIONS[act_fn]

    if materialise:
        acts = act(_mix(*mlp_in)).reshape(C, n * n, m)
        return GridActivations(acts, torch.baddbmm(logits, acts, W_L_T), W_L_T.transpose(1, 2), attention)

    plus, minus = grid_index(s)
    rows, cols = torch.empty(C, n, m), torch.zeros(C, n, m)
    plus_sum, minus_sum = torch.zeros(C, n, m), torch.zeros(C, n, m)
    squares = torch.zeros(C, m, dtype=torch.float64)
    coef = None if Q is None else torch.zeros(C, Q.shape[1], m)
    step = max(1, min(n, BLOCK_BYTES // (C * n * m * 4)))
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        g0, g1 = i0 * n, i1 * n
        block = act(_mix(*mlp_in, rows=slice(i0, i1)))  # [C, i, j, m]
        flat = block.view(C, -1, m)
        logits[:, g0:g1] = torch.baddbmm(logits[:, g0:g1], flat, W_L_T)
        rows[:, i0:i1] = block.sum(2)
        cols += block.sum(1)
        plus_sum.index_add_(1, plus[g0:g1], flat)
        minus_sum.index_add_(1, minus[g0:g1], flat)
        if coef is not None:
            coef += Q[g0:g1].T @ flat
        squares += block.square_().sum(2).double().sum(1)  # the block is not needed after this
    marginals = torch.stack([rows, cols, plus_sum, minus_sum], dim=1)
    return GridSummary(marginals, squares, coef, logits, W_L_T.transpose(1, 2), attention)


def _with_hooks(model: GrokModel, states: list[dict[str, torch.Tensor]], s: ModularStructure) -> GridActivations:
    """One `run_with_cache` per checkpoint (chunked over the grid), on a copy of `model` (one per checkpoint when
    the read-out is not affine: `finish` runs the rest of that checkpoint's model)."""
    act_name, resid_name, patterns = model.neuron_hook(), model.neuron_resid_hook(), model.attention_hooks
    linear = is_linear(model)
    names = {act_name, *patterns} | ({resid_name} if not linear else set())
    tokens = s.tokens
    acts, logits, W_Ls, attn, resids, copies = [], [], [], [], [], []
    model = copy.deepcopy(model)
    for state in states:
        if copies:
            model = copy.deepcopy(model)
        model.load_state_dict(state)
        model.eval()
        if not linear:
            copies.append(model)
        a, lg, pat, rs = [], [], [], []
        for r in range(0, len(tokens), CHUNK_ROWS):
            out, cache = model.run_with_cache(tokens[r : r + CHUNK_ROWS], names_filter=lambda name: name in names)
            a.append(_last(cache[act_name]))
            lg.append(model.logits_at_answer(out))
            pat.append(torch.stack([cache[nm][:, :, -1].sum(0) for nm in patterns]) if patterns else None)
            if not linear:
                rs.append(_last(cache[resid_name]))
        acts.append(torch.cat(a))
        logits.append(torch.cat(lg))
        if patterns:
            attn.append(sum(pat) / len(tokens))
        if not linear:
            resids.append(torch.cat(rs))
        W_Ls.append(model.neuron_readout(approximate=True).T.detach().clone())
    finish = None
    if not linear:
        def finish(c: int, a: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
            return copies[c].logits_from_neurons(a, resid)

    return GridActivations(torch.stack(acts), torch.stack(logits), torch.stack(W_Ls),
                           torch.stack(attn) if attn else None, linear,
                           torch.stack(resids) if resids else None, finish)


def _last(act: torch.Tensor) -> torch.Tensor:
    """[batch, (pos,) d] -> [batch, d] at the answer (last) position."""
    return act[:, -1] if act.ndim == 3 else act
