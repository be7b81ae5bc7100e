"""Forward passes of K models at once: parameters stacked with a leading member dimension [K, ...].

`forward_for(template)` picks the batched form of our MLP and transformer (the same maths as `training.models.transformer`,
written with batched matmuls: one bmm for K members instead of K small matmuls or a vmap), or a generic
`functional_call` for any other model, which trains alone (K = 1).

Inputs are [K, batch, ...] (each member its own examples). Dropout masks come from one `torch.Generator` per
member, drawn member by member exactly as `F.dropout` draws them, so a member of an ensemble sees the masks it
would see alone.

exact=True (the Trainer's "exact" path): every matmul over members is `member_mm`, whose products, forward and
backward, give a member the same bits whatever K is and wherever the member sits (see `aligned_bmm`); the Trainer
pads each member's rows to a multiple of 32, which aligns the attention products as well.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from training.models.base import ACTIVATIONS
from training.models.mlp import MLPModel
from training.models.transformer import Transformer

Params = dict[str, torch.Tensor]


class Dropout:
    """Per-member dropout: rates p [K] (python floats) and one generator per member."""

    def __init__(self, rates: list[float], generators: list[torch.Generator]):
        self.rates, self.generators = rates, generators
        self.on = any(p > 0 for p in rates)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, ...]: member k's slice times its own mask; F.dropout's maths (bernoulli(1-p) / (1-p))."""
        if not self.on:
            return x
        masks = []
        for p, g, xk in zip(self.rates, self.generators, x):
            if p > 0:
                mask = torch.empty(xk.shape, dtype=xk.dtype, device=g.device).bernoulli_(1 - p, generator=g)
                masks.append(mask.div_(1 - p).to(xk.device))  # a CPU generator's masks, moved (CUDA)
            else:
                masks.append(torch.ones_like(xk))
        return x * torch.stack(masks)


def _no_dropout(x: torch.Tensor) -> torch.Tensor:
    return x


ALIGN = 16  # float32 elements in 64 bytes


def aligned_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.bmm, each member's output block starting on a 64-byte boundary. MKL rounds a block by where it starts
    (another kernel for an unaligned one: measured, a member's product then differs with its place in the batch),
    and a one-row or one-column product of a lone member goes to a matrix-vector kernel. So b gets zero columns up
    to the fewest (at least 2) that align every block, a gets a second row if it has one, and the product is cut
    back: the same shapes, so the same kernels, for a member alone or anywhere in any batch."""
    if a.shape[1] == 1:
        return aligned_bmm(F.pad(a, (0, 0, 0, 1)), b)[:, :1]
    m, n = a.shape[1], b.shape[2]
    step = ALIGN // math.gcd(m, ALIGN)
    wide = -(-max(n, 2) // step) * step
    return torch.bmm(a, b) if wide == n else torch.bmm(a, F.pad(b, (0, wide - n)))[..., :n]


class _MemberMM(torch.autograd.Function):
    """a [K, m, k] @ b [K, k, n] with its gradients, every product through `aligned_bmm`."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return aligned_bmm(a, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        a, b = ctx.saved_tensors
        ga = aligned_bmm(g, b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        gb = aligned_bmm(a.transpose(1, 2), g) if ctx.needs_input_grad[1] else None
        return ga, gb


def member_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _MemberMM.apply(a, b)


def _native(m: int, k: int, n: int) -> bool:
    """Whether torch's own bmm and its backward are already exact for a [K, m, k] @ [K, k, n] product: every
    member block of the product and of both gradients aligned, none of them one row or one column wide."""
    return min(m, k, n) > 1 and (m * n) % ALIGN == 0 and (m * k) % ALIGN == 0 and (k * n) % ALIGN == 0


def _rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table [N, d] at the rows idx [...]: [..., d]. table[idx] with index_select's row copies (several times
    faster than advanced indexing here); its backward adds the rows in the same order, so the bits are the same."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[-1])


def _mm(x: torch.Tensor, w: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """x [K, ..., a] @ w [K, a, b] as one bmm over the flattened middle dimensions."""
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    mm = member_mm if exact and not _native(x3.shape[1], *w.shape[1:]) else torch.bmm
    return mm(x3, w).view(*x.shape[:-1], w.shape[-1])


def _affine(b: torch.Tensor, x: torch.Tensor, w: torch.Tensor, exact: bool) -> torch.Tensor:
    """b [K, n] + x [K, m, a] @ w [K, a, n]."""
    if exact and not _native(x.shape[1], *w.shape[1:]):
        return member_mm(x, w) + b.unsqueeze(1)
    return torch.baddbmm(b.unsqueeze(1), x, w)


def mlp_forward(model: MLPModel, exact: bool = False) -> Callable:
    act, n_layers, n_ops = ACTIVATIONS[model.cfg.act_fn], len(model.layers), model.n_operands
    d_vocab = model.d_vocab

    def forward(p: Params, x: torch.Tensor, dropout=_no_dropout) -> torch.Tensor:
        K = p["W_U"].shape[0]
        if model.tokens:  # per-operand embeddings: row (member, operand, token) of the flattened tables
            W_E = p["W_E"]
            rows = x[..., :n_ops] + torch.arange(n_ops, device=x.device) * d_vocab
            rows = rows + torch.arange(K, device=x.device).view(K, *[1] * (rows.dim() - 1)) * (n_ops * d_vocab)
            h = _rows(W_E.reshape(-1, W_E.shape[-1]), rows).flatten(-2)
        else:
            h = x.to(p["W_U"].dtype)
        for i in range(n_layers):
            h = dropout(act(_affine(p[f"layers.{i}.b_in"], h, p[f"layers.{i}.W_in"], exact)))
        return _affine(p["b_U"], h, p["W_U"], exact)

    return forward


def _layer_norm(x: torch.Tensor, p: Params, name: str, on: bool) -> torch.Tensor:
    if not on:
        return x
    w, b = p[f"{name}.w"], p[f"{name}.b"]
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], eps=1e-5) * w.view(shape) + b.view(shape)


