"""The MLP: per-operand embeddings (or vector inputs), hidden layers, an unembedding."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from training.config import ModelConfig
from training.models.base import ACTIVATIONS, GrokModel, HookSite, answer_loss
from training.models.batched import Params, affine, gather_rows, no_dropout
from training.models.tl_compat import HookedConfig
from training.tasks.data import TaskData


def mlp_forward(model: "MLPModel", exact: bool = False) -> Callable:
    """The MLP's one forward, over K members' parameters stacked [K, ...] and inputs [K, batch, ...] -> logits
    [K, batch, d_vocab_out]; `site(name, x)` passes the activations through the module's hook sites (K = 1)."""
    act, n_layers, n_ops, d_vocab = ACTIVATIONS[model.cfg.act_fn], len(model.layers), model.n_operands, model.d_vocab

    def forward(p: Params, x: torch.Tensor, dropout=no_dropout, site: Callable | None = None) -> torch.Tensor:
        at = site or (lambda name, h: h)
        K = p["W_U"].shape[0]
        if model.tokens:  # per-operand embeddings: row (member, operand, token) of the flattened tables
            W_E = p["W_E"]
            rows = x[..., :n_ops] + torch.arange(n_ops, device=x.device) * d_vocab
            rows = rows + torch.arange(K, device=x.device).view(K, *[1] * (rows.dim() - 1)) * (n_ops * d_vocab)
            h = at("hook_embed", gather_rows(W_E.reshape(-1, W_E.shape[-1]), rows).flatten(-2))
        else:
            h = x.to(p["W_U"].dtype)
        for i in range(n_layers):
            pre = at(f"layers.{i}.hook_pre", affine(p[f"layers.{i}.b_in"], h, p[f"layers.{i}.W_in"], exact))
            h = dropout(at(f"layers.{i}.hook_post", act(pre)))
        return affine(p["b_U"], h, p["W_U"], exact)

    return forward


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
        """The one forward (`mlp_forward`) on this model's own parameters (K = 1), through its hook sites when a
        hook listens."""
        params, dropout, site = self.as_member()
        return answer_loss(mlp_forward(self)(params, x.unsqueeze(0), dropout, site)[0], labels, return_type, loss)

    def batched_forward(self, exact: bool = False) -> Callable:
        """The one forward, over members stacked [K, ...]: training runs it as it is."""
        return mlp_forward(self, exact)

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
