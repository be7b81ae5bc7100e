"""The forwards of runs trained alone before the exact path (the Trainer's "single" path), kept op for op so that
such a run resumes bit-identically: the transformer's and the MLP's module maths of that code, unhooked.

A new run never takes this path (every run of our models trains on the one forward, `batched_forward`); only a
state that records "single" does (`training.trainer.state_path`). The function is the same as the one forward's;
only the order of float32 operations differs, which is what a resumed run's bits depend on.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from training.models.base import ACTIVATIONS
from training.models.mlp import MLPModel
from training.models.transformer import Transformer

Params = dict[str, torch.Tensor]


def single_call(model: torch.nn.Module) -> Callable | None:
    """call(params, x, training) -> what the loss reads, as the model computed it before the one forward; None for a model
    whose forward has not changed (it trains through its own module)."""
    if isinstance(model, Transformer):
        return _transformer(model)
    if isinstance(model, MLPModel):
        return _mlp(model)
    return None


def _mlp(model: MLPModel) -> Callable:
    act, n_ops = ACTIVATIONS[model.cfg.act_fn], model.n_operands

    def call(p: Params, x: torch.Tensor, training: bool) -> torch.Tensor:
        if model.tokens:
            x = p["W_E"][torch.arange(n_ops, device=x.device), x[:, :n_ops]].flatten(1)
        for i in range(len(model.layers)):
            h = act(x @ p[f"layers.{i}.W_in"] + p[f"layers.{i}.b_in"])
            x = F.dropout(h, model.cfg.dropout, training)
        return x @ p["W_U"] + p["b_U"]

    return call


def _transformer(model: Transformer) -> Callable:
    cfg, d_vocab = model.cfg, model.d_vocab
    act, ln, L, scale = ACTIVATIONS[cfg.act_fn], cfg.normalization_type == "LN", cfg.n_layers, math.sqrt(cfg.d_head)

    def norm(x: torch.Tensor, p: Params, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], p[f"{name}.w"], p[f"{name}.b"], 1e-5) if ln else x

    def call(p: Params, tokens: torch.Tensor, training: bool) -> torch.Tensor:
        def drop(x: torch.Tensor) -> torch.Tensor:
            return F.dropout(x, cfg.dropout, training)

        last_only, n = not cfg.predict_all, tokens.shape[1]
        W_E, W_pos = p["embed.W_E"], p["pos_embed.W_pos"]
        resid = F.embedding(tokens, W_E) + W_pos[:n].expand(tokens.shape[0], -1, -1)
        # block 0's q, k, v projected once per (position, token) row of its input table, then gathered
        flat = norm(W_E[None] + W_pos[:n, None], p, "blocks.0.ln1").reshape(n * d_vocab, -1)
        idx = tokens + torch.arange(n, device=tokens.device) * d_vocab
        qkv = tuple((flat @ W.transpose(0, 1).flatten(1)).unflatten(1, W.shape[::2])[rows] for W, rows in
                    ((p["blocks.0.attn.W_Q"], idx[:, -1:] if last_only and L == 1 else idx),
                     (p["blocks.0.attn.W_K"], idx), (p["blocks.0.attn.W_V"], idx)))
        for i in range(L):
            last, b = last_only and i == L - 1, f"blocks.{i}."
            attn_out = drop(_attention(p, b, norm(resid, p, b + "ln1"), last, qkv if i == 0 else None, scale))
            resid = (resid[:, -1:] if last else resid) + attn_out
            if not cfg.attn_only:
                pre = norm(resid, p, b + "ln2") @ p[b + "mlp.W_in"] + p[b + "mlp.b_in"]
                resid = resid + drop(act(pre) @ p[b + "mlp.W_out"] + p[b + "mlp.b_out"])
        logits = norm(resid, p, "ln_final") @ p["unembed.W_U"]
        return logits[:, -1] if last_only else logits

    return call


def _attention(p: Params, b: str, x: torch.Tensor, last: bool, qkv: tuple | None, scale: float) -> torch.Tensor:
    a = b + "attn."
    if qkv is None:
        xq = x[:, -1:] if last else x
        qkv = (torch.einsum("bpd,hde->bphe", xq, p[a + "W_Q"]), torch.einsum("bpd,hde->bphe", x, p[a + "W_K"]),
               torch.einsum("bpd,hde->bphe", x, p[a + "W_V"]))
    q, k, v = qkv
    if last:
        scores = (q * k).sum(-1).transpose(1, 2).unsqueeze(2) / scale  # [batch, head, 1, key_pos]
    else:
        n = k.shape[1]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / scale
        scores = scores.masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool, device=q.device)), float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    if last:
        z = (pattern.squeeze(2).transpose(1, 2).unsqueeze(-1) * v).sum(1, keepdim=True)  # [batch, 1, head, d_head]
    else:
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
    return z.flatten(2) @ p[a + "W_O"].flatten(0, 1)
