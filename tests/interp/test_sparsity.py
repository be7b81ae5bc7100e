"""Sparsity probes: a planted parity circuit is found exactly; the statistics agree with numpy/scipy."""

import itertools
import math

import numpy as np
import pytest
import torch

from interp import sparsity as sp
from training.config import ModelConfig, TaskConfig
from training.models.build import build_model
from training.tasks.build import build_task

N_BITS, K, N_RANDOM = 12, 3, 100


def planted_parity_mlp(n_layers: int = 1, seed: int = 0):
    """An MLP whose first 2^k hidden neurons compute the k-parity, beside N_RANDOM small random neurons.

    Neuron v (one per sign pattern of the k bits) is relu(v . x_S - k + 2 + 1/k): 2 + 1/k on pattern v, 1/k on its
    k neighbours, 0 elsewhere; with output weight parity(v) the output is parity(x) (1 + 1/k), and without neuron v
    the output on pattern v is -parity(v): every planted neuron is needed. The random neurons have small incoming
    norms and outputs, too small to change any prediction. With n_layers=2 the second layer passes the first through.
    """
    data = build_task(TaskConfig(task="parity", n_bits=N_BITS, k=K, n_train=300, n_test=300, split_seed=seed))
    d = 2**K + N_RANDOM
    model = build_model(ModelConfig(model="mlp", n_layers=n_layers, d_mlp=d), data, seed=seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    W_in = torch.randn(N_BITS, d, generator=g) * 0.3 / math.sqrt(N_BITS)
    b_in = torch.randn(d, generator=g) * 0.05
    W_U = torch.randn(d, 1, generator=g) * 0.05
    for j, v in enumerate(itertools.product([-1.0, 1.0], repeat=K)):
        W_in[:, j] = 0
        W_in[:K, j] = torch.tensor(v)
        b_in[j] = -K + 2 + 1 / K
        W_U[j, 0] = math.prod(v)
    perm = torch.randperm(d, generator=g)  # the planted neurons are not simply the first ones
    with torch.no_grad():
        model.layers[0].W_in.copy_(W_in[:, perm])
        model.layers[0].b_in.copy_(b_in[perm])
        if n_layers == 2:
            model.layers[1].W_in.copy_(torch.eye(d))
            model.layers[1].b_in.zero_()
        model.W_U.copy_(W_U[perm])
        model.b_U.zero_()
    planted = np.zeros(d, dtype=bool)
    planted[(torch.argsort(perm)[: 2**K]).numpy()] = True
    return model, data, planted


@pytest.mark.parametrize("n_layers", [1, 2], ids=["cumsum", "hooks+bisection"])
def test_planted_parity_circuit_has_effective_sparsity_2k_and_faithfulness_1(n_layers):
    model, data, planted = planted_parity_mlp(n_layers)
    x_tr, y_tr = data.inputs[data.train_idx], data.labels[data.train_idx]
    x_te, y_te = data.inputs[data.test_idx], data.labels[data.test_idx]
    with torch.no_grad():
        assert (sp.predictions(model.answer_logits(x_te), "hinge") == y_te).all()  # the planted net solves the task

    es = sp.effective_sparsity(model, x_tr, y_tr, data.loss, layer=0)
    assert sp.Ablator(model, x_tr, 0).linear == (n_layers == 1)
    assert es.full_accuracy == 1.0
    assert es.n_neurons == 2**K
    assert np.array_equal(es.keep, planted)

    f = sp.faithfulness(model, es.keep, x_te, y_te, data.loss, n_random=10)
    assert f["faithfulness"] == 1.0 and f["subnetwork_accuracy"] == 1.0
    assert f["random_faithfulness"] < 0.8  # a random subnetwork of 2^k neurons is near chance


def test_fewer_planted_neurons_fall_short():
    model, data, _ = planted_parity_mlp()
    x_tr, y_tr = data.inputs[data.train_idx], data.labels[data.train_idx]
    es = sp.effective_sparsity(model, x_tr, y_tr, data.loss)
    assert es.curve[2**K] == 1.0 and es.curve[2**K - 1] < 1.0
    assert es.curve[0] < 1.0


def overshooting_mlp(n_layers: int = 1):
    """Two neurons on (4, 1)-parity (label = sign of x0), output bias -1. Neuron A = relu(3 x0), output weight 1,
    is right on every input alone; neuron B = relu(x1 + x2 - 1.5), output weight -10, smaller incoming norm, turns
    the answer wrong where x0 = x1 = x2 = +1. So the top-1 subnetwork beats the full network's accuracy (7/8 of
    the patterns). With n_layers=2 a second, identity layer makes the readout non-affine (hooks + bisection)."""
    data = build_task(TaskConfig(task="parity", n_bits=4, k=1, n_train=200, n_test=50, split_seed=0))
    model = build_model(ModelConfig(model="mlp", n_layers=n_layers, d_mlp=2), data, seed=0).eval()
    with torch.no_grad():
        model.layers[0].W_in.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
        model.layers[0].b_in.copy_(torch.tensor([0.0, -1.5]))
        if n_layers == 2:
            model.layers[1].W_in.copy_(torch.eye(2))
            model.layers[1].b_in.zero_()
        model.W_U.copy_(torch.tensor([[1.0], [-10.0]]))
        model.b_U.fill_(-1.0)
    return model, data


@pytest.mark.parametrize("n_layers", [1, 2], ids=["cumsum", "hooks+bisection"])
def test_merrill_rule_needs_exactly_the_full_accuracy(n_layers):
    """Merrill et al. take the first k whose subnetwork's accuracy equals the full network's; a subnetwork that
    does better is not "the circuit" of this network. The earlier rule (accuracy >= full) stopped at 1."""
    model, data = overshooting_mlp(n_layers)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    es = sp.effective_sparsity(model, x, y, data.loss)
    assert es.rule == "merrill2023" and es.full_accuracy < 1.0
    assert es.curve[1] == 1.0  # neuron A alone answers everything
    assert es.n_neurons == 2 and es.keep.all()
    assert sp.effective_sparsity(model, x, y, data.loss, rule="reach").n_neurons == 1


def test_merrill_rule_ranks_without_the_bias_and_never_keeps_zero_neurons():
    """At initialisation the empty network's output is b_U; with b_U = 0 it is exactly 0, which is no class (sign
    0 never equals a +-1 label). The earlier probe counted 0 as class 0, so on labels that are mostly class 0 the
    empty network "reproduced" the full network's accuracy and the effective sparsity was 0."""
    data = build_task(TaskConfig(task="parity", n_bits=N_BITS, k=K, n_train=300, n_test=300, split_seed=0))
    model = build_model(ModelConfig(model="mlp", n_layers=1, d_mlp=50), data, seed=0).eval()
    with torch.no_grad():
        model.b_U.zero_()
        model.layers[0].b_in[7] = 100.0  # a huge bias, a small weight column: it must not rank first
        model.layers[0].W_in[:, 7] *= 0.01
    x = data.inputs[data.train_idx]
    y = torch.zeros(len(x), dtype=torch.long)  # every label class 0
    es = sp.effective_sparsity(model, x, y, data.loss)
    assert es.curve[0] == 0.0 and es.n_neurons >= 1
    assert es.curve[es.n_neurons] == es.full_accuracy and np.all(es.curve[1 : es.n_neurons] != es.full_accuracy)
    W = model.layers[0].W_in.detach().double().numpy()
    assert np.allclose(es.norms, np.sqrt((W**2).sum(0))) and es.order[-1] == 7
    with torch.no_grad():
        assert (sp.predictions(torch.zeros(3, 1), "hinge") == -1).all()
    with pytest.raises(ValueError, match="unknown rule"):
        sp.effective_sparsity(model, x, y, data.loss, rule="nope")


def _tiny_transformer():
    data = build_task(TaskConfig(task="add", p=11, frac=0.5))
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    return build_model(cfg, data, seed=3).eval(), data


def test_transformer_mlp_neurons_cumsum_matches_zeroing_hook_post():
    model, data = _tiny_transformer()
    h = sp.hidden_layer(model)
    assert h.hook == "blocks.0.mlp.hook_post" and h.readout is not None
    norms = sp.neuron_norms(model)
    W, b = model.blocks[0].mlp.W_in.detach().numpy(), model.blocks[0].mlp.b_in.detach().numpy()
    assert np.allclose(norms, np.sqrt((W**2).sum(0)))
    assert np.allclose(sp.neuron_norms(model, bias=True), np.sqrt((W**2).sum(0) + b**2))
    x, y = data.inputs, data.labels
    ab = sp.Ablator(model, x)
    order = np.argsort(-norms)
    curve = ab.accuracy_curve(order, y, "ce")
    for m in (0, 1, 5, 17, 32):
        keep = torch.zeros(32, dtype=torch.bool)
        keep[torch.as_tensor(order[:m])] = True
        with torch.no_grad():
            hooked = model.run_with_hooks(x, fwd_hooks=[(h.hook, lambda act, hook, keep=keep: act * keep)])[:, -1]
        assert torch.allclose(ab.outputs(keep), hooked.double(), atol=1e-5)
        assert curve[m] == pytest.approx((hooked.argmax(-1) == y).double().mean().item())
    es = sp.effective_sparsity(model, x, y, "ce")
    assert es.n_neurons >= 1 and es.curve[es.n_neurons] == es.full_accuracy
    assert np.all(es.curve[1 : es.n_neurons] != es.full_accuracy)
    old = sp.effective_sparsity(model, x, y, "ce", rule="reach")
    assert old.curve[old.n_neurons] >= old.full_accuracy and np.all(old.curve[: old.n_neurons] < old.full_accuracy)


def test_layernorm_transformer_uses_hooks():
    data = build_task(TaskConfig(task="add", p=11, frac=0.5))
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, normalization_type="LN")
    model = build_model(cfg, data, seed=1).eval()
    assert sp.hidden_layer(model).readout is None
    es = sp.effective_sparsity(model, data.inputs, data.labels, "ce")
    assert 1 <= es.n_neurons <= 32 and es.curve[es.n_neurons] == es.full_accuracy
    with torch.no_grad():
        assert es.full_accuracy == (model.answer_logits(data.inputs).argmax(-1) == data.labels).double().mean().item()


