"""One forward per model: the transformer's hooked forward (what probes and TransformerLens tools see), its
answer-only fast path, the batched forward training runs on (exact and plain) and the probes' closed form on the
operand grid (interp.grid) compute the same function. They differ only in the order of float32 sums, so they agree
to float32 rounding amplified by the depth (rtol/atol 1e-5 on logits of size ~1), never bit for bit."""

from __future__ import annotations

import pytest
import torch

from interp.grid import grid_activations, state_of
from interp.modular import modular_structure
from training.config import ModelConfig, TaskConfig
from training.models.batched import forward_for
from training.models.build import build_model
from training.tasks.build import build_task

TOL = {"rtol": 1e-5, "atol": 1e-5}


def stacked(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters as a one-member ensemble (K = 1), as the Trainer holds them."""
    return {n: p.detach()[None] for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", [dict(n_layers=1), dict(n_layers=2), dict(n_layers=2, normalization_type="LN"),
                                  dict(model="mlp", n_layers=2, d_mlp=48)])
@pytest.mark.parametrize("exact", [False, True])
def test_the_training_forward_is_the_models_forward(kind, exact):
    data = build_task(TaskConfig(task="add", p=13, frac=0.5))
    cfg = ModelConfig(**{"d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 64, **kind})
    model = build_model(cfg, data, seed=3).eval()
    forward, batched = forward_for(model, exact)
    assert batched
    with torch.no_grad():
        trained = forward(stacked(model), data.inputs[None])[0]
        answer = model.answer_logits(data.inputs)
        torch.testing.assert_close(trained, answer, **TOL)
        if cfg.model == "transformer":
            torch.testing.assert_close(model(data.inputs)[:, -1], answer, **TOL)


def test_the_probes_closed_form_is_the_models_forward():
    data = build_task(TaskConfig(task="add", p=13, frac=0.5))
    model = build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64), data, seed=4).eval()
    s = modular_structure(data)
    grid = grid_activations(model, [state_of(model)], s)
    i, j = torch.arange(s.grid_size) // s.n, torch.arange(s.grid_size) % s.n
    tokens = torch.stack([i, j, torch.full_like(i, data.inputs[0, -1].item())], dim=1)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(grid.logits[0], logits[:, -1], **TOL)
    torch.testing.assert_close(grid.acts[0], cache["post", 0][:, -1], **TOL)


def test_a_wrong_weight_is_caught():
    """The comparison can fail: one perturbed weight in the trained copy moves the logits far past the tolerance."""
    data = build_task(TaskConfig(task="add", p=13, frac=0.5))
    model = build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64), data, seed=3).eval()
    forward, _ = forward_for(model, True)
    p = stacked(model)
    p["blocks.0.mlp.W_out"] = p["blocks.0.mlp.W_out"] * 1.01
    with torch.no_grad():
        with pytest.raises(AssertionError):
            torch.testing.assert_close(forward(p, data.inputs[None])[0], model.answer_logits(data.inputs), **TOL)
