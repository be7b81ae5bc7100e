"""Every probe reads models through their common interface: it takes our models or a TransformerBridge, and no
probe or analysis module names a model class or a weight key."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from interp import cosets, fourier, sparsity
from interp.modular import additive_structure
from training.config import ModelConfig, TaskConfig
from training.models.bridge import to_bridge
from training.models.build import build_model
from training.tasks.build import build_task

ROOT = Path(__file__).resolve().parents[2]
MODEL_CLASSES = {"Transformer", "MLPModel", "LSTMModel"}


def offences(path: Path) -> list[str]:
    """Model classes named, weight keys used as subscripts, isinstance/hasattr on a model."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if isinstance(node, ast.ImportFrom):
            name = next((a.name for a in node.names if a.name in MODEL_CLASSES), None)
        if name in MODEL_CLASSES:
            found.append(f"{path.name}:{node.lineno} names {name}")
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            key = node.slice.value
            if "." in key and key.rsplit(".", 1)[1].startswith(("W_", "b_")):
                found.append(f"{path.name}:{node.lineno} reads weight key {key!r}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "hasattr"):
            if getattr(node.args[0], "id", None) == "model" and getattr(node.args[1], "id", None) != "GrokModel":
                found.append(f"{path.name}:{node.lineno} {node.func.id}(model, ...)")
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "interp").glob("*.py")) + sorted((ROOT / "analyses").glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_probe_or_analysis_branches_on_a_model_class_or_weight_key(path):
    assert offences(path) == []


def test_the_check_catches_what_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from training.models.transformer import MLPModel\n"
                   "def f(model, W):\n"
                   "    if hasattr(model, 'layers'):\n"
                   "        return W['embed.W_E']\n")
    assert len(offences(bad)) == 3


@pytest.fixture(scope="module")
def transformer():
    data = build_task(TaskConfig(task="add", p=13, frac=0.5))
    model = build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64), data, seed=4).eval()
    return model, data


def test_fourier_probes_take_the_bridge(transformer):
    model, data = transformer
    bridge = to_bridge(model)
    ours, theirs = fourier.probe(model, data), fourier.probe(bridge, data)
    assert theirs.key_freqs == ours.key_freqs
    for name in ("embed_norms", "unembed_norms", "neuron_share", "test_loss", "periodicity_by_freq", "attention"):
        np.testing.assert_allclose(getattr(theirs, name), getattr(ours, name), rtol=1e-5, atol=1e-6, err_msg=name)
    assert fourier.key_frequencies(bridge, data) == fourier.key_frequencies(model, data)


def test_sparsity_and_coset_probes_take_the_bridge(transformer):
    model, data = transformer
    bridge = to_bridge(model)
    x = data.inputs[:20]
    torch.testing.assert_close(sparsity.hidden_activations(bridge, x), sparsity.hidden_activations(model, x))
    a, b = sparsity.effective_sparsity(model, x, data.labels[:20], "ce"), sparsity.effective_sparsity(bridge, x, data.labels[:20], "ce")
    assert a.n_neurons == b.n_neurons
    rows, rows_b = cosets.group_rows(model, 13), cosets.group_rows(bridge, 13)
    assert rows.keys() == rows_b.keys() and all(np.allclose(rows[k], rows_b[k]) for k in rows)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_every_probe_works_on_the_other_models_unchanged(kind):
    data = build_task(TaskConfig(task="add", p=7, frac=0.5))
    model = build_model(ModelConfig(model=kind, d_model=8, d_mlp=16), data, seed=0).eval()
    width = 16 if kind == "mlp" else 8
    probes = fourier.probe(model, data)
    assert probes.neuron_share.shape == (1, width) and probes.embed_norms.shape == (1, 7)
    acts = model.neuron_activations(data.inputs)
    assert acts.shape == (49, width)
    torch.testing.assert_close(model.answer_logits(data.inputs), acts @ model.neuron_readout() + model.b_U)  # affine read-out
    es = sparsity.effective_sparsity(model, data.inputs, data.labels, "ce")
    assert 0 <= es.n_neurons <= width
    assert cosets.group_rows(model, 7)["W_U"].shape == (7, width)
    assert fourier.probe(model, additive_structure(7)).attention is None
