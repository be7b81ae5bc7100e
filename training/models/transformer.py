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
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn

from training.config import ModelConfig
from training.models.base import ACTIVATIONS, GrokModel, HookSite, answer_loss
from training.models.batched import Params, affine, gather_rows, layer_norm, mm, no_dropout, softmax
from training.models.tl_compat import HookedConfig, TLSurface, add_zero_biases  # noqa: F401  (HookedConfig re-exported)
from training.tasks.data import TaskData


if TYPE_CHECKING:
    from transformer_lens import FactoredMatrix


class LayerNorm(nn.Module):
    """Weights `w`, `b` and TransformerLens' hook sites; the forward's LayerNorm is `batched.layer_norm`, which this
    module also runs when TransformerLens calls it (`model.ln_final(x)` in `ActivationCache.apply_ln_to_stack`)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale, self.hook_normalized = HookSite(), HookSite()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.w, self.b)


class Attention(nn.Module):
    """Causal multi-head attention without biases (Nanda et al. 2023): its weights and hook sites."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(H, d, e))
        self.W_K = nn.Parameter(torch.empty(H, d, e))
        self.W_V = nn.Parameter(torch.empty(H, d, e))
        self.W_O = nn.Parameter(torch.empty(H, e, d))
        self.hook_q, self.hook_k, self.hook_v = HookSite(), HookSite(), HookSite()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookSite(), HookSite(), HookSite()


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre, self.hook_post = HookSite(), HookSite()


class Block(nn.Module):
    """Attention then MLP; attention-only (no ln2, mlp or hook_mlp_out; resid_post = resid_mid) when d_mlp = 0."""

    hook_out_is_single_residual_stream = True  # TransformerLens' logit lens reads resid_post as the stream unembedded

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ln, self.attn_only = cfg.normalization_type == "LN", cfg.d_mlp == 0
        self.ln1 = LayerNorm(cfg.d_model) if ln else nn.Identity()
        self.attn = Attention(cfg)
        if not self.attn_only:
            self.ln2 = LayerNorm(cfg.d_model) if ln else nn.Identity()
            self.mlp = MLP(cfg)
        for name in ("resid_pre", "attn_out", "resid_mid", "resid_post") + (() if self.attn_only else ("mlp_out",)):
            setattr(self, f"hook_{name}", HookSite())


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab_out: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # TransformerLens' recipes call model.unembed(x)
        return x @ self.W_U


