"""What a TransformerLens user reaches for beyond the weights, on our transformer.

- `HookedConfig` (`model.cfg`): the toolkit's `ModelConfig` plus the fields TransformerLens code reads from a
  `HookedTransformerConfig` (`device`, `dtype`, `use_attn_result`, `n_key_value_heads`, `to_dict()`, ...), with
  `normalization_type` None where the toolkit says "none". The architecture stays frozen; only the run-time
  switches TransformerLens itself flips (`device`, `dtype`, the `use_*` flags, ...) can be assigned.
- `TLSurface`, mixed into `training.models.transformer.Transformer`: `accumulated_bias`, `all_head_labels`, `W_E_pos`, a `to`
  that keeps `cfg.device`/`cfg.dtype` current, and the per-module biases a HookedTransformer has
  (`blocks.i.attn.b_Q/b_K/b_V/b_O`, `unembed.b_U`): constant zeros, as buffers outside the state dict, so they
  are never trained, decayed or saved and every checkpoint keeps its keys. A HookedTransformer-format state dict
  (those biases, zero, and the attention's `IGNORE`/`mask` buffers included) loads with `load_state_dict(...,
  strict=True)`; a non-zero one is refused, since this architecture has no such bias.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, field, fields

import torch
import torch.nn as nn

from training.config import ModelConfig

# run-time switches, not architecture: TransformerLens code assigns these (move_to_and_update_config, patching)
SETTABLE = ("device", "dtype", "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in",
            "use_hook_tokens", "model_name", "seed", "init_weights")


@dataclass(frozen=True)
class HookedConfig(ModelConfig):
    """`model.cfg`: the architecture (every `ModelConfig` field) plus the task-sized fields, as TransformerLens
    names them, so `ActivationCache`, `transformer_lens.patching` and TransformerLens-style code read it as they
    read a HookedTransformer's. `model_config` gives the toolkit's own config back.

    `attn_only`: d_mlp 0, blocks without MLP. `predict_all`: the task scores several positions (sequence tasks:
    training and evaluation read the logits at every position).
    """

    d_vocab: int = 0
    d_vocab_out: int = 0
    n_ctx: int = 1
    d_in: int = 0
    attn_only: bool = False
    eps: float = 1e-5
    positional_embedding_type: str = "standard"
    default_prepend_bos: bool = False
    predict_all: bool = False
    # HookedTransformerConfig fields whose values here are fixed by the architecture
    n_key_value_heads: int | None = None
    attn_types: list | None = None
    gated_mlp: bool = False
    final_rms: bool = False
    uses_rms_norm: bool = False
    num_experts: int | None = None
    experts_per_token: int | None = None
    original_architecture: str = "grokscope"
    tokenizer_name: str | None = None
    # run-time (SETTABLE); not part of equality
    device: str = field(default="cpu", compare=False)
    dtype: torch.dtype = field(default=torch.float32, compare=False)
    use_attn_result: bool = field(default=False, compare=False)
    use_split_qkv_input: bool = field(default=False, compare=False)
    use_hook_mlp_in: bool = field(default=False, compare=False)
    use_attn_in: bool = field(default=False, compare=False)
    use_hook_tokens: bool = field(default=False, compare=False)
    model_name: str = field(default="", compare=False)
    seed: int | None = field(default=None, compare=False)
    init_weights: bool = field(default=True, compare=False)

    @classmethod
    def of(cls, cfg: ModelConfig, d_vocab: int, d_vocab_out: int, n_ctx: int, d_in: int = 0,
           predict_all: bool = False, seed: int | None = None) -> "HookedConfig":
        arch = {f.name: getattr(cfg, f.name) for f in fields(ModelConfig)}
        arch["normalization_type"] = None if cfg.normalization_type == "none" else cfg.normalization_type
        return cls(**arch, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=n_ctx, d_in=d_in,
                   attn_only=cfg.d_mlp == 0, predict_all=predict_all, model_name=f"grokscope-{cfg.model}",
                   seed=seed)

    @property
    def model_config(self) -> ModelConfig:
        """The toolkit's own config of this architecture ("none" for no normalisation)."""
        arch = {f.name: getattr(self, f.name) for f in fields(ModelConfig)}
        arch["normalization_type"] = self.normalization_type or "none"
        return ModelConfig(**arch)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _set_run_time_field(self: HookedConfig, name: str, value) -> None:
    if name not in SETTABLE:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: the architecture of a built model is fixed")
    object.__setattr__(self, name, value)


HookedConfig.__setattr__ = _set_run_time_field  # after @dataclass, which refuses a class that defines its own