def test_spectral_norms_match_numpy_per_matrix_per_head_and_batched():
    g = torch.Generator().manual_seed(0)
    w = {"A": torch.randn(5, 7, generator=g), "W_Q": torch.randn(3, 6, 4, generator=g), "b": torch.randn(7)}
    out = sp.spectral_norms(w)
    assert set(out) == {"A", "W_Q"}
    assert np.isclose(out["A"], np.linalg.norm(w["A"].numpy().astype(np.float64), 2))
    assert np.allclose(out["W_Q"], [np.linalg.norm(m.astype(np.float64), 2) for m in w["W_Q"].numpy()])
    stack = {"A": torch.stack([w["A"], 2 * w["A"]]), "b": torch.stack([w["b"], w["b"]])}
    batched = sp.spectral_norms(stack, batch_dims=1)
    assert set(batched) == {"A"} and np.allclose(batched["A"], [out["A"], 2 * out["A"]])


def test_l1_l2_hoyer_and_gini_match_their_definitions():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 50))
    assert np.allclose(sp.l1_l2_ratio(w), np.linalg.norm(w, 1, axis=1) / np.linalg.norm(w, 2, axis=1))
    # Gini as the mean absolute difference over twice the mean (equal to Hurley & Rickard's sorted form)
    a = np.abs(w)
    pairwise = np.abs(a[:, :, None] - a[:, None, :]).sum((1, 2)) / (2 * a.shape[1] ** 2 * a.mean(1))
    assert np.allclose(sp.gini(w), pairwise)
    one_hot, flat = np.eye(10)[3], np.ones(10)
    assert np.isclose(sp.hoyer(one_hot), 1) and np.isclose(sp.hoyer(flat), 0)
    assert np.isclose(sp.gini(flat), 0) and np.isclose(sp.gini(one_hot), 1 - 1 / 10)
    assert sp.gini(np.r_[np.zeros(90), np.ones(10)]) > sp.gini(rng.normal(size=100))


