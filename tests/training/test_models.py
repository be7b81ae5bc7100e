import pytest
import torch

from training.config import ModelConfig, TaskConfig
from training.models.bridge import to_bridge
from training.models.build import build_model
from training.models.transformer import Transformer
from training.presets import get_preset
from training.tasks.build import build_task


def test_nanda_model_has_227k_parameters_with_tl_names():
    cfg = get_preset("nanda2023")
    model = build_model(cfg.model, build_task(cfg.task))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == 226_688
    assert shapes["embed.W_E"] == (114, 128) and shapes["unembed.W_U"] == (128, 113)
    assert shapes["blocks.0.attn.W_Q"] == (4, 128, 32) and shapes["blocks.0.attn.W_O"] == (4, 32, 128)
    assert shapes["blocks.0.mlp.W_in"] == (128, 512) and shapes["blocks.0.mlp.b_in"] == (512,)
    assert not any("b_Q" in k or "b_U" in k for k in shapes)  # no attention or unembedding biases


@pytest.mark.parametrize("extra", [dict(n_layers=1, normalization_type="none"), dict(n_layers=2, normalization_type="LN")])
def test_bridge_gives_the_same_logits_on_every_input(extra):
    data = build_task(TaskConfig(task="add", p=23, frac=0.5))
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64, **extra)
    model = build_model(cfg, data, seed=3).eval()
    with torch.no_grad():  # train LN gains/biases away from (1, 0) so the map is exercised
        for name, p in model.named_parameters():
            if ".ln" in name or name.startswith("ln"):
                p.add_(torch.randn_like(p) * 0.3)
        ours_all = model(data.inputs)
        ours_last = model.answer_logits(data.inputs)
        theirs = to_bridge(model)(data.inputs)
    assert theirs.shape == ours_all.shape
    assert (ours_all - theirs).abs().max() < 1e-5
    assert (ours_last - theirs[:, -1]).abs().max() < 1e-5


def test_run_with_cache_has_classic_hook_names():
    data = build_task(TaskConfig(task="add", p=7, frac=0.5))
    model = build_model(ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32), data)
    _, cache = model.run_with_cache(data.inputs[:5])
    for name in ("hook_embed", "hook_pos_embed", "blocks.0.attn.hook_pattern", "blocks.0.hook_resid_mid",
                 "blocks.0.mlp.hook_post", "blocks.0.hook_resid_post"):
        assert name in cache.keys()
    assert cache["blocks.0.attn.hook_pattern"].shape == (5, 2, 3, 3)  # every query position, as the bridge
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(5, 2, 3))


def test_init_scale_multiplies_every_initial_weight():
    data = build_task(TaskConfig(task="add", p=7, frac=0.5))
    a = build_model(ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32), data, seed=1)
    b = build_model(ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32, init_scale=8.0), data, seed=1)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p * 8, q), n


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_other_architectures_train_on_token_tasks(kind):
    data = build_task(TaskConfig(task="add", p=7, frac=0.5))
    model = build_model(ModelConfig(model=kind, n_layers=2, d_model=16, d_mlp=32), data)
    out = model(data.inputs)
    assert out.shape == (49, 7)
    loss = torch.nn.functional.cross_entropy(out, data.labels)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not isinstance(model, Transformer)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_fast_path_equals_the_hooked_path(n_layers):
    """Without hooks, block 0 projects q, k, v from the (position, token) table; with hooks it computes every
    activation. Both must give the same logits."""
    data = build_task(TaskConfig(task="add", p=13, frac=0.5))
    model = build_model(ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                    normalization_type="LN"), data, seed=2)
    fast = model(data.inputs)
    assert not model.listening()
    torch.testing.assert_close(model.answer_logits(data.inputs), fast[:, -1], rtol=1e-5, atol=1e-5)
    hooked, cache = model.run_with_cache(data.inputs)
    assert (fast - hooked).abs().max() < 1e-5
    seen = []
    model.run_with_hooks(data.inputs, fwd_hooks=[("blocks.0.attn.hook_k", lambda t, hook: seen.append(t.shape))])
    assert seen == [(169, 3, 4, 8)]