def transformer_forward(model: "Transformer", exact: bool = False) -> Callable:
    """The transformer's one forward, over K members' parameters stacked [K, ...] and tokens [K, batch, pos]:
    forward(params, tokens, dropout, every, site) -> logits [K, batch, pos, d_vocab_out] (`every`, the default for
    the sequence tasks), else [K, batch, d_vocab_out] at the last position, whose block then runs there alone.

    Without hooks (training, evaluation, probes) block 0 projects its q, k, v from the n_ctx * d_vocab rows of the
    (position, token) table once and gathers them, instead of projecting batch * n_ctx rows. With `site(name, x)`
    (a hooked run of the module, K = 1) every activation is computed and passed through TransformerLens' hook site
    `name`, whose return value flows on, as in a HookedTransformer."""
    cfg, d_vocab = model.cfg, model.d_vocab
    act, ln, L = ACTIVATIONS[cfg.act_fn], cfg.normalization_type == "LN", cfg.n_layers
    H, e, scale = cfg.n_heads, cfg.d_head, cfg.d_head ** 0.5

    def norm(x: torch.Tensor, p: Params, name: str, site: Callable | None) -> torch.Tensor:
        return _layer_norm(x, p, name, site) if ln else x

    def forward(p: Params, tokens: torch.Tensor, dropout=no_dropout, every: bool = cfg.predict_all,
                site: Callable | None = None) -> torch.Tensor:
        hooked = site is not None
        at = site if hooked else (lambda name, x: x)
        W_E, W_pos = p["embed.W_E"], p["pos_embed.W_pos"]
        K, n = W_E.shape[0], tokens.shape[-1]
        # row (position, token) of member k's table: the gather index of every input token
        rows = tokens + torch.arange(n, device=tokens.device) * d_vocab
        rows = rows + torch.arange(K, device=tokens.device).view(K, 1, 1) * (n * d_vocab)
        table = (W_E.unsqueeze(1) + W_pos[:, :n].unsqueeze(2)).flatten(1, 2)  # [K, n*d_vocab, d_model]
        if hooked:
            vocab = tokens + torch.arange(K, device=tokens.device).view(K, 1, 1) * d_vocab
            resid = (at("hook_embed", gather_rows(W_E.flatten(0, 1), vocab))
                     + at("hook_pos_embed", W_pos[:, :n].unsqueeze(1).expand(K, tokens.shape[1], n, -1)))
        else:  # embed + pos_embed [K, B, n, d_model]; one block reads its residual only at the last position
            resid = gather_rows(table.flatten(0, 1), rows[..., -1:] if L == 1 and not every else rows)
        for i in range(L):
            last, b = i == L - 1 and not every, f"blocks.{i}."
            resid = at(b + "hook_resid_pre", resid)
            if i == 0 and not hooked:  # block 0 sees only embeddings: project the table rows once, then gather
                t = norm(table, p, "blocks.0.ln1", None)
                q, k, v = (_project(t, p[f"blocks.0.attn.{name}"], r, exact).unflatten(-1, (H, e)) for name, r in
                           (("W_Q", rows[..., -1:] if last else rows), ("W_K", rows), ("W_V", rows)))
            else:
                x = norm(resid, p, b + "ln1", site)
                k, v = (mm(x, _heads(p[f"{b}attn.{nm}"]), exact).unflatten(-1, (H, e)) for nm in ("W_K", "W_V"))
                q = mm(x[:, :, -1:] if last else x, _heads(p[f"{b}attn.W_Q"]), exact).unflatten(-1, (H, e))
            attn_out = at(b + "hook_attn_out", dropout(_attention(p, i, (q, k, v), last, at, hooked, scale, exact)))
            resid = at(b + "hook_resid_mid", (_last(resid) if last else resid) + attn_out)
            if cfg.attn_only:
                resid = at(b + "hook_resid_post", resid)
                continue
            x = norm(resid, p, b + "ln2", site).flatten(1, 2)
            pre = at(b + "mlp.hook_pre", affine(p[b + "mlp.b_in"], x, p[b + "mlp.W_in"], exact).view(*resid.shape[:-1], -1))
            post = at(b + "mlp.hook_post", act(pre)).flatten(1, 2)
            mlp_out = affine(p[b + "mlp.b_out"], post, p[b + "mlp.W_out"], exact).view(resid.shape)
            resid = at(b + "hook_resid_post", resid + at(b + "hook_mlp_out", dropout(mlp_out)))
        if hooked and not every:  # ln_final's hooks see [batch, 1, d_model], as in a hooked run of the last block
            return mm(norm(resid[:, :, -1:], p, "ln_final", site), p["unembed.W_U"], exact)[:, :, -1]
        return mm(norm(resid if every else _last(resid).squeeze(2), p, "ln_final", site), p["unembed.W_U"], exact)

    return forward


def _last(x: torch.Tensor) -> torch.Tensor:
    """x [K, B, n, ...] at the last position, [K, B, 1, ...]; x itself when it holds that one only (a slice's
    backward writes its gradient into zeros of x's shape: a copy of every activation, here for nothing)."""
    return x if x.shape[2] == 1 else x[:, :, -1:]


def _layer_norm(x: torch.Tensor, p: Params, name: str, site: Callable | None) -> torch.Tensor:
    """LayerNorm `name` (weights [K, d_model]) over x [K, ...]; its hook sites `name.hook_scale`, ... when hooked."""
    w, b = p[f"{name}.w"], p[f"{name}.b"]
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[-1],)
    hooked = None if site is None else (lambda hook, t: site(f"{name}.{hook}", t))
    return layer_norm(x, w.view(shape), b.view(shape), hooked)