def test_weight_kde_is_scotts_gaussian_mixture():
    v = np.random.default_rng(1).normal(size=300)
    grid, dens = sp.weight_kde(v, n_grid=50)
    bw = len(v) ** (-1 / 5) * v.std(ddof=1)
    manual = np.exp(-0.5 * ((grid[:, None] - v[None]) / bw) ** 2).sum(1) / (len(v) * bw * math.sqrt(2 * math.pi))
    assert np.allclose(dens, manual)
    assert abs(np.trapezoid(dens, grid) - 1) < 1e-3


def test_bit_classes_tsne_and_class_separation():
    x = np.array([[-1, -1, 1], [1, -1, -1], [-1, 1, 1], [1, 1, -1]])
    assert sp.bit_classes(x, [0, 1]).tolist() == [0, 1, 2, 3]
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, 120)
    clustered = np.eye(4)[classes] * 5 + rng.normal(size=(120, 4)) * 0.1
    emb = sp.tsne(clustered, seed=0, perplexity=10)
    assert emb.shape == (120, 2)
    assert sp.class_separation(emb, classes) > 0.5
    assert sp.class_separation(clustered, classes) > 0.8
    assert abs(sp.class_separation(rng.normal(size=(120, 4)), classes)) < 0.2
    assert np.all(sp.tsne(np.zeros((20, 3))) == 0)


def test_hidden_activations_and_bad_layer():
    model, data, _ = planted_parity_mlp()
    h = sp.hidden_activations(model, data.inputs[:7])
    assert h.shape == (7, 2**K + N_RANDOM) and (h >= 0).all()
    with pytest.raises(ValueError, match="out of range"):
        sp.hidden_layer(model, 1)
    tmodel, tdata = _tiny_transformer()
    assert sp.hidden_activations(tmodel, tdata.inputs[:5]).shape == (5, 32)
