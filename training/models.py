"""The networks: a lean decoder transformer, an MLP and an LSTM, all `HookedRootModule`s.

Weights and hooks carry TransformerLens names (`embed.W_E`, `blocks.0.attn.W_Q [n_heads, d_model, d_head]`,
`blocks.0.mlp.hook_post`, ...), so `model.run_with_cache(tokens)` reads like TransformerLens.

`model(tokens)` and `run_with_cache(tokens)` return logits at every position [batch, pos, d_vocab_out], as
TransformerLens does (equal to `to_bridge(model)` on every position; the answer after '=' is `logits[:, -1]`).
`model.answer_logits(tokens)` [batch, d_vocab_out] computes the answer position only: the last block runs queries,
attention and MLP at one position instead of n_ctx, ~3x fewer FLOPs on the [a, b, =] tasks. The TransformerLens
surface beyond the weights (config fields, biases, `accumulated_bias`, ...) is in training.tl_compat.

Training's own copies of a model (`plain_models()`: the Trainer's, the run's checks) only need its parameters and
its forward, so they stay plain `nn.Module`s whose hook sites are identities, and a training process never imports
TransformerLens (whose package import, with the Hugging Face libraries it pulls in, costs more than torch's). Every
other model becomes a `HookedRootModule` with `HookPoint`s at those sites when its `__init__` calls `setup()`.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.config import ModelConfig
from training.losses import compute_loss
from training.registry import check_pairing, model_spec
from training.taskdata import TaskData
from training.tl_compat import HookedConfig, TLSurface, add_zero_biases  # noqa: F401  (HookedConfig re-exported)

if TYPE_CHECKING:
    from transformer_lens import ActivationCache, FactoredMatrix

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh}


_PLAIN: ContextVar[bool] = ContextVar("plain_models", default=False)


@contextmanager
def plain_models() -> Iterator[None]:
    """Models built inside stay plain (no TransformerLens): training's own copies, which only need their parameters
    and their forward. The bits are those of a hooked model: a hook site is an identity either way."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


class HookSite(nn.Identity):
    """Where a TransformerLens `HookPoint` goes: `setup()` puts one here (an identity too, until a hook is added)."""


@lru_cache(maxsize=None)
def _hooked(cls: type) -> type:
    """`cls` with TransformerLens' `HookedRootModule` behind it (same name: the model still reads as `cls`)."""
    from transformer_lens import HookedRootModule

    return type(cls.__name__, (cls, HookedRootModule), {"__module__": cls.__module__, "__doc__": cls.__doc__,
                                                         "__qualname__": cls.__qualname__})


def hook_up(model: "GrokModel") -> None:
    """Make `model` a TransformerLens `HookedRootModule`: each hook site a `HookPoint`, its hook and module
    dictionaries built (`HookedRootModule.setup`). No parameter changes, so its bits do not either."""
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    if not isinstance(model, HookedRootModule):
        for module in list(model.modules()):
            for name, child in list(module._modules.items()):
                if type(child) is HookSite:
                    module._modules[name] = HookPoint()
        model.__class__ = _hooked(type(model))
        model.is_caching, model.context_level = False, 0  # what HookedRootModule.__init__ sets
    HookedRootModule.setup(model)


