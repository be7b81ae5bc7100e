"""(n, k)-sparse parity, its presets, and the weight decay / lr switch at memorisation (with exact resume)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.config import CheckpointConfig, ConfigError, ModelConfig, OptimConfig, RunConfig, TaskConfig, TrainConfig
from training.loop import train
from training.models.build import build_model
from training.presets import PRESETS
from training.runs.reader import Run
from training.tasks.build import build_task


def tiny_parity(**flat) -> RunConfig:
    """(30, 2)-parity on 150 samples: memorises in ~100 steps, generalises ~500 steps later (~1 s on one thread)."""
    cfg = RunConfig(
        task=TaskConfig(task="parity", n_bits=30, k=2, n_train=150, n_test=200, split_seed=0),
        model=ModelConfig(model="mlp", n_layers=1, d_mlp=64),
        optim=OptimConfig(optimizer="sgd", lr=0.2, wd=0.01, warmup_steps=0, batch_size=16, float64_loss=False),
        train=TrainConfig(steps=3000, eval_every=10, device="cpu", stop_after_gen=0),
        ckpt=CheckpointConfig(ckpt_floor=6, ckpt_max=12),
    )
    return cfg.replace(**flat) if flat else cfg


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train ~40x faster on one thread than on two contended ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_parity_labels_are_the_product_of_the_first_k_bits():
    data = build_task(TaskConfig(task="parity", n_bits=20, k=3, n_train=50, n_test=70, split_seed=4))
    x = data.inputs.numpy()
    assert data.inputs.dtype == torch.float32 and set(np.unique(x)) == {-1.0, 1.0}
    assert x.shape == (120, 20) and data.d_vocab == 0 and data.d_in == 20 and data.d_vocab_out == 1
    assert data.loss == "hinge" and data.structure["bits"] == [0, 1, 2]
    assert np.array_equal(data.labels.numpy(), (x[:, :3].prod(1) > 0).astype(int))
    assert data.train_idx.tolist() == list(range(50)) and data.test_idx.tolist() == list(range(50, 120))
    again = build_task(TaskConfig(task="parity", n_bits=20, k=3, n_train=50, n_test=70, split_seed=4))
    other = build_task(TaskConfig(task="parity", n_bits=20, k=3, n_train=50, n_test=70, split_seed=5))
    assert torch.equal(data.inputs, again.inputs) and not torch.equal(data.inputs, other.inputs)


def test_label_noise_flips_that_fraction_of_training_labels_only_nested_and_on_the_same_inputs():
    base = dict(task="parity", n_bits=16, k=2, n_train=200, n_test=100)
    clean = build_task(TaskConfig(**base))
    flipped = {}
    for p in (0.1, 0.25):
        noisy = build_task(TaskConfig(**base, label_noise=p))
        assert torch.equal(noisy.inputs, clean.inputs)
        diff = (noisy.labels != clean.labels).nonzero().flatten()
        assert len(diff) == round(p * 200) and diff.max() < 200  # training labels only
        assert sorted(noisy.structure["flipped"]) == diff.tolist()
        flipped[p] = set(diff.tolist())
    assert flipped[0.1] <= flipped[0.25]


@pytest.mark.parametrize("bad, words", [(dict(k=0), "--k"), (dict(k=13), "--k"), (dict(n_train=-1), "--n-train"),
                                        (dict(label_noise=0.7), "--label-noise")])
def test_bad_parity_configs(bad, words):
    with pytest.raises(ConfigError, match=words):
        build_task(TaskConfig(**{**dict(task="parity", n_bits=12, k=2), **bad}))


@pytest.mark.parametrize("name, n, k, n_train, width", [("parity-blog", 50, 2, 300, 500),
                                                        ("merrill2023", 40, 3, 1000, 1000)])
def test_parity_presets(name, n, k, n_train, width):
    cfg = PRESETS[name]
    t, o = cfg.task, cfg.optim
    assert (t.task, t.n_bits, t.k, t.n_train, cfg.model.d_mlp) == ("parity", n, k, n_train, width)
    assert (o.optimizer, o.lr, o.wd) == ("sgd", 0.1, 0.01) and cfg.model.model == "mlp"
    data = build_task(t)
    assert data.loss == "hinge" and len(data.train_idx) == n_train
    model = build_model(cfg.model, data)
    assert model.layers[0].W_in.shape == (n, width) and model(data.inputs[:3]).shape == (3, 1)


def test_tiny_parity_run_memorises_then_generalises(tmp_path):
    summary = train(tiny_parity(), tmp_path / "r", progress=False)
    rows = Run(tmp_path / "r").metrics
    assert summary["S_mem"] is not None and summary["S_gen"] is not None
    assert summary["S_gen"] >= 2 * summary["S_mem"]  # a delay between memorising and generalising
    at_mem = next(r for r in rows if r["step"] == summary["S_mem"])
    assert at_mem["test_acc"] < 0.9  # memorised without generalising
    assert rows[-1]["test_acc"] >= 0.99
    assert "switch_step" not in summary and {r["wd"] for r in rows} == {0.01}


SWITCHED = dict(wd_after_memorisation=0.1, lr_after_memorisation=0.1, steps=500, stop_after_gen=-1)


@pytest.fixture(scope="module")
def switched_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("switch") / "ref"
    return path, train(tiny_parity(**SWITCHED), path, progress=False)


def test_wd_and_lr_switch_when_train_accuracy_first_reaches_100(switched_run):
    path, summary = switched_run
    rows = Run(path).metrics
    s = next(r["step"] for r in rows if r["train_acc"] == 1.0)
    assert summary["switch_step"] == s and summary["wd_after_memorisation"] == 0.1
    assert summary["lr_after_memorisation"] == 0.1
    assert all(r["wd"] == 0.01 and r["lr"] == 0.2 for r in rows if r["step"] <= s)  # a row shows its last update's
    assert all(r["wd"] == 0.1 and r["lr"] == 0.1 for r in rows if r["step"] > s)


@pytest.mark.parametrize("cut", [40, 300], ids=["before-switch", "after-switch"])
def test_resume_across_the_switch_is_exact(tmp_path, switched_run, cut):
    ref, ref_summary = switched_run
    cfg = tiny_parity(**SWITCHED)
    train(cfg.replace(steps=cut), tmp_path / "cut", progress=False)  # stops at `cut` with its resume state
    summary = train(cfg, tmp_path / "cut", resume=True, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]
    assert strip(Run(tmp_path / "cut").metrics) == strip(Run(ref).metrics)
    assert summary["switch_step"] == ref_summary["switch_step"]
    assert (ref_summary["switch_step"] < cut) == (cut == 300)
    a, b = load_file(ref / "ckpt/step_500.safetensors"), load_file(tmp_path / "cut/ckpt/step_500.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_switch_values():
    from training.config import validate

    with pytest.raises(ConfigError, match="wd-after-memorisation"):
        validate(tiny_parity(wd_after_memorisation=-0.5))
    with pytest.raises(ConfigError, match="lr-after-memorisation"):
        validate(tiny_parity(lr_after_memorisation=0.0))
