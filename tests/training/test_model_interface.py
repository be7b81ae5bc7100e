"""The lean transformer as TransformerLens shows a model: an ActivationCache with the bridge's keys, shapes and
values, TransformerLens-stacked W_* views, a complete cfg and the task's loss."""

import pytest
import torch
import torch.nn.functional as F
from transformer_lens import ActivationCache, FactoredMatrix

from training.config import ModelConfig, TaskConfig
from training.models.bridge import bridge_state_dict, from_bridge, to_bridge
from training.models.build import build_model
from training.tasks.build import build_task

SHAPES = [(1, "none"), (1, "LN"), (2, "none"), (2, "LN")]


def model_and_data(n_layers: int, norm: str, p: int = 11):
    data = build_task(TaskConfig(task="add", p=p, frac=0.5))
    model = build_model(ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                    normalization_type=norm), data, seed=5).eval()
    with torch.no_grad():  # move biases and LN parameters off their initial values so every map is exercised
        for name, p_ in model.named_parameters():
            if name.endswith(("b_in", "b_out")) or ".ln" in name or name.startswith("ln"):
                p_.add_(torch.randn_like(p_) * 0.3)
    return model, data


def bridge_only(name: str) -> bool:
    """The bridge's component aliases (`blocks.0.attn.q.hook_in`, ...) that a HookedTransformer never had."""
    return name.endswith((".hook_in", ".hook_out")) or name == "hook_unembed"


@pytest.mark.parametrize("n_layers, norm", SHAPES)
def test_cache_has_the_bridges_keys_shapes_and_values(n_layers, norm):
    model, data = model_and_data(n_layers, norm)
    x = data.inputs[:40]
    logits, ours = model.run_with_cache(x)
    _, theirs = to_bridge(model).run_with_cache(x)
    assert isinstance(ours, ActivationCache)
    assert set(ours.keys()) == {k for k in theirs.keys() if not bridge_only(k)}
    for name in ours.keys():
        a, b = ours[name], theirs[name]
        assert a.shape == b.shape, name
        if name.endswith("hook_attn_scores"):
            # TransformerLens 4.3's bridge stores the softmaxed pattern under hook_attn_scores
            a = torch.softmax(a, dim=-1)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()), msg=name)
    assert logits.shape == (40, 3, 11)  # TransformerLens' [batch, pos, d_vocab_out], hooks or not


def test_hooked_runs_give_full_positions_and_answer_logits_the_last_only():
    model, data = model_and_data(1, "none")
    x = data.inputs[:6]
    _, cache = model.run_with_cache(x)
    assert cache["blocks.0.mlp.hook_post"].shape == (6, 3, 64)
    assert cache["blocks.0.attn.hook_pattern"].shape == (6, 4, 3, 3)
    last = {}
    with model.hooks(fwd_hooks=[(n, lambda t, hook: last.__setitem__(hook.name, t))
                                for n in ("blocks.0.mlp.hook_post", "blocks.0.attn.hook_pattern")]):
        fast = model.answer_logits(x)
    assert last["blocks.0.mlp.hook_post"].shape == (6, 1, 64)
    assert last["blocks.0.attn.hook_pattern"].shape == (6, 4, 1, 3)
    torch.testing.assert_close(last["blocks.0.mlp.hook_post"][:, 0], cache["blocks.0.mlp.hook_post"][:, -1])
    torch.testing.assert_close(fast, model(x)[:, -1])


@pytest.mark.parametrize("n_layers, norm", [(2, "none"), (2, "LN")])
def test_activation_cache_methods_work(n_layers, norm):
    model, data = model_and_data(n_layers, norm)
    _, cache = model.run_with_cache(data.inputs[:8])
    assert torch.equal(cache["post", 1], cache["blocks.1.mlp.hook_post"])
    assert cache.stack_activation("pattern").shape == (2, 8, 4, 3, 3)
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    torch.testing.assert_close(parts.sum(0), cache["blocks.1.hook_resid_post"], rtol=1e-5, atol=1e-5)
    acc = cache.accumulated_resid()
    assert acc.shape == (3, 8, 3, 32)
    torch.testing.assert_close(acc[-1], cache["blocks.1.hook_resid_post"])


def test_weights_read_as_transformer_lens_stacks_them():
    model, data = model_and_data(2, "LN")
    sd, c = model.state_dict(), model.cfg
    L, H, d, e, m = 2, 4, 32, 8, 64
    shapes = {"W_E": (12, d), "W_pos": (3, d), "W_U": (d, 11), "b_U": (11,), "W_Q": (L, H, d, e), "W_K": (L, H, d, e),
              "W_V": (L, H, d, e), "W_O": (L, H, e, d), "b_Q": (L, H, e), "b_O": (L, d), "W_in": (L, d, m),
              "b_in": (L, m), "W_out": (L, m, d), "b_out": (L, d)}
    for name, shape in shapes.items():
        assert tuple(getattr(model, name).shape) == shape, name
    for x in "QKVO":
        assert torch.equal(getattr(model, f"W_{x}")[1], sd[f"blocks.1.attn.W_{x}"])
    assert torch.equal(model.W_in[0], sd["blocks.0.mlp.W_in"]) and torch.equal(model.b_out[1], sd["blocks.1.mlp.b_out"])
    assert isinstance(model.OV, FactoredMatrix) and model.OV.shape == (L, H, d, d)
    torch.testing.assert_close(model.OV.AB, model.W_V @ model.W_O)
    torch.testing.assert_close(model.QK.AB, model.W_Q @ model.W_K.transpose(-2, -1))
    assert (c.d_vocab, c.d_vocab_out, c.n_ctx, c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp) == (12, 11, 3, L, d, H, e, m)
    assert c.act_fn == "relu" and c.normalization_type == "LN" and not c.attn_only and c.model_config.normalization_type == "LN"
    model.W_E.sum().backward()  # views of the parameters, not copies
    assert model.embed.W_E.grad is not None
    assert set(bridge_state_dict(model)) >= {"tok_embed.weight", "layers.1.attn.q.weight"}  # state_dict keys unchanged


@pytest.mark.parametrize("kind", ["transformer", "mlp", "lstm"])
def test_return_type_loss_is_the_answer_cross_entropy(kind):
    data = build_task(TaskConfig(task="add", p=7, frac=0.5))
    model = build_model(ModelConfig(model=kind, d_model=16, n_heads=2, d_head=8, d_mlp=32), data, seed=1)
    x, y = data.inputs, data.labels
    loss = model(x, return_type="loss", labels=y)
    torch.testing.assert_close(loss, F.cross_entropy(model.answer_logits(x).double(), y))
    logits, both = model(x, return_type="both", labels=y)
    assert torch.equal(both, loss) and logits.shape == ((49, 3, 7) if kind == "transformer" else (49, 7))
    with pytest.raises(ValueError, match="needs labels"):
        model(x, return_type="loss")


@pytest.mark.parametrize("n_layers, norm", [(1, "none"), (2, "LN")])
def test_from_bridge_inverts_to_bridge_exactly(n_layers, norm):
    model, _ = model_and_data(n_layers, norm)
    back = from_bridge(to_bridge(model))
    assert back.cfg == model.cfg
    mine, theirs = model.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_model_missing_part_of_the_interface_says_which():
    from training.models.base import GrokModel

    class Half(GrokModel):
        def __init__(self):
            super().__init__()
            self.setup()

    with pytest.raises(NotImplementedError, match="Half does not define `neuron_hook`"):
        Half().neuron_hook()
    with pytest.raises(NotImplementedError, match="embed_matrix"):
        Half().embed_matrix
