"""Cells of TransformerLens' demos/Grokking_Demo.ipynb, as the demo writes them, run against `run.model(step)` of a
run trained here and against `run.bridge(step)` (TransformerLens 4's TransformerBridge, the same weights).

Each cell is the demo's source; CHANGED marks the ones that need the run's own p or split, which they need on the
bridge as well (the demo hard-codes 113 and draws its split from DATA_SEED). The plotting helpers are the demo's,
with `Figure.show` a no-op. Only cells read from the TransformerLens repository are here (see COUNTS)."""

from __future__ import annotations

import pytest
import torch

from tests.training.tl_demo import HELPERS, demo_namespace, run_cells, train_demo_run

# (name, source, changed): the demo's cells in order, from "Define Task" to the first analysis section
CELLS = [
    ("plotting helpers", HELPERS, False),
    ("task vectors", 'a_vector = einops.repeat(torch.arange(p), "i -> (i j)", j=p)\n'
                     'b_vector = einops.repeat(torch.arange(p), "j -> (i j)", i=p)\n'
                     'equals_vector = einops.repeat(torch.tensor(p), " -> (i j)", i=p, j=p)\n', True),  # 113 -> p
    ("dataset", "dataset = torch.stack([a_vector, b_vector, equals_vector], dim=1).to(device)\nprint(dataset[:5])\n"
                "print(dataset.shape)", False),
    ("labels", "labels = (dataset[:, 0] + dataset[:, 1]) % p\nprint(labels.shape)\nprint(labels[:5])", False),
    ("split", "train_indices = run.data.train_idx\ntest_indices = run.data.test_idx\n\n"  # the run's split, not
              "train_data = dataset[train_indices]\ntrain_labels = labels[train_indices]\n"  # DATA_SEED's
              "test_data = dataset[test_indices]\ntest_labels = labels[test_indices]\n"
              "print(train_data[:5])\nprint(train_labels[:5])\nprint(train_data.shape)\nprint(test_data[:5])\n"
              "print(test_labels[:5])\nprint(test_data.shape)", True),
    ("loss_fn", "def loss_fn(logits, labels):\n    if len(logits.shape)==3:\n        logits = logits[:, -1]\n"
                "    logits = logits.to(torch.float64)\n    log_probs = logits.log_softmax(dim=-1)\n"
                "    correct_log_probs = log_probs.gather(dim=-1, index=labels[:, None])[:, 0]\n"
                "    return -correct_log_probs.mean()\ntrain_logits = model(train_data)\n"
                "train_loss = loss_fn(train_logits, train_labels)\nprint(train_loss)\ntest_logits = model(test_data)\n"
                "test_loss = loss_fn(test_logits, test_labels)\nprint(test_loss)", False),
    ("uniform loss", 'print("Uniform loss:")\nprint(np.log(p))', False),
    ("run_with_cache", "original_logits, cache = model.run_with_cache(dataset)\nprint(original_logits.numel())", False),
    ("weight matrices", 'W_E = model.embed.W_E[:-1]\nprint("W_E", W_E.shape)\n'
                        "W_neur = W_E @ model.blocks[0].attn.W_V @ model.blocks[0].attn.W_O @ model.blocks[0].mlp.W_in\n"
                        'print("W_neur", W_neur.shape)\nW_logit = model.blocks[0].mlp.W_out @ model.unembed.W_U\n'
                        'print("W_logit", W_logit.shape)', False),
    ("original loss", 'original_loss = loss_fn(original_logits, labels).item()\nprint("Original Loss:", original_loss)',
     False),
    ("helper variables", 'pattern_a = cache["pattern", 0, "attn"][:, :, -1, 0]\n'
                         'pattern_b = cache["pattern", 0, "attn"][:, :, -1, 1]\n'
                         'neuron_acts = cache["post", 0, "mlp"][:, -1, :]\n'
                         'neuron_pre_acts = cache["pre", 0, "mlp"][:, -1, :]', False),
    ("cache shapes", "for param_name, param in cache.items():\n    print(param_name, param.shape)", False),
    ("attention imshow", 'imshow(cache["pattern", 0][5][:, -1, :], title="Average Attention Pattern per Head", '
                         "xaxis=\"Source\", yaxis=\"Head\", x=['a', 'b', '='])", False),
    ("dataset rows", "dataset[:4]", False),
    # the training curve, every 100th loss against its epoch (the run's metrics, one row per step here): the demo
    # draws it with neel_plotly's `line` (a list of series), installed by %pip; the demo's own px `line` takes the
    # series as columns
    ("training curve", "line(torch.tensor([train_losses[::100], test_losses[::100]]).T, "
                       "x=np.arange(0, len(train_losses), 100), "
                       'xaxis="Epoch", yaxis="Loss", log_y=True, title="Training Curve for Modular Addition")', True),
]
# the demo's other cells up to there, read and not run: IMPOSSIBLE where TransformerLens 4 itself refuses them (it
# has no HookedTransformer or HookedTransformerConfig: run.model(step) is the model); NOT_RUN for the environment
# (Colab and plotly set-up, paths, hyperparameters), training (training.run trains) and the demo's own file
# (python -m training.import_tl reads it)
IMPOSSIBLE = ["import HookedTransformer, HookedTransformerConfig", "cfg = HookedTransformerConfig(...)",
              "model = HookedTransformer(cfg)"]
NOT_RUN = ["TRAIN_MODEL", "Colab set-up", "plotly renderer", "plotly templates", "imports", "PTH_LOCATION",
           "hyperparameters", "freeze biases", "optimiser", "training loop", "torch.save", "torch.load"]
COUNTS = {"unmodified": sum(not c for *_, c in CELLS), "changed": sum(c for *_, c in CELLS),
          "impossible": len(IMPOSSIBLE), "not run": len(NOT_RUN)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_demo_run(tmp_path_factory.mktemp("demo") / "run", p=23, steps=300, eval_every=1, ckpt_every=100,
                          ckpt_floor=2, ckpt_max=20)


def cells_on(model, run, monkeypatch, capsys) -> dict:
    ns = demo_namespace(model, run)
    run_cells(CELLS, ns, monkeypatch)
    ns["printed"] = capsys.readouterr().out
    return ns


def test_the_demo_cells_run_on_our_model_as_on_the_bridge(run, monkeypatch, capsys):
    step = run.checkpoint_steps[-1]
    ours = cells_on(run.model(step), run, monkeypatch, capsys)
    theirs = cells_on(run.bridge(step), run, monkeypatch, capsys)
    p = run.config.task.p
    assert ours["original_logits"].shape == theirs["original_logits"].shape == (p * p, 3, p)
    assert f"{p * p * 3 * p}\n" in ours["printed"]  # original_logits.numel(): every position, as TransformerLens
    for name in ("train_loss", "test_loss", "original_loss"):
        assert ours[name] == pytest.approx(float(theirs[name]), rel=1e-4, abs=1e-6), name
    for name in ("W_neur", "W_logit", "pattern_a", "pattern_b", "neuron_acts", "neuron_pre_acts"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-4, msg=name)
    assert {100, 200, 300} <= set(run.checkpoint_steps)  # --ckpt-every 100: the demo's spacing, on top
    assert COUNTS == {"unmodified": 12, "changed": 3, "impossible": 3, "not run": 12}
