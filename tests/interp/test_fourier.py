"""Fourier probes: the O(n^2) neuron spectra, planted models, the batched path, a real grokking run, and the
names `interp.fourier` re-exports from its basis and ablation modules."""

import math

import pytest
import torch

from interp import fourier, grid
from interp.grid import _with_hooks, grid_activations
from interp.modular import additive_structure, modular_structure
from tests.grokking import train_grokking_run
from tests.interp.planted import planted_model
from training.config import ModelConfig, TaskConfig
from training.models.build import build_model
from training.runs.reader import Run
from training.tasks.build import build_task


@pytest.mark.parametrize("n", [7, 12])
def test_neuron_spectra_equal_the_explicit_2d_transform(n):
    s = additive_structure(n)
    acts = torch.randn(2, n * n, 6).relu()
    acts[1, :, 0] = 0.5  # a constant (dead) neuron has no spectrum
    share = fourier.neuron_spectra(acts, s)
    centred = (acts - acts.mean(1, keepdim=True)).double().view(2, n, n, 6)
    X = fourier.fourier_transform_2d(centred, dims=(1, 2))
    f = fourier.fourier_basis(n).freqs
    for k in range(1, n // 2 + 1):
        block = (f == 0) | (f == k)
        expected = X[:, block][:, :, block].pow(2).sum((1, 2)) / centred.pow(2).sum((1, 2))
        expected[1, 0] = 0
        assert torch.allclose(share[:, k - 1], expected, atol=1e-6)
    assert torch.allclose(fourier.neuron_transform(acts[0], s, [2, 4]), X[0][..., [2, 4]].float(), atol=1e-4)


@pytest.mark.parametrize("task, freqs", [("add", (2, 5, 9)), ("sub", (3, 7)), ("mul", (3, 4, 10))])
def test_planted_model_gives_back_its_frequencies(task, freqs):
    """Planted at known frequencies (in discrete-log coordinates for x*y): key frequencies come back exactly,
    the restricted loss is ~0 and removing those frequencies destroys the model."""
    data = build_task(TaskConfig(task=task, p=23, frac=0.5))
    s = modular_structure(data)
    if task == "sub":  # the planted circuit computes e(a) + e(b): plant it for x+y and read it as x+y
        data = build_task(TaskConfig(task="add", p=23, frac=0.5))
        s = modular_structure(data)
    model = planted_model(data, s, freqs)
    if s.n % 2:  # in Z_22 the planted amplitude |cos(w_k(i-j)/2)| vanishes on some pairs for odd k
        with torch.no_grad():
            assert (model.answer_logits(data.inputs[s.rows]).argmax(-1) == s.labels).all()
    assert fourier.key_frequencies(model, data) == sorted(freqs)
    pr = fourier.probe(model, data)
    assert pr.key_freqs == sorted(freqs)
    assert pr.restricted_loss[0] < 1e-4
    assert pr.excluded_loss[0] > math.log(23)
    nonzero = pr.embed_norms[0] > 1e-4 * pr.embed_norms[0].max()
    assert {int(f) for f in fourier.fourier_basis(s.n).freqs[nonzero]} == set(freqs)
    assert pr.in_clusters[0] == len(freqs) * 10  # every planted neuron, not the two dead ones
    assert pr.periodicity[0] > 0.7


def test_multiplicative_run_is_read_in_log_coordinates():
    """A model planted for x*y in discrete-log coordinates: read through Z_22 it has clean key frequencies and
    near-zero restricted loss; read naively over Z_23 by token value the same model shows no clusters."""
    data = build_task(TaskConfig(task="mul", p=23, frac=0.5))
    s = modular_structure(data)
    assert s.group == "multiplicative" and s.n == 22 and s.generator == 5
    model = planted_model(data, s, (3, 8))
    assert fourier.key_frequencies(model, data) == [3, 8]
    assert fourier.key_frequencies(model, additive_structure(23)) == []


def test_batched_path_equals_run_with_cache_and_the_model():
    data = build_task(TaskConfig(task="div", p=13, frac=0.5))
    s = modular_structure(data)
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=48)
    model = build_model(cfg, data)
    states = [build_model(cfg, data, seed=i).state_dict() for i in range(3)]
    fast, slow = grid_activations(model, states, s), _with_hooks(model, states, s)
    for name in ("acts", "logits", "W_L", "attention"):
        assert torch.allclose(getattr(fast, name), getattr(slow, name).detach(), atol=1e-5), name
    model.load_state_dict(states[2])
    with torch.no_grad():
        assert torch.allclose(fast.logits[2], model.answer_logits(s.tokens), atol=1e-5)
    assert torch.allclose(fast.attention.sum(-1), torch.ones(3, 1, 4))


