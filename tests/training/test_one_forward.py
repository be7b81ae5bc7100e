"""One forward per model: the transformer and the MLP each have one function over members stacked [K, ...]
(`batched_forward`); training runs it on K members and the module's `forward` runs it on its own parameters as K = 1.

So the module's unhooked answer path and the plain training forward on the same weights are the same code and give
the same bits. The other variants compute the same function in another order of float32 sums: the exact path's
aligned products, the hooked run (every position, LayerNorm step by step) and the probes' closed form on the operand
grid (interp.grid, derived from the weights); they agree to float32 rounding amplified by the depth (rtol/atol 1e-5
on logits of size ~1), never bit for bit."""

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


@pytest.mark.parametrize("kind", [dict(n_layers=2, normalization_type="LN"), dict(model="mlp", n_layers=2, d_mlp=48)])
def test_the_module_runs_the_training_forward_itself(kind):
    """Same function, same code, same machine: the module's answer logits are the plain training forward's bits."""
    data = build_task(TaskConfig(task="add", p=13, frac=0.5))
    model = build_model(ModelConfig(**{"d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 64, **kind}), data, seed=5)
    forward, _ = forward_for(model.eval(), exact=False)
    with torch.no_grad():
        assert torch.equal(forward(stacked(model), data.inputs[None])[0], model.answer_logits(data.inputs))


def test_a_hook_changes_what_flows_on():
    """A hook's return value replaces the activation downstream, as in a HookedTransformer: with the MLP's output
    zeroed, the logits are the unembedded resid_mid; without the hook they are not."""
    data = build_task(TaskConfig(task="add", p=13, frac=0.5))
    model = build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64), data, seed=6).eval()
    x = data.inputs[:20]
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
        zeroed = model.run_with_hooks(x, fwd_hooks=[("blocks.0.hook_mlp_out", lambda t, hook: torch.zeros_like(t))])
    torch.testing.assert_close(zeroed, cache["blocks.0.hook_resid_mid"] @ model.W_U, **TOL)
    assert not torch.allclose(model(x), zeroed, atol=1e-2)