class GrokModel(nn.Module):
    """What every model shows the probes, whatever its architecture (TransformerLens names):

    - `run_with_cache` returns a TransformerLens `ActivationCache`; `answer_logits(x)` [batch, d_vocab_out] the
      logits at the answer ('='), `logits_at_answer(out)` the same read off a forward's output;
    - `embed_matrix` [d_vocab, d_embed]: token -> what the network reads (the MLP model's per-operand tables side
      by side), `embed_tables` [n_tables, d_vocab, d_model] (one table per operand for the MLP model, else one);
    - `W_U` [d_final, d_vocab_out] and `b_U` [d_vocab_out]: the unembedding (every model has them);
    - the hidden neurons: `n_neuron_layers`, `neuron_hook(layer)` (their `hook_post`), `neuron_activations(x,
      layer)` [batch, d_mlp] at the answer position, `neuron_weights(layer)` (W_in [d_in, d_mlp], b_in [d_mlp])
      and `neuron_readout(layer)` [d_mlp, d_vocab_out] when the logits are affine in them (else None, or with
      `approximate=True` the map ignoring a final LayerNorm's scale); for a
      non-affine read-out `neuron_resid_hook(layer)` and `logits_from_neurons(post, resid)` finish the forward;
    - `attention_hooks`: the `hook_pattern` names (empty without attention).

    A new model is one subclass that fills these in; every probe then works on it unchanged.
    """

    cfg: HookedConfig
    attention_hooks: list[str] = []

    def setup(self) -> None:
        """Called last in every model's `__init__`: a TransformerLens `HookedRootModule` from here on (`hook_up`),
        unless built inside `plain_models()`."""
        if not _PLAIN.get():
            hook_up(self)

    def run_with_cache(self, *args, **kwargs) -> tuple[torch.Tensor, ActivationCache]:
        """(output, ActivationCache): `cache["post", 0]`, `cache.stack_activation("pattern")`, ..."""
        from transformer_lens import ActivationCache

        out, cache = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(dict(cache), self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

    def answer_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, d_vocab_out] the logits at the answer (the last position; the only one without positions)."""
        return self(x)

    def scored_logits(self, x: torch.Tensor) -> torch.Tensor:
        """What the task's loss reads (training, evaluation): the forward's output for a model without positions."""
        return self(x)

    def logits_at_answer(self, out: torch.Tensor) -> torch.Tensor:
        """[batch, d_vocab_out] the answer's logits from a forward's output (`run_with_cache`, `run_with_hooks`)."""
        return out[:, -1] if out.ndim == 3 else out

    @property
    def embed_tables(self) -> torch.Tensor:
        return self.embed_matrix[None]

    def _layer(self, layer: int) -> int:
        n = self.n_neuron_layers
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} out of range: the model has {n} hidden layer(s)")
        return layer % n

    def neuron_activations(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """[batch, d_mlp] the neurons of hidden layer `layer` on inputs `x`, at the answer (last) position."""
        name = self.neuron_hook(layer)
        with torch.no_grad():
            _, cache = self.run_with_cache(x, names_filter=name)
        post = cache[name]
        return post[:, -1] if post.ndim == 3 else post

    def neuron_resid_hook(self, layer: int = -1) -> str | None:
        return None

    # what each model fills in (W_U and b_U too, as parameters or views)
    embed_matrix = property(lambda self: _missing(self, "embed_matrix"))
    n_neuron_layers = property(lambda self: _missing(self, "n_neuron_layers"))

    def neuron_hook(self, layer: int = -1) -> str:
        _missing(self, "neuron_hook")

    def neuron_weights(self, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        _missing(self, "neuron_weights")

    def neuron_readout(self, layer: int = -1, approximate: bool = False) -> torch.Tensor | None:
        _missing(self, "neuron_readout")

    def tokens_to_residual_directions(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., d_final] the unembedding columns of `tokens` (direct logit attribution directions)."""
        return self.W_U[:, tokens].movedim(0, -1)


def _missing(model: GrokModel, name: str):
    raise NotImplementedError(f"{type(model).__name__} does not define `{name}` of the model interface")


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


def answer_loss(logits: torch.Tensor, labels: torch.Tensor | None, return_type: str, loss: str = "ce"):
    """`forward`'s return for `return_type` ("logits", "loss", "both" or None): the task's `loss` ("ce", "mse",
    "hinge", "seq_ce", as training computes it, in float64) of the answer (last-position) logits against `labels` [batch]."""
    if return_type == "logits" or return_type is None:
        return logits if return_type else None
    if return_type not in ("loss", "both"):
        raise ValueError(f"return_type must be 'logits', 'loss' or 'both', not {return_type!r}")
    if labels is None:
        raise ValueError("return_type='loss' needs labels: the answers [batch] (e.g. run.data.labels)")
    if loss == "seq_ce":  # sequence tasks: every target position, labels [batch, pos]
        value = compute_loss(logits, labels, loss, float64=True)
    else:
        value = compute_loss(logits if logits.ndim == 2 else logits[:, -1], labels, loss, float64=True)
    return value if return_type == "loss" else (logits, value)