def _attention(p: Params, i: int, qkv: tuple, last: bool, at: Callable, hooked: bool, scale: float,
               exact: bool) -> torch.Tensor:
    """Block i's attention: q [K, B, q_pos, H, e], k, v [K, B, n, H, e] -> [K, B, q_pos, d_model]."""
    a = f"blocks.{i}.attn."
    q, k, v = at(a + "hook_q", qkv[0]), at(a + "hook_k", qkv[1]), at(a + "hook_v", qkv[2])
    if last and not hooked:  # one query: broadcast products beat batch * n_heads tiny matmuls
        pattern = softmax((q * k).sum(-1) / scale, 2, exact)  # [K, B, n, H]
        z = (pattern.unsqueeze(-1) * v).sum(2, keepdim=True)  # [K, B, 1, H, e]
    else:
        n, n_q = k.shape[2], q.shape[2]
        scores = torch.einsum("kbqhe,kbphe->kbhqp", q, k) / scale
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool, device=q.device))[n - n_q:]  # the queries' rows
        scores = at(a + "hook_attn_scores", scores.masked_fill(~mask, float("-inf")))
        pattern = at(a + "hook_pattern", softmax(scores, -1, exact))
        z = torch.einsum("kbhqp,kbphe->kbqhe", pattern, v)
    return mm(at(a + "hook_z", z).flatten(-2), p[a + "W_O"].flatten(1, 2), exact)


def _project(table: torch.Tensor, W: torch.Tensor, rows: torch.Tensor, exact: bool) -> torch.Tensor:
    """Every head's projection W [K, H, d, e] of the table [K, N, d] at its rows [K, ...] -> [K, ..., H*e]."""
    return gather_rows(mm(table, _heads(W), exact).flatten(0, 1), rows)


def _heads(W: torch.Tensor) -> torch.Tensor:
    """W_Q/W_K/W_V [K, H, d, e] -> [K, d, H*e] (one matmul projects every head)."""
    return W.permute(0, 2, 1, 3).flatten(2)


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
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
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

    def forward(self, tokens: torch.Tensor, return_type: str | None = "logits", *, labels: torch.Tensor | None = None,
                loss: str = "ce") -> torch.Tensor:
        """Logits at every position [batch, pos, d_vocab_out], as every TransformerLens model returns them (the
        answer after '=' is `logits[:, -1]`; `answer_logits` computes only that one, faster).

        return_type "loss": the task's loss of the last position against `labels` [batch] (the answer after '=';
        the next-token loss over [a, b, =] that TransformerLens computes is meaningless here; sequence tasks: every
        target position, labels [batch, pos] with -100 elsewhere); `loss` names the task's loss (`run.data.loss`).
        "both": (logits, loss). None: nothing.
        """
        return answer_loss(self._run(tokens, every=True), labels, return_type, loss)

    def answer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, d_vocab_out] the logits at the last position only (the answer after '='): the lean path, whose
        last block runs at that position alone (under hooks too: its activations are then [batch, 1, ...])."""
        return self._run(tokens, every=False)

    def scored_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """What the task's loss reads: `answer_logits`, or every position for the sequence tasks."""
        return self._run(tokens, every=self.cfg.predict_all)

    def batched_forward(self, exact: bool = False) -> Callable:
        """The one forward, over members stacked [K, ...] (`transformer_forward`): training runs it as it is."""
        return transformer_forward(self, exact)

    def _run(self, tokens: torch.Tensor, every: bool) -> torch.Tensor:
        """The one forward on this model's own parameters (K = 1), through its hook sites when a hook listens."""
        params, dropout, site = self.as_member()
        return transformer_forward(self)(params, tokens.unsqueeze(0), dropout, every=every, site=site)[0]

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
