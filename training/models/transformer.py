"""The transformer: a lean decoder whose every model is a TransformerLens `HookedRootModule` once set up.

Weights and hooks carry TransformerLens names (`embed.W_E`, `blocks.0.attn.W_Q [n_heads, d_model, d_head]`,
`blocks.0.mlp.hook_post`, ...), so `model.run_with_cache(tokens)` reads like TransformerLens.

`model(tokens)` and `run_with_cache(tokens)` return logits at every position [batch, pos, d_vocab_out], as
TransformerLens does (equal to `to_bridge(model)` on every position; the answer after '=' is `logits[:, -1]`).
`model.answer_logits(tokens)` [batch, d_vocab_out] computes the answer position only: the last block runs queries,
attention and MLP at one position instead of n_ctx, ~3x fewer FLOPs on the [a, b, =] tasks. The TransformerLens
surface beyond the weights (config fields, biases, `accumulated_bias`, ...) is in training.models.tl_compat.

Training's own copies of a model (`plain_models()`: the Trainer's, the run's checks) only need its parameters and
its forward, so they stay plain `nn.Module`s whose hook sites are identities, and a training process never imports
TransformerLens (whose package import, with the Hugging Face libraries it pulls in, costs more than torch's). Every
other model becomes a `HookedRootModule` with `HookPoint`s at those sites when its `__init__` calls `setup()`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.config import ModelConfig
from training.models.base import ACTIVATIONS, GrokModel, HookSite, answer_loss
from training.models.tl_compat import HookedConfig, TLSurface, add_zero_biases  # noqa: F401  (HookedConfig re-exported)
from training.tasks.data import TaskData


if TYPE_CHECKING:
    from transformer_lens import FactoredMatrix


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.eps = eps
        self.hook_scale, self.hook_normalized = HookSite(), HookSite()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not any(h._forward_hooks or h._backward_hooks for h in (self.hook_scale, self.hook_normalized)):
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)  # TransformerLens' LayerNorm step by step when a hook reads it
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # [batch, pos, 1]
        return self.hook_normalized(x / scale) * self.w + self.b  # hook_normalized before the gain, as the bridge


class Attention(nn.Module):
    """Causal multi-head attention without biases (Nanda et al. 2023)."""

    def __init__(self, cfg: ModelConfig, n_ctx: int):
        super().__init__()
        H, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(H, d, e))
        self.W_K = nn.Parameter(torch.empty(H, d, e))
        self.W_V = nn.Parameter(torch.empty(H, d, e))
        self.W_O = nn.Parameter(torch.empty(H, e, d))
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)
        self.scale = math.sqrt(e)
        self.hook_q, self.hook_k, self.hook_v = HookSite(), HookSite(), HookSite()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookSite(), HookSite(), HookSite()

    def forward(self, x: torch.Tensor, last_only: bool, qkv: tuple | None = None) -> torch.Tensor:
        """x [batch, pos, d_model] -> [batch, q_pos, d_model]; q_pos = 1 when last_only.

        `qkv`: queries, keys and values already projected (block 0's fast path), else projected from x here.
        """
        if qkv is None:
            xq = x[:, -1:] if last_only else x
            qkv = (torch.einsum("bpd,hde->bphe", xq, self.W_Q), torch.einsum("bpd,hde->bphe", x, self.W_K),
                   torch.einsum("bpd,hde->bphe", x, self.W_V))
        q, k, v = self.hook_q(qkv[0]), self.hook_k(qkv[1]), self.hook_v(qkv[2])
        if last_only:  # one query per example: broadcast products beat batch * n_heads tiny matmuls
            scores = (q * k).sum(-1).transpose(1, 2).unsqueeze(2) / self.scale  # [batch, head, 1, key_pos]
        else:
            n = k.shape[1]
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / self.scale
            scores = scores.masked_fill(~self.mask[:n, :n], float("-inf"))
        pattern = self.hook_pattern(torch.softmax(self.hook_attn_scores(scores), dim=-1))
        if last_only:
            z = (pattern.squeeze(2).transpose(1, 2).unsqueeze(-1) * v).sum(1, keepdim=True)  # [batch, 1, head, d_head]
        else:
            z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        z = self.hook_z(z)
        return z.flatten(2) @ self.W_O.flatten(0, 1)


    def project_table(self, table: torch.Tensor, tokens: torch.Tensor, last_only: bool) -> tuple:
        """q, k, v for block 0 from its input table [n_ctx, d_vocab, d_model] (one row per (position, token)).

        Block 0 sees only embeddings, so its input takes n_ctx * d_vocab distinct values: projecting those once
        and gathering costs ~d_vocab * n_ctx rows of matmul instead of batch * n_ctx.
        """
        n_ctx, d_vocab, _ = table.shape
        idx = tokens + torch.arange(tokens.shape[1], device=tokens.device) * d_vocab  # row of (position, token)
        flat = table.reshape(n_ctx * d_vocab, -1)

        def project(W: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return (flat @ W.transpose(0, 1).flatten(1)).unflatten(1, W.shape[::2])[rows]  # [batch, pos, H, d_head]

        return project(self.W_Q, idx[:, -1:] if last_only else idx), project(self.W_K, idx), project(self.W_V, idx)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.act = ACTIVATIONS[cfg.act_fn]
        self.hook_pre, self.hook_post = HookSite(), HookSite()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        return self.hook_post(self.act(pre)) @ self.W_out + self.b_out


class Block(nn.Module):
    """Attention then MLP; attention-only (no ln2, mlp or hook_mlp_out; resid_post = resid_mid) when d_mlp = 0."""

    hook_out_is_single_residual_stream = True  # TransformerLens' logit lens reads resid_post as the stream unembedded

    def __init__(self, cfg: ModelConfig, n_ctx: int):
        super().__init__()
        ln, self.attn_only = cfg.normalization_type == "LN", cfg.d_mlp == 0
        self.ln1 = LayerNorm(cfg.d_model) if ln else nn.Identity()
        self.attn = Attention(cfg, n_ctx)
        if not self.attn_only:
            self.ln2 = LayerNorm(cfg.d_model) if ln else nn.Identity()
            self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        for name in ("resid_pre", "attn_out", "resid_mid", "resid_post") + (() if self.attn_only else ("mlp_out",)):
            setattr(self, f"hook_{name}", HookSite())

    def forward(self, resid: torch.Tensor, last_only: bool, qkv: tuple | None = None) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.dropout(self.attn(self.ln1(resid), last_only, qkv)))
        if last_only:
            resid = resid[:, -1:]
        resid = self.hook_resid_mid(resid + attn_out)
        if self.attn_only:
            return self.hook_resid_post(resid)
        mlp_out = self.hook_mlp_out(self.dropout(self.mlp(self.ln2(resid))))
        return self.hook_resid_post(resid + mlp_out)


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.W_E)


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_pos[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab_out: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_U


class Transformer(TLSurface, GrokModel):
    """Decoder-only transformer; Nanda et al. 2023 when `normalization_type="none"` (no LN, no attention biases).

    Input tokens [batch, n_ctx] -> logits [batch, n_ctx, d_vocab_out] (`answer_logits`: [batch, d_vocab_out] at
    the last position, the last block run there only).

    Hooked runs (run_with_cache, run_with_hooks) compute every activation at every position, with the bridge's
    shapes (`blocks.0.mlp.hook_post` [batch, pos, d_mlp]). The weights read as TransformerLens stacks them: `W_E, W_pos, W_U, b_U`,
    `W_Q/W_K/W_V [n_layers, n_heads, d_model, d_head]`, `W_O`, `W_in`, `b_in`, `W_out`, `b_out`, `QK`, `OV`.
    """

    def __init__(self, cfg: ModelConfig, d_vocab: int, d_vocab_out: int, n_ctx: int, predict_all: bool = False):
        super().__init__()
        self.cfg = HookedConfig.of(cfg, d_vocab, d_vocab_out, n_ctx, predict_all=predict_all)
        self.d_vocab, self.d_vocab_out, self.n_ctx = d_vocab, d_vocab_out, n_ctx
        self.embed = Embed(d_vocab, cfg.d_model)
        self.pos_embed = PosEmbed(n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList([Block(cfg, n_ctx) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNorm(cfg.d_model) if cfg.normalization_type == "LN" else nn.Identity()
        self.unembed = Unembed(cfg.d_model, d_vocab_out)
        self.hook_embed, self.hook_pos_embed = HookSite(), HookSite()
        self.attention_hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(cfg.n_layers)]
        add_zero_biases(self)
        self.setup()

    @classmethod
    def for_task(cls, cfg: ModelConfig, data: TaskData) -> "Transformer":
        """Sized to the task; logits at every position for the sequence tasks."""
        sequence = data.structure.get("kind") == "sequence"
        return cls(cfg, data.d_vocab, data.d_vocab_out, data.n_ctx, predict_all=sequence)

    def init_weights(self, generator: torch.Generator) -> None:
        """N(0, 1/d_model) everywhere, W_U N(0, 1/d_vocab_out), biases 0, LayerNorm (1, 0) (Nanda et al. 2023)."""
        for name, p in self.named_parameters():
            if name.endswith(("b_in", "b_out")) or name.startswith("ln") or ".ln" in name:
                continue
            std = 1 / math.sqrt(self.d_vocab_out if name == "unembed.W_U" else self.cfg.d_model)
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    def listening(self) -> bool:
        """True when any hook is attached (run_with_cache, run_with_hooks): then every activation is computed."""
        hooks = self.__dict__.get("hook_dict", {})  # a plain model (plain_models) has none
        return any(hp._forward_hooks or hp._backward_hooks for hp in hooks.values())

    def forward(self, tokens: torch.Tensor, return_type: str | None = "logits", *, labels: torch.Tensor | None = None,
                loss: str = "ce") -> torch.Tensor:
        """Logits at every position [batch, pos, d_vocab_out], as every TransformerLens model returns them (the
        answer after '=' is `logits[:, -1]`; `answer_logits` computes only that one, faster).

        return_type "loss": the task's loss of the last position against `labels` [batch] (the answer after '=';
        the next-token loss over [a, b, =] that TransformerLens computes is meaningless here; sequence tasks: every
        target position, labels [batch, pos] with -100 elsewhere); `loss` names the task's loss (`run.data.loss`).
        "both": (logits, loss). None: nothing.
        """
        return answer_loss(self._logits(tokens, last_only=False), labels, return_type, loss)

    def answer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, d_vocab_out] the logits at the last position only (the answer after '='): the lean path, whose
        last block runs at that position alone (under hooks too: its activations are then [batch, 1, ...])."""
        return self._logits(tokens, last_only=True)[:, -1]

    def scored_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """What the task's loss reads: `answer_logits`, or every position for the sequence tasks."""
        return self._logits(tokens, last_only=False) if self.cfg.predict_all else self.answer_logits(tokens)

    def _logits(self, tokens: torch.Tensor, last_only: bool) -> torch.Tensor:
        """[batch, pos, d_vocab_out], or [batch, 1, d_vocab_out] at the last position when `last_only`."""
        listening = self.listening()
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        qkv = None
        if not listening:  # fast path: block 0's q, k, v from the (position, token) table
            table = self.blocks[0].ln1(self.embed.W_E[None] + self.pos_embed.W_pos[: tokens.shape[1], None])
            qkv = self.blocks[0].attn.project_table(table, tokens, last_only=last_only and len(self.blocks) == 1)
        for i, block in enumerate(self.blocks):
            resid = block(resid, last_only=last_only and i == len(self.blocks) - 1, qkv=qkv if i == 0 else None)
        return self.unembed(self.ln_final(resid))

    # --- TransformerLens weight views (stacked over layers) ---

    def _stack(self, name: str) -> torch.Tensor:
        module, attr = name.rsplit(".", 1)
        return torch.stack([getattr(b.get_submodule(module), attr) for b in self.blocks])

    W_E = property(lambda self: self.embed.W_E, doc="[d_vocab, d_model]")
    W_pos = property(lambda self: self.pos_embed.W_pos, doc="[n_ctx, d_model]")
    W_U = property(lambda self: self.unembed.W_U, doc="[d_model, d_vocab_out]")
    W_Q = property(lambda self: self._stack("attn.W_Q"), doc="[n_layers, n_heads, d_model, d_head]")
    W_K = property(lambda self: self._stack("attn.W_K"), doc="[n_layers, n_heads, d_model, d_head]")
    W_V = property(lambda self: self._stack("attn.W_V"), doc="[n_layers, n_heads, d_model, d_head]")
    W_O = property(lambda self: self._stack("attn.W_O"), doc="[n_layers, n_heads, d_head, d_model]")
    W_in = property(lambda self: self._mlp_stack("mlp.W_in"), doc="[n_layers, d_model, d_mlp]")
    b_in = property(lambda self: self._mlp_stack("mlp.b_in"), doc="[n_layers, d_mlp]")
    W_out = property(lambda self: self._mlp_stack("mlp.W_out"), doc="[n_layers, d_mlp, d_model]")
    b_out = property(lambda self: self._mlp_stack("mlp.b_out"), doc="[n_layers, d_model]")

    def _mlp_stack(self, name: str) -> torch.Tensor:
        self._need_mlp()
        return self._stack(name)

    def _need_mlp(self) -> None:
        if self.cfg.attn_only:
            raise ValueError("this transformer is attention-only (d_mlp 0): it has no MLP neurons or weights")

    b_Q = property(lambda self: self._stack("attn.b_Q"), doc="[n_layers, n_heads, d_head] zeros (no such bias)")
    b_K = property(lambda self: self._stack("attn.b_K"), doc="[n_layers, n_heads, d_head] zeros (no such bias)")
    b_V = property(lambda self: self._stack("attn.b_V"), doc="[n_layers, n_heads, d_head] zeros (no such bias)")
    b_O = property(lambda self: self._stack("attn.b_O"), doc="[n_layers, d_model] zeros (no such bias)")
    b_U = property(lambda self: self.unembed.b_U, doc="[d_vocab_out] zeros (no such bias)")

    @property
    def QK(self) -> FactoredMatrix:
        """[n_layers, n_heads, d_model, d_model] W_Q W_K^T, factored."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """[n_layers, n_heads, d_model, d_model] W_V W_O, factored."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)

    # --- the probes' interface (see GrokModel) ---

    embed_matrix = W_E
    n_neuron_layers = property(lambda self: self.cfg.n_layers)

    def neuron_hook(self, layer: int = -1) -> str:
        self._need_mlp()
        return f"blocks.{self._layer(layer)}.mlp.hook_post"

    def neuron_weights(self, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        self._need_mlp()
        mlp = self.blocks[self._layer(layer)].mlp
        return mlp.W_in, mlp.b_in

    def neuron_readout(self, layer: int = -1, approximate: bool = False) -> torch.Tensor | None:
        """[d_mlp, d_vocab_out] W_out W_U for the last block without a final LayerNorm, else None; with
        `approximate`, the last block's W_out (ln_final gain * W_U) under a final LayerNorm (its scale ignored)."""
        self._need_mlp()
        layer = self._layer(layer)
        if layer != self.cfg.n_layers - 1:
            return None
        W_U = self.W_U
        if self.cfg.normalization_type == "LN":
            if not approximate:
                return None
            W_U = self.ln_final.w[:, None] * W_U
        return self.blocks[layer].mlp.W_out @ W_U

    def neuron_resid_hook(self, layer: int = -1) -> str:
        self._need_mlp()
        return f"blocks.{self._layer(layer)}.hook_resid_mid"

    def logits_from_neurons(self, post: torch.Tensor, resid_mid: torch.Tensor) -> torch.Tensor:
        """[R, d_vocab_out] logits from the last block's neurons post [R, d_mlp] and its resid_mid [R, d_model]."""
        self._need_mlp()
        mlp = self.blocks[-1].mlp
        return self.unembed(self.ln_final(resid_mid + post @ mlp.W_out + mlp.b_out))
