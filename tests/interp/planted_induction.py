"""Two-layer attention-only transformers with circuits planted by hand (no LayerNorm, every MLP weight zero, which
is exactly attention-only).

The residual stream has four blocks of one-hot directions: TOK (the token), POS (the position), PREV (the previous
token, written by layer 0) and OUT (the token to predict, read by W_U).

- layer 0, head 0, previous-token head: its query reads position q, its key reads position k as q = k + 1 (from
  W_pos), so position q attends to q - 1; its OV circuit copies TOK into PREV;
- layer 1, head 0, induction head: its query reads TOK at q, its key reads PREV at k (K-composition with the
  layer-0 head), so q attends to the positions right after earlier occurrences of its token; its OV circuit copies
  TOK of the attended position into OUT, and W_U turns OUT into that token's logit;
- head 1 of each layer: all zero (uniform attention, no output).
"""

from __future__ import annotations

import math

import torch

from training.config import ModelConfig
from training.models.transformer import Transformer

V, N = 20, 21  # vocabulary (token 0 = BOS, content 1..19) and context ([BOS] + R + R with len(R) = 10)
TOK, POS, PREV, OUT = 0, V, V + N, 2 * V + N
D_MODEL, D_HEAD = 3 * V + N, max(V, N)
SHARP = math.sqrt(20 * math.sqrt(D_HEAD))  # query and key scale: a matching key scores 20 above the others


def blank_model() -> Transformer:
    cfg = ModelConfig(n_layers=2, d_model=D_MODEL, n_heads=2, d_head=D_HEAD, d_mlp=4, normalization_type="none")
    model = Transformer(cfg, V, V, N)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def _previous_token_head(model: Transformer, layer: int = 0, head: int = 0) -> None:
    attn = model.blocks[layer].attn
    for p in range(N):
        attn.W_Q[head, POS + p, p] = SHARP
        if p + 1 < D_HEAD:
            attn.W_K[head, POS + p, p + 1] = SHARP
    for t in range(V):
        attn.W_V[head, TOK + t, t] = 1.0
        attn.W_O[head, t, PREV + t] = 1.0


def _copying_ov(model: Transformer, layer: int, head: int, sign: float = 1.0) -> None:
    attn = model.blocks[layer].attn
    for t in range(V):
        attn.W_V[head, TOK + t, t] = 1.0
        attn.W_O[head, t, OUT + t] = sign


def _unembed(model: Transformer, scale: float = 10.0) -> None:
    for t in range(V):
        model.unembed.W_U[OUT + t, t] = scale


def _embed(model: Transformer) -> None:
    for t in range(V):
        model.embed.W_E[t, TOK + t] = 1.0
    for p in range(N):
        model.pos_embed.W_pos[p, POS + p] = 1.0


def induction_model(sign: float = 1.0) -> Transformer:
    """The full induction circuit; `sign=-1` makes the induction head's OV circuit suppress the token instead."""
    model = blank_model()
    with torch.no_grad():
        _embed(model)
        _previous_token_head(model)
        attn = model.blocks[1].attn
        for t in range(V):
            attn.W_Q[0, TOK + t, t] = SHARP
            attn.W_K[0, PREV + t, t] = SHARP
        _copying_ov(model, 1, 0, sign)
        _unembed(model)
    return model.eval()


def uniform_model() -> Transformer:
    """Every query and key zero (uniform causal attention); layer 1 head 0 still copies through its OV circuit."""
    model = blank_model()
    with torch.no_grad():
        _embed(model)
        _copying_ov(model, 1, 0)
        _unembed(model)
    return model.eval()


def previous_token_model() -> Transformer:
    """Only the layer-0 previous-token head; layer 1 does nothing."""
    model = blank_model()
    with torch.no_grad():
        _embed(model)
        _previous_token_head(model)
        _unembed(model)
    return model.eval()
