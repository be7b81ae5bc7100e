"""The built-in models' specs (no torch): the fields each reads, its size and memory formulas, how it trains.

The classes live in training.models.transformer; `training.models.build.build_model` builds the one a config names through its
spec, and `training.memory` sizes a config through the same formulas before anything is allocated
(tests/training/test_limits.py checks each formula against the built model).
"""

from __future__ import annotations

from training.specs import ModelSpec, TaskShape, register_model


def _outputs(s: TaskShape) -> int:
    """Logits kept per example (float64 log-softmax and its gradient): at every position for sequence tasks."""
    return 3 * s.d_vocab_out * (s.n_ctx if s.sequence else 1)


def transformer_params(m, s: TaskShape) -> int:
    ln = 2 * m.d_model if m.normalization_type == "LN" else 0  # weight and bias of one LayerNorm
    mlp = 2 * m.d_model * m.d_mlp + m.d_mlp + m.d_model + ln if m.d_mlp else 0  # none when attention-only
    block = 4 * m.n_heads * m.d_head * m.d_model + mlp + ln
    return (s.d_vocab + s.n_ctx) * m.d_model + m.n_layers * block + m.d_model * s.d_vocab_out + ln


def transformer_activations(m, s: TaskShape) -> int:
    attn = 4 * m.n_heads * m.d_head + 2 * m.n_heads * s.n_ctx
    return s.n_ctx * (2 * m.d_model + m.n_layers * (attn + 4 * m.d_model + 2 * m.d_mlp)) + _outputs(s)


def mlp_params(m, s: TaskShape) -> int:
    n_ops = max(s.n_ctx - 1, 1)
    d_in = n_ops * m.d_model if s.d_vocab else s.d_in
    widths = [d_in] + [m.d_mlp] * m.n_layers
    hidden = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return n_ops * s.d_vocab * m.d_model * (s.d_vocab > 0) + hidden + (widths[-1] + 1) * s.d_vocab_out


def mlp_activations(m, s: TaskShape) -> int:
    return (s.d_in or max(s.n_ctx - 1, 1) * m.d_model) + 3 * m.n_layers * m.d_mlp + _outputs(s)


def lstm_params(m, s: TaskShape) -> int:
    return s.d_vocab * m.d_model + m.n_layers * 8 * m.d_model * (m.d_model + 1) + m.d_model * s.d_vocab_out


def lstm_activations(m, s: TaskShape) -> int:
    return s.n_ctx * m.d_model * (1 + 8 * m.n_layers) + _outputs(s)


_COMMON = ("n_layers", "d_model", "dropout", "init_scale")
register_model(ModelSpec(
    "transformer", (*_COMMON, "n_heads", "d_head", "d_mlp", "act_fn", "normalization_type"),
    "training.models.transformer:Transformer.for_task", transformer_params, transformer_activations, sequence=True,
    batched=True, needs_mlp=False,
    shape_fields=("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "act_fn", "normalization_type"),
    doc="Nanda et al.'s 1-layer transformer and its deeper, LayerNorm'd variants (TransformerLens names)"))
register_model(ModelSpec(
    "mlp", (*_COMMON, "d_mlp", "act_fn"), "training.models.mlp:MLPModel.for_task", mlp_params, mlp_activations,
    inputs=("tokens", "vectors"), batched=True, shape_fields=("n_layers", "d_model", "d_mlp", "act_fn"),
    doc="per-operand embeddings, concatenated, then hidden layers (Chughtai et al.; Omnigrok's MLPs)"))
register_model(ModelSpec(
    "lstm", _COMMON, "training.models.lstm:LSTMModel.for_task", lstm_params, lstm_activations,
    shape_fields=("n_layers", "d_model"), doc="an LSTM over the tokens, read out at the last position"))
