"""The rest of TransformerLens' demos/Grokking_Demo.ipynb (tests/training/tl_demo_analysis.py: the Fourier basis,
key frequencies, neuron clusters, logit periodicity, restricted and excluded loss over checkpoints), as the demo
writes it, on `run.model(step)` of a run that groks here and on `run.bridge(step)` holding the same weights, after
the cells of test_tl_demo_cells have set the scene.

What the demo's training loop leaves behind comes from the run: its losses (one row per step), and for
`model_checkpoints`/`checkpoint_epochs` the state dicts of the `--ckpt-every 100` checkpoints (the demo's
`checkpoint_every`), each in the format of the model that loads it; `KEY_FREQS` is the run's key frequencies."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from tests.grokking import GROKKING
from tests.training.test_tl_demo_cells import CELLS as SCENE
from tests.training.tl_demo import demo_namespace, run_cell, run_cells, train_demo_run
from tests.training.tl_demo_analysis import CELLS, IMPOSSIBLE

EVERY = 100  # the demo's checkpoint_every
COUNTS = {"unmodified": sum(c is None for *_, c in CELLS), "changed": sum(c is not None for *_, c in CELLS),
          "impossible": len(IMPOSSIBLE)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # the tiny grokking run, a whole number of EVERY steps long as the demo's 25000 epochs are
    flat = {**GROKKING, "steps": 6 * EVERY, "stop_after_gen": -1, "eval_every": 1, "ckpt_every": EVERY,
            "ckpt_floor": 2, "ckpt_max": 20}
    return train_demo_run(tmp_path_factory.mktemp("demo") / "run", **flat)


@pytest.fixture(scope="module")
def key_freqs(run):
    from interp.fourier import key_frequencies

    freqs = key_frequencies(run.model(run.checkpoint_steps[-1]))
    assert freqs, "the tiny run has no key frequencies: it did not grok"
    return freqs


def demo_steps(run) -> list[int]:
    return [s for s in run.checkpoint_steps if s and s % EVERY == 0]


def analysis_on(kind: str, run, key_freqs, monkeypatch) -> tuple[dict, dict]:
    """(namespace, {cell: displayed value}) after the scene's cells and every runnable cell, on `kind`'s model."""
    import tqdm.auto as tqdm
    from fancy_einsum import einsum

    steps = demo_steps(run)
    load = run.model if kind == "ours" else run.bridge
    checkpoints = [run.weights(s) if kind == "ours" else run.bridge(s).state_dict() for s in steps]
    ns = demo_namespace(load(steps[-1]), run, tqdm=tqdm, einsum=einsum, model_checkpoints=checkpoints,
                        checkpoint_epochs=[s - 1 for s in steps], KEY_FREQS=key_freqs)
    run_cells(SCENE, ns, monkeypatch)
    return ns, run_cells(CELLS, ns, monkeypatch)


@pytest.fixture(scope="module")
def both(run, key_freqs) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        return {kind: analysis_on(kind, run, key_freqs, mp) for kind in ("ours", "bridge")}


def assert_close(ours, theirs, name: str) -> None:
    """Two float32 forwards of the same weights by different kernels (our einsums, the bridge's fused linears)
    differ by float32 rounding: ~1e-7 relative per op, a few 1e-6 after the demo's sums over up to p^3 = 12167
    terms; 1e-4 of the tensor's largest magnitude leaves a wide margin and still catches any wrong tensor."""
    ours, theirs = torch.as_tensor(ours).double(), torch.as_tensor(theirs).double()
    scale = float(theirs.nan_to_num().abs().max()) or 1.0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale, equal_nan=True, msg=name)


TENSORS = ("fourier_embed", "key_fourier_embed", "fourier_neuron_acts", "neuron_freq_norm", "W_logit_fourier",
           "inputs_sin_17c", "all_logits", "approximated_logits", "neuron_acts_square_fourier", "restricted_logits",
           "excluded_logits")
METRICS = ("cos_coeffs", "cos_sim", "residual_cos_sim", "restricted_loss", "excluded_loss")
SHOWN = ("test_logits(all_logits)", "test_logits(approximated_logits)", "get_restricted_loss", "get_excluded_loss")


def test_the_analysis_cells_agree_on_our_model_and_the_bridge(run, key_freqs, both):
    (ours, ours_shown), (theirs, theirs_shown) = both["ours"], both["bridge"]
    p, n = run.config.task.p, len(demo_steps(run))
    assert ours["key_freqs"] == theirs["key_freqs"] == key_freqs
    assert ours["neuron_freq_norm"].shape == (p // 2, run.config.model.d_mlp)
    for name in TENSORS:
        assert_close(ours[name], theirs[name], name)
    for name in METRICS:
        assert ours["metric_cache"][name].shape[0] == n, name  # one value per checkpoint of the demo's list
        assert_close(ours["metric_cache"][name], theirs["metric_cache"][name], name)
    for name in SHOWN:
        assert_close(ours_shown[name], theirs_shown[name], name)
    # neurons_17: a threshold at 0.85, equal wherever the two shares are not within rounding of it
    near = (ours["neuron_freq_norm"][key_freqs[0] - 1] - 0.85).abs() < 1e-4
    assert torch.equal(ours["neurons_17"][~near], theirs["neurons_17"][~near])


def test_the_analysis_cells_read_the_model_they_are_given(run, key_freqs, both):
    """Consistency a wrong logits tensor would break: the demo's loss over its (p, p, p) logit cube is the
    run-with-cache loss, get_metrics leaves the last checkpoint loaded, and the run really grokked."""
    ours, shown = both["ours"]
    assert float(shown["test_logits(all_logits)"]) == pytest.approx(ours["original_loss"], rel=1e-6)
    assert ours["all_logits"].shape == (run.config.task.p,) * 3
    last = next(r for r in run.metrics if r["step"] == demo_steps(run)[-1])
    assert float(ours["metric_cache"]["restricted_loss"][-1]) == pytest.approx(float(shown["get_restricted_loss"]))
    assert float(ours["test_loss"]) == pytest.approx(last["test_loss"], rel=1e-3)
    assert max(r["test_acc"] for r in run.metrics) > 0.99
    # the key frequencies' directions carry the answer: the restricted loss is far below chance (log p)
    assert float(shown["get_restricted_loss"]) < 0.1 * float(torch.log(torch.tensor(float(run.config.task.p))))


@pytest.mark.parametrize("kind", ["ours", "bridge"])
def test_the_impossible_cells_fail_on_both(both, kind, monkeypatch):
    ns = both[kind][0]
    monkeypatch.setattr(go.Figure, "show", lambda *a, **k: None)  # were one to draw after all
    for name, source, _ in IMPOSSIBLE:
        with pytest.raises((TypeError, ModuleNotFoundError, IndexError)):  # neel_plotly's arguments, its import
            run_cell(name, source, dict(ns))


def test_counts():
    assert COUNTS == {"unmodified": 49, "changed": 8, "impossible": 8}
    assert len(SCENE) + len(CELLS) + len(IMPOSSIBLE) == 15 + 65
