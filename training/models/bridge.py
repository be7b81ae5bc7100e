"""TransformerBridge: an exact weight map, so any checkpoint opens in TransformerLens 4.x."""

from __future__ import annotations

import torch

from training.config import ModelConfig
from training.models.transformer import Transformer


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
