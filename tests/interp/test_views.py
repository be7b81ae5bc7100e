"""The demo's views as probes: planted structure comes back exactly, and each view agrees with the model."""

import math

import pytest
import torch

from interp import views
from interp.fourier import fourier_basis
from interp.modular import additive_structure, modular_structure
from training.config import ModelConfig, TaskConfig
from training.models.bridge import to_bridge
from training.models.build import build_model
from training.tasks.build import build_task


@pytest.fixture(scope="module")
def setup():
    data = build_task(TaskConfig(task="add", p=11, frac=0.5))
    model = build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=48), data, seed=2).eval()
    return model, data, modular_structure(data)


def test_task_loss_on_model_and_bridge(setup):
    model, data, _ = setup
    x, y = data.inputs, data.labels
    expected = torch.nn.functional.cross_entropy(model.answer_logits(x).double(), y)
    torch.testing.assert_close(views.task_loss(model, x, y), expected)
    torch.testing.assert_close(views.task_loss(to_bridge(model), x, y), expected, rtol=1e-5, atol=1e-6)


def test_grid_cache_and_to_grid(setup):
    model, _, s = setup
    logits, cache = views.grid_cache(model, s)
    post = views.to_grid(cache["post", 0][:, -1], s)
    assert post.shape == (11, 11, 48)
    a, b = 3, 7  # the grid row of (a, b) is the model on [a, b, =]
    with torch.no_grad():
        _, one = model.run_with_cache(torch.tensor([[a, b, 11]]))
    torch.testing.assert_close(post[a, b], one["post", 0][0, -1])
    assert logits.shape == (121, 3, 11)  # TransformerLens-shaped, as the bridge's
    assert views.to_grid(logits[:, -1], s).shape == (11, 11, 11)


def test_trig_fits_recover_planted_neurons():
    s = additive_structure(13)
    k = 3
    X = views.trig_terms(s, k)  # [169, 9]
    coef = torch.randn(9, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    acts = (X @ coef).float()
    noise = torch.randn(acts.shape, generator=torch.Generator().manual_seed(1)) * 0.1 * acts.std(0)
    exact, noisy = views.trig_fits(acts, s), views.trig_fits(acts + noise, s)
    assert (exact.freq == k).all() and (noisy.freq == k).all()
    torch.testing.assert_close(exact.coef, coef.T, rtol=1e-4, atol=1e-4)
    assert (exact.explained > 0.9999).all() and (noisy.explained < 0.999).all() and (noisy.explained > 0.95).all()
    assert exact.terms[5] == "cos w(a+b)"


def test_neuron_input_map_and_fourier_basis(setup):
    model, _, s = setup
    W_neur = views.neuron_input_map(model, s)
    assert W_neur.shape == (4, 11, 48)
    h = 2
    by_hand = model.W_E[s.elements] @ model.W_V[0, h] @ model.W_O[0, h] @ model.W_in[0]
    torch.testing.assert_close(W_neur[h], by_hand.detach())
    F = views.in_fourier_basis(W_neur, dims=1)
    torch.testing.assert_close(F[h], fourier_basis(11).matrix @ W_neur[h], rtol=1e-5, atol=1e-5)
    w = 2 * math.pi * 4 / 11
    wave = torch.cos(w * torch.arange(11.0))[:, None] * torch.ones(1, 3)  # cos_4 only: one component
    comp = views.in_fourier_basis(wave, 0)
    assert comp.norm(dim=1).argmax().item() == fourier_basis(11).names.index("cos 4")
    OV = views.in_fourier_basis(model.W_E[:11] @ model.OV[0].AB @ model.W_E[:11].T, dims=(1, 2))
    assert OV.shape == (4, 11, 11)


@pytest.mark.parametrize("norm", ["none", "LN"])
def test_direct_logit_attribution(norm):
    data = build_task(TaskConfig(task="add", p=7, frac=0.5))
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, normalization_type=norm),
                        data, seed=0).eval()
    x, y = data.inputs[:20], data.labels[:20]
    attr, names = views.direct_logit_attribution(model, x, y)
    assert names == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    assert attr.shape == (6, 20)
    correct = model.answer_logits(x).gather(1, y[:, None])[:, 0].detach()
    if norm == "none":
        torch.testing.assert_close(attr.sum(0), correct, rtol=1e-4, atol=1e-4)
    else:  # frozen-scale LayerNorm: the components add up to the logit less the final LN bias term
        bias = model.ln_final.b @ model.W_U[:, y]
        torch.testing.assert_close(attr.sum(0) + bias.detach(), correct, rtol=1e-4, atol=1e-4)


def test_patching_between_checkpoints(setup):
    model, data, _ = setup
    other = build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=48), data, seed=9).eval()
    x, y = data.inputs, data.labels
    out = views.patch_checkpoints(model, other, x, y, ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post",
                                                       "hook_embed"])
    assert out["source"] != pytest.approx(out["target"])
    # patching the last residual stream leaves only the target's unembedding: source resid_post @ target W_U
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
        by_hand = torch.nn.functional.cross_entropy((cache["resid_post", 0][:, -1] @ other.W_U).double(), y)
    assert out["blocks.0.hook_resid_post"] == pytest.approx(float(by_hand), rel=1e-5)
    assert out["hook_embed"] != pytest.approx(out["target"])