def _heads(W: torch.Tensor) -> torch.Tensor:
    """W_Q/W_K/W_V [K, H, d, e] -> [K, d, H*e] (one matmul projects every head)."""
    return W.permute(0, 2, 1, 3).flatten(2)


def transformer_forward(model: Transformer, exact: bool = False) -> Callable:
    """The lean forward of `Transformer` (block 0 projected from the (position, token) table, the last block only
    at the last position), batched over members. Sequence tasks (`cfg.predict_all`): every block at every position,
    logits [K, B, pos, vocab]; attention-only blocks (`cfg.attn_only`) skip the MLP."""
    cfg, d_vocab = model.cfg, model.d_vocab
    act, ln, L = ACTIVATIONS[cfg.act_fn], cfg.normalization_type == "LN", cfg.n_layers
    every, attn_only = cfg.predict_all, cfg.attn_only
    H, e, scale = cfg.n_heads, cfg.d_head, cfg.d_head ** 0.5

    def attention(p: Params, i: int, q, k, v, last: bool) -> torch.Tensor:
        """q [K, B, q_pos, H, e], k, v [K, B, n, H, e] -> [K, B, q_pos, d_model]."""
        if last:  # one query: broadcast products, as the single model does
            pattern = torch.softmax((q * k).sum(-1) / scale, dim=2)  # [K, B, n, H]
            z = (pattern.unsqueeze(-1) * v).sum(2, keepdim=True)  # [K, B, 1, H, e]
        else:
            n = k.shape[2]
            scores = torch.einsum("kbqhe,kbphe->kbhqp", q, k) / scale
            mask = torch.tril(torch.ones(n, n, dtype=torch.bool, device=q.device))
            pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            z = torch.einsum("kbhqp,kbphe->kbqhe", pattern, v)
        return _mm(z.flatten(-2), p[f"blocks.{i}.attn.W_O"].flatten(1, 2), exact)

    def forward(p: Params, tokens: torch.Tensor, dropout=_no_dropout) -> torch.Tensor:
        W_E, W_pos = p["embed.W_E"], p["pos_embed.W_pos"]
        K, n = W_E.shape[0], tokens.shape[-1]
        # row (position, token) of member k's table: the gather index of every input token
        rows = tokens + torch.arange(n, device=tokens.device) * d_vocab
        rows = rows + torch.arange(K, device=tokens.device).view(K, 1, 1) * (n * d_vocab)
        table = (W_E.unsqueeze(1) + W_pos[:, :n].unsqueeze(2)).flatten(1, 2)  # [K, n*d_vocab, d_model]
        # embed + pos_embed [K, B, n, d_model]; one block reads its residual only at the last position
        resid = _rows(table.flatten(0, 1), rows[..., -1:] if L == 1 and not every else rows)
        t = _layer_norm(table, p, "blocks.0.ln1", ln).flatten(0, 1)
        for i in range(L):
            last = i == L - 1 and not every
            if i == 0:  # block 0 sees only embeddings: project the n * d_vocab table rows once, then gather
                def project(name, r):
                    W = _heads(p[f"blocks.0.attn.{name}"])
                    return _rows(_mm(t.view(K, -1, t.shape[-1]), W, exact).flatten(0, 1), r).unflatten(-1, (H, e))
                q, k, v = project("W_Q", rows[..., -1:] if last else rows), project("W_K", rows), project("W_V", rows)
            else:
                x = _layer_norm(resid, p, f"blocks.{i}.ln1", ln)
                k, v = (_mm(x, _heads(p[f"blocks.{i}.attn.{nm}"]), exact).unflatten(-1, (H, e))
                        for nm in ("W_K", "W_V"))
                q = _mm(x[:, :, -1:] if last else x, _heads(p[f"blocks.{i}.attn.W_Q"]), exact).unflatten(-1, (H, e))
            attn_out = dropout(attention(p, i, q, k, v, last))
            resid = (resid[:, :, -1:] if last else resid) + attn_out
            if attn_only:
                continue
            x = _layer_norm(resid, p, f"blocks.{i}.ln2", ln)
            b = f"blocks.{i}.mlp."
            pre = _affine(p[b + "b_in"], x.flatten(1, 2), p[b + "W_in"], exact)
            mlp_out = _affine(p[b + "b_out"], act(pre), p[b + "W_out"], exact).view(resid.shape)
            resid = resid + dropout(mlp_out)
        return _mm(_layer_norm(resid if every else resid[:, :, -1], p, "ln_final", ln), p["unembed.W_U"], exact)

    return forward