@pytest.mark.parametrize("block_bytes", [1, 10**9])  # one grid row per block, and the whole grid at once
def test_streamed_summary_equals_the_materialised_table(block_bytes, monkeypatch):
    monkeypatch.setattr(grid, "BLOCK_BYTES", block_bytes)
    data = build_task(TaskConfig(task="sub", p=11, frac=0.5))
    s = modular_structure(data)
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=48)
    model = build_model(cfg, data)
    states = [build_model(cfg, data, seed=i).state_dict() for i in range(2)]
    Q = fourier.key_directions(s, [2, 3])
    summary = grid.grid_summary(model, states, s, Q)
    full = grid_activations(model, states, s)
    marginals, squares, coef = grid.summarise(full.acts, s, Q)
    assert torch.allclose(summary.marginals, marginals, atol=1e-4)
    assert torch.allclose(summary.squares, squares, rtol=1e-5)
    assert torch.allclose(summary.coef, coef, atol=1e-4)
    assert torch.allclose(summary.logits, full.logits, atol=1e-5)


@pytest.mark.parametrize("extra", [dict(n_layers=2, normalization_type="LN"), dict(model="mlp")])
def test_other_architectures_go_through_hooks(extra):
    data = build_task(TaskConfig(task="add", p=11, frac=0.5))
    cfg = ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32, **extra)
    model = build_model(cfg, data)
    pr = fourier.probe(model, data, key_freqs=[1, 3])
    assert pr.neuron_share.shape == (1, 32) and pr.embed_norms.shape == (1, 11)
    assert pr.restricted_loss[0] > 0 and pr.excluded_loss[0] > 0
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(model.answer_logits(data.inputs[data.train_idx]).double(), data.labels[data.train_idx])
    assert pr.train_loss[0] == pytest.approx(full.item(), rel=1e-5)


def test_tiny_grokking_run_restricted_loss_leads_test_loss(tmp_path):
    """On a real run that groks, the key-frequency part alone generalises long before the model does: while test
    accuracy is still low, the restricted loss is already better than chance and far below the test loss."""
    summary = train_grokking_run(tmp_path / "r")
    run = Run(tmp_path / "r")
    s = modular_structure(run.data)
    model = run.model(run.steps[-1])
    key = fourier.key_frequencies(model, run)
    assert key
    pr = fourier.probe_states(model, [run.weights(t) for t in run.steps], s, key)
    test_acc = {r["step"]: r["test_acc"] for r in run.metrics}
    chance = math.log(s.p)
    early = [i for i, t in enumerate(run.steps) if t >= summary["S_mem"] and test_acc[t] < 0.5]
    assert any(pr.test_loss[i] > chance > pr.restricted_loss[i] and pr.restricted_loss[i] < 0.25 * pr.test_loss[i]
               for i in early)
    assert pr.restricted_loss[-1] < 0.05 and pr.periodicity[-1] > 0.8


def test_fourier_probes_are_torch_tensors_throughout():
    from training.config import ModelConfig, TaskConfig
    from training.models.build import build_model
    from training.tasks.build import build_task

    data = build_task(TaskConfig(task="add", p=7, frac=0.5))
    pr = fourier.probe(build_model(ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32), data), data)
    arrays = {k: v for k, v in vars(pr).items() if k not in ("key_freqs", "embed_names", "threshold")}
    assert all(isinstance(v, torch.Tensor) and v.shape[0] == 1 for v in arrays.values()), arrays.keys()
    both = fourier.FourierProbes.concat([pr, pr])
    assert torch.equal(both.test_loss, pr.test_loss.repeat(2)) and both.embed_norms.shape == (2, 7)


def test_fourier_re_exports_the_basis_and_ablation_names():
    from interp import fourier_ablations, fourier_basis

    for module in (fourier_basis, fourier_ablations):
        public = [n for n in vars(module) if not n.startswith("_") and getattr(vars(module)[n], "__module__", "") ==
                  module.__name__]
        assert public and all(getattr(fourier, n) is getattr(module, n) for n in public), module.__name__
