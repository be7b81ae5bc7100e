"""TransformerLens' reflexes on our transformer: TL-shaped logits, a TL config, the biases a HookedTransformer has, and
TransformerLens' own tools, each compared with TransformerLens 4's TransformerBridge holding the same weights.

Tolerances: the two are different float32 computations of the same function (our fused/tabled products against
the bridge's linears), so they agree to float32 rounding over a few matmuls of width <= 64: atol 1e-4 on values of
order 1-10 (measured differences ~1e-6); the patching metrics are differences of such logits."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
import torch
from transformer_lens import patching
from transformer_lens.utilities.devices import move_to_and_update_config

from training.config import ModelConfig, TaskConfig
from training.models.bridge import to_bridge
from training.models.build import build_model
from training.tasks.build import build_task

TOL = dict(rtol=1e-4, atol=1e-4)


def model_and_data(n_layers: int = 1, norm: str = "none", kind: str = "transformer", p: int = 23):
    data = build_task(TaskConfig(task="add", p=p, frac=0.5))
    cfg = ModelConfig(model=kind, n_layers=n_layers, d_model=32, n_heads=4, d_head=8, d_mlp=64, normalization_type=norm)
    model = build_model(cfg, data, seed=5).eval()
    with torch.no_grad():  # LayerNorm gains and biases away from (1, 0), so their maps are exercised
        for name, q in model.named_parameters():
            if ".ln" in name or name.startswith("ln"):
                q.add_(torch.randn_like(q) * 0.3)
    return model, data


# --- shapes ---------------------------------------------------------------------------------------------------


def test_forward_and_run_with_cache_are_transformer_lens_shaped():
    model, data = model_and_data()
    x = data.inputs[:7]
    logits = model(x)
    cached, _ = model.run_with_cache(x)
    hooked = model.run_with_hooks(x, fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: t)])
    assert logits.shape == cached.shape == hooked.shape == (7, 3, 23)
    answer = model.answer_logits(x)
    assert answer.shape == (7, 23)
    # model(x)[:, -1] is the answer at '=', not logit column 2 of some [batch, vocab] tensor
    torch.testing.assert_close(logits[:, -1], answer, **TOL)
    torch.testing.assert_close(model.logits_at_answer(cached), answer, **TOL)
    assert model(x, return_type=None) is None


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_models_without_positions_answer_with_the_same_names(kind):
    model, data = model_and_data(kind=kind)
    x = data.inputs[:7]
    assert model(x).shape == model.answer_logits(x).shape == (7, 23)
    torch.testing.assert_close(model.logits_at_answer(model(x)), model.answer_logits(x))


def test_sequence_tasks_keep_every_position():
    data = build_task(TaskConfig(task="digit_add", n_digits=2, n_train=16, n_test=16))
    model = build_model(ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32), data).eval()
    assert model(data.inputs[:3]).shape == (3, data.n_ctx, data.d_vocab_out)
    assert model.answer_logits(data.inputs[:3]).shape == (3, data.d_vocab_out)


# --- config ---------------------------------------------------------------------------------------------------


def test_cfg_reads_as_a_hooked_transformer_config_and_stays_ours():
    model, _ = model_and_data()
    c = model.cfg
    for name in ("device", "dtype", "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "seed",
                 "init_weights", "n_key_value_heads", "attn_types", "model_name", "d_vocab", "n_ctx", "eps"):
        assert hasattr(c, name), name
    assert c.normalization_type is None and c.n_key_value_heads is None and c.dtype == torch.float32
    d = c.to_dict()
    assert d["d_model"] == 32 and d["normalization_type"] is None and d["device"] == "cpu"
    assert c.model_config == ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64, normalization_type="none")
    assert model_and_data(2, "LN")[0].cfg.normalization_type == "LN"
    c.device = "meta"  # a run-time switch TransformerLens assigns: allowed, and not part of equality
    assert c == model_and_data()[0].cfg
    with pytest.raises(FrozenInstanceError):
        c.d_model = 64  # the architecture of a built model is not


def test_move_to_and_update_config_moves_weights_and_config():
    model, data = model_and_data()
    ref = model.answer_logits(data.inputs[:5]).double()
    move_to_and_update_config(model, torch.float64, print_details=False)
    assert model.cfg.dtype == torch.float64 and model.W_E.dtype == torch.float64 and model.b_U.dtype == torch.float64
    move_to_and_update_config(model, "cpu", print_details=False)
    assert model.cfg.device == "cpu"
    torch.testing.assert_close(model.answer_logits(data.inputs[:5]), ref, **TOL)
    bridge = to_bridge(model_and_data()[0])
    move_to_and_update_config(bridge, torch.float64, print_details=False)
    assert bridge.cfg.dtype == torch.float64


# --- biases and HookedTransformer state dicts ------------------------------------------------------------------


def hooked_transformer_state_dict(model) -> dict[str, torch.Tensor]:
    """Our weights as a HookedTransformer of this architecture saves them: zero attention and unembedding
    biases, and each attention's causal `mask` and `IGNORE` buffers."""
    sd = dict(model.state_dict())
    c = model.cfg
    for i in range(c.n_layers):
        for x in "QKV":
            sd[f"blocks.{i}.attn.b_{x}"] = torch.zeros(c.n_heads, c.d_head)
        sd[f"blocks.{i}.attn.b_O"] = torch.zeros(c.d_model)
        sd[f"blocks.{i}.attn.mask"] = torch.tril(torch.ones(c.n_ctx, c.n_ctx)).bool()
        sd[f"blocks.{i}.attn.IGNORE"] = torch.tensor(-1e5)
    sd["unembed.b_U"] = torch.zeros(c.d_vocab_out)
    return sd