# --- the biases a HookedTransformer has and this architecture does not --------------------------------------

ATTN_BIASES = ("b_Q", "b_K", "b_V", "b_O")


def add_zero_biases(model: nn.Module) -> None:
    """Zero `b_Q/b_K/b_V` [n_heads, d_head] and `b_O` [d_model] on each block's attention and `b_U` [d_vocab_out]
    on the unembedding, as non-persistent buffers (not parameters: no optimiser or weight decay sees them; not in
    the state dict: every checkpoint keeps its keys), and the load hooks that accept them from a HookedTransformer
    state dict."""
    c = model.cfg
    for block in model.blocks:
        for name in ATTN_BIASES:
            shape = (c.d_model,) if name == "b_O" else (c.n_heads, c.d_head)
            block.attn.register_buffer(name, torch.zeros(shape), persistent=False)
        block.attn.register_load_state_dict_pre_hook(_accept_tl_keys(ATTN_BIASES, ("IGNORE", "mask")))
    model.unembed.register_buffer("b_U", torch.zeros(c.d_vocab_out), persistent=False)
    model.unembed.register_load_state_dict_pre_hook(_accept_tl_keys(("b_U",), ()))


def _accept_tl_keys(biases: tuple[str, ...], buffers: tuple[str, ...]):
    """A load_state_dict pre-hook: takes a HookedTransformer's zero biases (and its attention mask buffers) out of
    the state dict before the strict key check; a non-zero or wrong-shaped bias is refused."""

    def hook(module, state_dict, prefix, *args) -> None:
        for name in biases:
            value = state_dict.pop(prefix + name, None)
            if value is None:
                continue
            mine = getattr(module, name)
            if tuple(value.shape) != tuple(mine.shape):
                raise ValueError(f"{prefix}{name}: shape {tuple(value.shape)}, this model's is {tuple(mine.shape)}")
            if value.abs().max() > 0:
                raise ValueError(f"{prefix}{name} is non-zero: this architecture has no such bias (it is 0)")
        for name in buffers:
            state_dict.pop(prefix + name, None)  # HookedTransformer's causal mask and its -inf: not weights

    return hook


class TLSurface:
    """The HookedTransformer methods TransformerLens' own tools call on a model (mixed into `Transformer`)."""

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> torch.Tensor:
        """[d_model] the biases added to the residual stream before block `layer` (its attention's too when
        `mlp_input`): b_O of each attention, b_out of each MLP (with `include_mlp_biases`)."""
        total = torch.zeros(self.cfg.d_model, device=self.W_E.device, dtype=self.W_E.dtype)
        for i in range(layer):
            total = total + self.blocks[i].attn.b_O
            if include_mlp_biases and not self.cfg.attn_only:
                total = total + self.blocks[i].mlp.b_out
        if mlp_input:
            if layer >= self.cfg.n_layers:
                raise ValueError(f"mlp_input needs a layer below n_layers ({self.cfg.n_layers}), got {layer}")
            total = total + self.blocks[layer].attn.b_O
        return total

    @property
    def all_head_labels(self) -> list[str]:
        return [f"L{layer}H{head}" for layer in range(self.cfg.n_layers) for head in range(self.cfg.n_heads)]

    @property
    def W_E_pos(self) -> torch.Tensor:
        """[d_vocab + n_ctx, d_model] token and positional embeddings stacked."""
        return torch.cat([self.W_E, self.W_pos], dim=0)

    def to(self, *args, **kwargs):
        """`nn.Module.to`, then `cfg.device` and `cfg.dtype` say where the weights are, as TransformerLens keeps them."""
        out = super().to(*args, **kwargs)
        object.__setattr__(self.cfg, "device", self.W_E.device.type)
        object.__setattr__(self.cfg, "dtype", self.W_E.dtype)
        return out

    def set_use_attn_result(self, use: bool) -> None:
        self.cfg.use_attn_result = use  # head results come from hook_z and W_O (ActivationCache computes them)

    def set_use_split_qkv_input(self, use: bool) -> None:
        self._refuse_split("use_split_qkv_input", use)

    def set_use_attn_in(self, use: bool) -> None:
        self._refuse_split("use_attn_in", use)

    def set_use_hook_mlp_in(self, use: bool) -> None:
        self._refuse_split("use_hook_mlp_in", use)

    def _refuse_split(self, name: str, use: bool) -> None:
        if use:
            raise NotImplementedError(f"{name}: this transformer has no per-head input hooks; "
                                      "use run.bridge(step) (TransformerBridge) for those")
        setattr(self.cfg, name, False)
