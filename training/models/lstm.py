"""The LSTM: token embedding, an LSTM, an unembedding of the last hidden state."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.config import ModelConfig
from training.models.base import GrokModel, HookSite, answer_loss
from training.models.tl_compat import HookedConfig
from training.tasks.data import TaskData


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
