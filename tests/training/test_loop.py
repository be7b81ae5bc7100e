"""The run directory the loop writes, read back through `Run`."""

import json

import torch
from safetensors import safe_open

from tests.conftest import tiny_config
from training.loop import train
from training.runs.reader import Run


def test_tiny_run_writes_the_whole_run_directory(tmp_path):
    cfg = tiny_config()
    summary = train(cfg, tmp_path / "r", progress=False)
    d = tmp_path / "r"
    for name in ("config.json", "split.json", "metrics.jsonl", "summary.json", "curves.png", "state/state.safetensors"):
        assert (d / name).is_file(), name
    assert not list(d.rglob("*.tmp*"))  # atomic writes leave no temporaries

    run = Run(d)
    assert run.config == cfg
    assert run.versions["torch"] == torch.__version__
    rows = run.metrics
    assert [r["step"] for r in rows] == list(range(0, 61, 10))
    assert {"train_loss", "test_loss", "train_acc", "test_acc", "weight_norm", "lr", "wd", "time"} <= set(rows[0])
    assert run.steps[0] == 0 and run.steps[-1] == 60 and summary["n_checkpoints"] == len(run.steps)

    with safe_open(run.checkpoint_path(60), "pt") as f:
        meta = f.metadata()
    assert meta["step"] == "60"
    assert json.loads(meta["metrics"])["test_acc"] == rows[-1]["test_acc"]

    # the reader rebuilds the split and the model, and the model reproduces the logged accuracy
    data = run.data
    model = run.model(60)
    with torch.no_grad():
        acc = (model.answer_logits(data.inputs[data.test_idx]).argmax(-1) == data.labels[data.test_idx]).float().mean().item()
    assert abs(acc - rows[-1]["test_acc"]) < 1e-6
    bridge = run.bridge(60)
    with torch.no_grad():
        assert (bridge(data.inputs) - model(data.inputs)).abs().max() < 1e-5


def test_weight_decay_shrinks_the_norm_and_warmup_ramps_lr(tmp_path):
    cfg = tiny_config(steps=40, wd=5.0, warmup_steps=20)
    train(cfg, tmp_path / "r", progress=False)
    rows = Run(tmp_path / "r").metrics
    assert rows[1]["lr"] < rows[2]["lr"] == cfg.optim.lr  # still warming up at step 10, done by 20
    assert rows[-1]["weight_norm"] < rows[0]["weight_norm"]


def test_a_tiny_run_groks_and_stops_after_gen(tmp_path):
    cfg = tiny_config(p=23, frac=0.6, d_model=32, n_heads=4, d_head=8, d_mlp=64, lr=1e-2, steps=3000, stop_after_gen=20)
    summary = train(cfg, tmp_path / "r", progress=False)
    assert summary["S_gen"] is not None and summary["stopped_early"]
    assert summary["steps"] == summary["S_gen"] + 20
    assert 5 * summary["S_mem"] <= summary["S_gen"]  # memorised first, generalised much later
    assert summary["checkpoints_in_transition"] >= 5


def test_minibatch_sgd_and_adam_run(tmp_path):
    for i, flat in enumerate([dict(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=16),
                              dict(optimizer="adam", batch_size=8, dropout=0.1, float64_loss=False)]):
        summary = train(tiny_config(steps=20, **flat), tmp_path / f"r{i}", progress=False)
        assert summary["steps"] == 20