class MLPModel(GrokModel):
    """Per-operand embeddings, concatenated, then ReLU hidden layers and an unembedding (Chughtai et al. 2023).

    Token tasks: tokens [batch, n_ctx] (the trailing '=' is ignored) -> logits [batch, d_vocab_out].
    Vector tasks (d_vocab == 0): inputs [batch, d_in] -> outputs [batch, d_vocab_out].
    """

    def __init__(self, cfg: ModelConfig, d_vocab: int, d_vocab_out: int, n_ctx: int, d_in: int = 0):
        super().__init__()
        self.cfg = HookedConfig.of(cfg, d_vocab, d_vocab_out, n_ctx, d_in)
        self.d_vocab, self.d_vocab_out, self.n_ctx = d_vocab, d_vocab_out, n_ctx
        self.tokens = d_vocab > 0
        self.n_operands = max(n_ctx - 1, 1)
        if self.tokens:
            self.W_E = nn.Parameter(torch.empty(self.n_operands, d_vocab, cfg.d_model))
            d_in = self.n_operands * cfg.d_model
        self.hook_embed = HookSite()
        widths = [d_in] + [cfg.d_mlp] * cfg.n_layers
        self.layers = nn.ModuleList()
        for a, b in zip(widths[:-1], widths[1:]):
            layer = nn.Module()
            layer.W_in = nn.Parameter(torch.empty(a, b))
            layer.b_in = nn.Parameter(torch.zeros(b))
            layer.hook_pre, layer.hook_post = HookSite(), HookSite()
            self.layers.append(layer)
        self.W_U = nn.Parameter(torch.empty(widths[-1], d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(d_vocab_out))
        self.act = ACTIVATIONS[cfg.act_fn]
        self.dropout = nn.Dropout(cfg.dropout)
        self.setup()

    @classmethod
    def for_task(cls, cfg: ModelConfig, data: TaskData) -> "MLPModel":
        return cls(cfg, data.d_vocab, data.d_vocab_out, data.n_ctx, data.d_in)

    def init_weights(self, generator: torch.Generator) -> None:
        """N(0, 1/fan_in) weights (W_E: N(0, 1/d_model)), zero biases."""
        for name, p in self.named_parameters():
            if name.endswith(("b_in", "b_U")):
                continue
            fan_in = self.cfg.d_model if name == "W_E" else p.shape[0]
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, *, return_type: str = "logits", labels: torch.Tensor | None = None,
                loss: str = "ce") -> torch.Tensor:
        if self.tokens:
            idx = torch.arange(self.n_operands, device=x.device)
            x = self.hook_embed(self.W_E[idx, x[:, : self.n_operands]].flatten(1))
        for layer in self.layers:
            x = self.dropout(layer.hook_post(self.act(layer.hook_pre(x @ layer.W_in + layer.b_in))))
        return answer_loss(x @ self.W_U + self.b_U, labels, return_type, loss)

    # --- the probes' interface (see GrokModel); W_E is [n_operands, d_vocab, d_model] here ---

    @property
    def embed_matrix(self) -> torch.Tensor:
        """[d_vocab, n_operands * d_model]: token t's row is its embedding as each operand, side by side."""
        return self.W_E.permute(1, 0, 2).flatten(1)

    embed_tables = property(lambda self: self.W_E)
    n_neuron_layers = property(lambda self: len(self.layers))

    def neuron_hook(self, layer: int = -1) -> str:
        return f"layers.{self._layer(layer)}.hook_post"

    def neuron_weights(self, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        mod = self.layers[self._layer(layer)]
        return mod.W_in, mod.b_in

    def neuron_readout(self, layer: int = -1, approximate: bool = False) -> torch.Tensor | None:
        return self.W_U if self._layer(layer) == len(self.layers) - 1 else None


class LSTMModel(GrokModel):
    """Token embedding, an `n_layers` LSTM of width d_model, unembedding of the last hidden state."""

    @classmethod
    def for_task(cls, cfg: ModelConfig, data: TaskData) -> "LSTMModel":
        return cls(cfg, data.d_vocab, data.d_vocab_out, data.n_ctx)

    def __init__(self, cfg: ModelConfig, d_vocab: int, d_vocab_out: int, n_ctx: int):
        super().__init__()
        self.cfg = HookedConfig.of(cfg, d_vocab, d_vocab_out, n_ctx)
        self.d_vocab, self.d_vocab_out, self.n_ctx = d_vocab, d_vocab_out, n_ctx
        self.W_E = nn.Parameter(torch.empty(d_vocab, cfg.d_model))
        self.lstm = nn.LSTM(cfg.d_model, cfg.d_model, cfg.n_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, d_vocab_out))
        self.hook_embed, self.hook_final = HookSite(), HookSite()
        self.setup()

    def init_weights(self, generator: torch.Generator) -> None:
        """Embedding N(0, 1), LSTM U(-1/sqrt(d), 1/sqrt(d)) as PyTorch does, W_U N(0, 1/d_model)."""
        d = self.cfg.d_model
        with torch.no_grad():
            self.W_E.copy_(torch.randn(self.W_E.shape, generator=generator))
            for p in self.lstm.parameters():
                p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) / math.sqrt(d))
            self.W_U.copy_(torch.randn(self.W_U.shape, generator=generator) / math.sqrt(d))

    def forward(self, tokens: torch.Tensor, *, return_type: str = "logits", labels: torch.Tensor | None = None,
                loss: str = "ce") -> torch.Tensor:
        out, _ = self.lstm(self.hook_embed(F.embedding(tokens, self.W_E)))
        return answer_loss(self.hook_final(out[:, -1]) @ self.W_U, labels, return_type, loss)

    # --- the probes' interface (see GrokModel): the "neurons" are the last hidden state, read out by W_U ---

    embed_matrix = property(lambda self: self.W_E)
    n_neuron_layers = property(lambda self: 1)
    b_U = property(lambda self: torch.zeros_like(self.W_U[0]))

    def neuron_hook(self, layer: int = -1) -> str:
        self._layer(layer)
        return "hook_final"

    def neuron_weights(self, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """The last LSTM layer's output-gate input weights [d_in, d_model] and bias (its hidden units' inputs)."""
        self._layer(layer)
        d, last = self.cfg.d_model, self.cfg.n_layers - 1
        W, b = getattr(self.lstm, f"weight_ih_l{last}"), getattr(self.lstm, f"bias_ih_l{last}")
        return W[3 * d :].T, b[3 * d :]

    def neuron_readout(self, layer: int = -1, approximate: bool = False) -> torch.Tensor:
        self._layer(layer)
        return self.W_U


def scoring_module(model: nn.Module) -> nn.Module:
    """`model` as the single step path calls it (`training.batched.generic_forward`, through functional_call): for
    the transformer a shallow copy sharing its submodules (so the same parameter names and maths) whose forward is
    `scored_logits`; any other model as it is (its forward already returns what the loss reads)."""
    if not isinstance(model, Transformer):
        return model
    view = copy.copy(model)
    view.forward = view.scored_logits
    return view


def build_model(cfg: ModelConfig, data: TaskData, seed: int = 0) -> nn.Module:
    """The model for `cfg` (its spec in training.model_specs) sized to the task, initialised from `seed` and scaled
    by `cfg.init_scale`."""
    spec = model_spec(cfg.model)
    check_pairing(spec, data.name, vectors=data.d_vocab == 0, sequence=data.structure.get("kind") == "sequence")
    model = spec.build(cfg, data)
    model.init_weights(torch.Generator().manual_seed(seed))
    if cfg.init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(cfg.init_scale)
    return model


# --- TransformerBridge: an exact weight map, so any checkpoint opens in TransformerLens 4.x -------------------


def bridge_config(model: Transformer):
    from transformer_lens import TransformerBridgeConfig

    c = model.cfg
    return TransformerBridgeConfig(
        d_model=c.d_model, d_head=c.d_head, n_layers=c.n_layers, n_ctx=model.n_ctx, n_heads=c.n_heads,
        d_vocab=model.d_vocab, d_vocab_out=model.d_vocab_out, d_mlp=c.d_mlp, act_fn=c.act_fn,
        normalization_type="LN" if c.normalization_type == "LN" else None, eps=1e-5, attn_only=c.attn_only,
    )


def bridge_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under the structural names of the bridge's native model (after dropping `_original_component`).

    Heads are laid out head-major in the bridge's fused q/k/v/o linears: row h*d_head + e of q.weight is W_Q[h, :, e].
    """
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    H, d, e = model.cfg.n_heads, model.cfg.d_model, model.cfg.d_head
    out = {"tok_embed.weight": sd["embed.W_E"], "pos.weight": sd["pos_embed.W_pos"],
           "head.weight": sd["unembed.W_U"].T, "head.bias": torch.zeros(model.d_vocab_out)}
    if "ln_final.w" in sd:
        out["ln_out.weight"], out["ln_out.bias"] = sd["ln_final.w"], sd["ln_final.b"]
    for i in range(model.cfg.n_layers):
        b, L = f"blocks.{i}.", f"layers.{i}."
        for x in "QKV":
            out[L + f"attn.{x.lower()}.weight"] = sd[b + f"attn.W_{x}"].permute(0, 2, 1).reshape(H * e, d)
            out[L + f"attn.{x.lower()}.bias"] = torch.zeros(H * e)
        out[L + "attn.o.weight"] = sd[b + "attn.W_O"].reshape(H * e, d).T
        out[L + "attn.o.bias"] = torch.zeros(d)
        if b + "ln1.w" in sd:
            out[L + "ln1.weight"], out[L + "ln1.bias"] = sd[b + "ln1.w"], sd[b + "ln1.b"]
        if model.cfg.attn_only:
            continue
        for name in ("fc_in", "in"):
            out[L + f"mlp.{name}.weight"], out[L + f"mlp.{name}.bias"] = sd[b + "mlp.W_in"].T, sd[b + "mlp.b_in"]
        for name in ("fc_out", "out"):
            out[L + f"mlp.{name}.weight"], out[L + f"mlp.{name}.bias"] = sd[b + "mlp.W_out"].T, sd[b + "mlp.b_out"]
        if b + "ln2.w" in sd:
            out[L + "ln2.weight"], out[L + "ln2.bias"] = sd[b + "ln2.w"], sd[b + "ln2.b"]
    return out


def to_bridge(model: Transformer):
    """A `TransformerBridge.boot_native` model holding exactly `model`'s weights (eval mode)."""
    from transformer_lens import TransformerBridge

    if not isinstance(model, Transformer):
        raise TypeError("only the transformer has a TransformerBridge counterpart")
    bridge = TransformerBridge.boot_native(bridge_config(model))
    native = bridge.original_model
    mapped = bridge_state_dict(model)
    target = native.state_dict()
    new = {}
    for key in target:
        structural = key.replace("._original_component", "").replace("_original_component.", "")
        new[key] = mapped[structural].to(target[key].dtype)
    native.load_state_dict(new, strict=True)
    return bridge.eval()


def from_bridge(bridge) -> Transformer:
    """Our `Transformer` holding a `TransformerBridge.boot_native` model's weights (the inverse of `to_bridge`;
    eval mode). The bridge's attention and unembedding biases must be zero: our transformer has none."""
    c = bridge.cfg
    norm = "LN" if c.normalization_type == "LN" else "none"
    attn_only = bool(getattr(c, "attn_only", False))
    cfg = ModelConfig(n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head,
                      d_mlp=0 if attn_only else c.d_mlp, act_fn=c.act_fn, normalization_type=norm)
    model = Transformer(cfg, c.d_vocab, c.d_vocab_out, c.n_ctx)
    native = {k.replace("._original_component", "").replace("_original_component.", ""): v.detach()
              for k, v in bridge.original_model.state_dict().items()}
    biases = [k for k, v in native.items() if k.endswith(("q.bias", "k.bias", "v.bias", "o.bias", "head.bias"))
              and v.abs().max() > 0]
    if biases:
        raise ValueError(f"the bridge has non-zero biases our transformer lacks: {', '.join(biases[:3])}")
    H, d, e = c.n_heads, c.d_model, c.d_head
    sd = {"embed.W_E": native["tok_embed.weight"], "pos_embed.W_pos": native["pos.weight"],
          "unembed.W_U": native["head.weight"].T}
    if norm == "LN":
        sd["ln_final.w"], sd["ln_final.b"] = native["ln_out.weight"], native["ln_out.bias"]
    for i in range(c.n_layers):
        b, L = f"blocks.{i}.", f"layers.{i}."
        for x in "QKV":
            sd[b + f"attn.W_{x}"] = native[L + f"attn.{x.lower()}.weight"].reshape(H, e, d).permute(0, 2, 1)
        sd[b + "attn.W_O"] = native[L + "attn.o.weight"].T.reshape(H, e, d)
        if norm == "LN":
            sd[b + "ln1.w"], sd[b + "ln1.b"] = native[L + "ln1.weight"], native[L + "ln1.bias"]
        if attn_only:
            continue
        fc_in = "fc_in" if L + "mlp.fc_in.weight" in native else "in"
        fc_out = "fc_out" if L + "mlp.fc_out.weight" in native else "out"
        sd[b + "mlp.W_in"], sd[b + "mlp.b_in"] = native[L + f"mlp.{fc_in}.weight"].T, native[L + f"mlp.{fc_in}.bias"]
        sd[b + "mlp.W_out"], sd[b + "mlp.b_out"] = native[L + f"mlp.{fc_out}.weight"].T, native[L + f"mlp.{fc_out}.bias"]
        if norm == "LN":
            sd[b + "ln2.w"], sd[b + "ln2.b"] = native[L + "ln2.weight"], native[L + "ln2.bias"]
    model.load_state_dict({k: v.float().contiguous() for k, v in sd.items()}, strict=True)
    return model.eval()