@pytest.mark.parametrize("n_layers, norm", [(1, "none"), (2, "LN")])
def test_biases_exist_untrained_and_outside_checkpoints(n_layers, norm):
    model, _ = model_and_data(n_layers, norm)
    assert model.blocks[0].attn.b_Q.shape == (4, 8) and model.unembed.b_U.shape == (23,)
    assert model.b_O.shape == (n_layers, 32) and float(model.b_Q.abs().sum() + model.b_U.abs().sum()) == 0
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.endswith(("b_Q", "b_K", "b_V", "b_O", "b_U")) for n in names)  # no optimiser sees them
    assert set(model.state_dict()) == names  # checkpoints keep exactly the trained weights


@pytest.mark.parametrize("n_layers, norm", [(1, "none"), (2, "LN")])
def test_a_hooked_transformer_state_dict_loads_strictly(n_layers, norm):
    src, data = model_and_data(n_layers, norm)
    model = build_model(src.cfg.model_config, data, seed=9).eval()
    model.load_state_dict(hooked_transformer_state_dict(src), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    bad = hooked_transformer_state_dict(src)
    bad["blocks.0.attn.b_Q"][0, 0] = 0.5
    with pytest.raises(ValueError, match="non-zero"):
        model.load_state_dict(bad, strict=True)
    missing = hooked_transformer_state_dict(src)
    del missing["blocks.0.attn.W_K"]
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(missing, strict=True)


# --- TransformerLens' own tools, ours against the bridge ---------------------------------------------------------


@pytest.fixture(params=[(1, "none"), (2, "LN")], ids=["1L", "2L-LN"])
def pair(request):
    model, data = model_and_data(*request.param)
    return model, to_bridge(model), data.inputs[:12], data.labels[:12]


def test_accumulated_resid_decompose_resid_and_head_results_match_the_bridge(pair):
    model, bridge, x, _ = pair
    (_, ours), (_, theirs) = model.run_with_cache(x), bridge.run_with_cache(x)
    for kwargs in (dict(), dict(apply_ln=True, incl_mid=True), dict(layer=1, mlp_input=True)):
        a, la = ours.accumulated_resid(return_labels=True, **kwargs)
        b, lb = theirs.accumulated_resid(return_labels=True, **kwargs)
        assert la == lb
        torch.testing.assert_close(a, b, **TOL)
    for kwargs in (dict(), dict(apply_ln=True, pos_slice=-1), dict(mode="attn")):
        a, la = ours.decompose_resid(return_labels=True, **kwargs)
        b, lb = theirs.decompose_resid(return_labels=True, **kwargs)
        assert la == lb
        torch.testing.assert_close(a, b, **TOL)
    a, la = ours.stack_head_results(return_labels=True)
    b, lb = theirs.stack_head_results(return_labels=True)
    assert la == lb == model.all_head_labels
    torch.testing.assert_close(a, b, **TOL)


def test_full_resid_decomposition_and_logit_lens_match_the_bridge(pair):
    model, bridge, x, y = pair
    (logits, ours), (_, theirs) = model.run_with_cache(x), bridge.run_with_cache(x)
    a, la = ours.get_full_resid_decomposition(expand_neurons=True, return_labels=True)
    b, lb = theirs.get_full_resid_decomposition(expand_neurons=True, return_labels=True)
    assert la == lb
    torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(a.sum(0), ours["resid_post", model.cfg.n_layers - 1], **TOL)  # nothing missing
    mine, yours = ours.logit_lens(), theirs.logit_lens()
    assert mine.labels == yours.labels and mine.values.shape == (model.cfg.n_layers + 1, 12, 23)
    torch.testing.assert_close(mine.values, yours.values, **TOL)
    torch.testing.assert_close(mine.values[-1], logits[:, -1], **TOL)  # the last entry is the model's answer
    assert torch.equal(ours.logit_lens(targets=y).readout.target_ranks, theirs.logit_lens(targets=y).readout.target_ranks)
    torch.testing.assert_close(model.accumulated_bias(model.cfg.n_layers), bridge.accumulated_bias(model.cfg.n_layers), **TOL)
    torch.testing.assert_close(model.W_E_pos, bridge.W_E_pos, **TOL)


def test_activation_patching_matches_the_bridge(pair):
    model, bridge, x, y = pair
    clean, corrupt = x, x.flip(0)

    def metric(logits):  # the correct answer's logit at '=', per example
        return logits[:, -1].gather(-1, y[:, None])[:, 0].mean()

    for name in ("get_act_patch_resid_pre", "get_act_patch_attn_head_out_all_pos", "get_act_patch_mlp_out",
                 "get_act_patch_attn_head_pattern_all_pos"):
        fn = getattr(patching, name)
        ours = fn(model, corrupt, model.run_with_cache(clean)[1], metric)
        theirs = fn(bridge, corrupt, bridge.run_with_cache(clean)[1], metric)
        assert ours.shape == theirs.shape, name
        torch.testing.assert_close(ours, theirs, **TOL, msg=name)
    every = patching.get_act_patch_block_every(model, corrupt, model.run_with_cache(clean)[1], metric)
    torch.testing.assert_close(every, patching.get_act_patch_block_every(bridge, corrupt, bridge.run_with_cache(clean)[1],
                                                                         metric), **TOL)