def generic_forward(model: torch.nn.Module) -> Callable:
    """Any module, one member (K = 1): `functional_call` on the module, its own dropout (the global generator,
    swapped with the member's so that the member's stream is the one saved and restored)."""

    def forward(p: Params, x: torch.Tensor, dropout=_no_dropout) -> torch.Tensor:
        assert x.shape[0] == 1, "a generic model trains alone"
        if model.training != (dropout is not _no_dropout):  # train() walks every module: only on a change
            model.train(dropout is not _no_dropout)
        if dropout is _no_dropout or not dropout.on:
            return functional_call(model, {k: v[0] for k, v in p.items()}, (x[0],))[None]
        g = dropout.generators[0]
        get, put = ((torch.get_rng_state, torch.set_rng_state) if x.device.type == "cpu" else
                    (lambda: torch.cuda.get_rng_state(x.device), lambda s: torch.cuda.set_rng_state(s, x.device)))
        saved = get()
        put(g.get_state())
        try:
            out = functional_call(model, {k: v[0] for k, v in p.items()}, (x[0],))[None]
            g.set_state(get())
        finally:
            put(saved)
        return out

    return forward


def forward_for(model: torch.nn.Module, exact: bool = False) -> tuple[Callable, bool]:
    """(forward, batched): the batched forward for our MLP and transformer, else the generic one (K = 1 only)."""
    if isinstance(model, MLPModel):
        return mlp_forward(model, exact), True
    if isinstance(model, Transformer):
        return transformer_forward(model, exact), True
    return generic_forward(model), False
