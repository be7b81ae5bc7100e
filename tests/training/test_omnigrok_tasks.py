"""The Omnigrok tasks (teacher-student regression, digits, MNIST from IDX files) and their presets."""

import gzip

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from training.config import ConfigError, TaskConfig
from training.loop import train
from training.models.build import build_model
from training.presets import get_preset
from training.runs.reader import Run
from training.tasks.build import build_task
from training.tasks.vector import read_idx, teacher_forward, teacher_net


def test_teacher_labels_are_the_teachers_outputs_and_seeded():
    data = build_task(TaskConfig(task="teacher", n_train=30, n_test=20, split_seed=4))
    assert data.inputs.shape == (50, 5) and data.labels.shape == (50, 5) and data.inputs.dtype == torch.float32
    assert data.d_vocab == 0 and data.d_in == 5 and data.d_vocab_out == 5 and data.loss == "mse"
    assert data.train_idx.tolist() == list(range(30)) and data.test_idx.tolist() == list(range(30, 50))
    layers = teacher_net(4)
    assert [tuple(W.shape) for W, _ in layers] == [(5, 100), (100, 100), (100, 5)]
    assert torch.allclose(teacher_forward(layers, data.inputs), data.labels)
    again = build_task(TaskConfig(task="teacher", n_train=30, n_test=20, split_seed=4))
    other = build_task(TaskConfig(task="teacher", n_train=30, n_test=20, split_seed=5))
    assert torch.equal(again.labels, data.labels) and not torch.equal(other.labels, data.labels)
    default = build_task(TaskConfig(task="teacher"))
    assert (len(default.train_idx), len(default.test_idx)) == (100, 100)  # Omnigrok's 100 / 100


def test_digits_is_offline_standardised_and_split():
    data = build_task(TaskConfig(task="digits", split_seed=0))
    assert data.inputs.shape == (1797, 64) and data.d_vocab_out == 10 and data.loss == "mse"
    assert abs(data.inputs.mean().item()) < 1e-4 and abs(data.inputs.std().item() - 1) < 1e-3
    assert (len(data.train_idx), len(data.test_idx)) == (1000, 797)
    assert not set(data.train_idx.tolist()) & set(data.test_idx.tolist())
    assert set(data.labels.tolist()) == set(range(10))
    small = build_task(TaskConfig(task="digits", n_train=100, n_test=50, split_seed=1))
    assert (len(small.train_idx), len(small.test_idx)) == (100, 50)
    with pytest.raises(ConfigError, match="digits has 1797"):
        build_task(TaskConfig(task="digits", n_train=1500, n_test=500))


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def fake_mnist(root, n_train=12, n_test=7, gz=False, size=4):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte", imgs, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels, gz)
        arrays[split] = (imgs, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, gz):
    arrays = fake_mnist(tmp_path / "mnist", gz=gz)
    data = build_task(TaskConfig(task="mnist", data_path=str(tmp_path / "mnist"), n_train=10, n_test=5))
    assert data.inputs.shape == (15, 16) and data.d_in == 16 and data.d_vocab_out == 10 and data.loss == "mse"
    imgs, labels = arrays["train"]
    expected = (imgs[:10].reshape(10, -1) / 255.0 - 0.1307) / 0.3081
    assert np.allclose(data.inputs[:10].numpy(), expected, atol=1e-6)
    assert data.labels[:10].tolist() == labels[:10].tolist()
    assert data.labels[10:].tolist() == arrays["t10k"][1][:5].tolist()
    assert data.train_idx.tolist() == list(range(10)) and data.test_idx.tolist() == list(range(10, 15))
    full = build_task(TaskConfig(task="mnist", data_path=str(tmp_path / "mnist")))
    assert (len(full.train_idx), len(full.test_idx)) == (12, 7)  # default: up to 1000 train, the whole test set


def test_read_idx_roundtrips_other_types(tmp_path):
    a = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)


def test_mnist_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="needs --data-path"):
        build_task(TaskConfig(task="mnist"))
    with pytest.raises(ConfigError, match="not found: train-images-idx3-ubyte"):
        build_task(TaskConfig(task="mnist", data_path=str(tmp_path)))
    fake_mnist(tmp_path / "m")
    bad = tmp_path / "m" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte: IDX header says"):
        build_task(TaskConfig(task="mnist", data_path=str(tmp_path / "m")))
    fake_mnist(tmp_path / "ok")
    with pytest.raises(ConfigError, match="the files hold 12 training"):
        build_task(TaskConfig(task="mnist", data_path=str(tmp_path / "ok"), n_train=50))
    (tmp_path / "ok" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x07\x01junk")
    with pytest.raises(ConfigError, match="train-labels-idx1-ubyte: not an IDX file"):
        build_task(TaskConfig(task="mnist", data_path=str(tmp_path / "ok")))


def test_mnist_missing_files_are_one_line_exit_2(tmp_path):
    r = run_cli("--preset", "omnigrok-mnist", "--data-path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "MNIST IDX file(s) not found" in r.stderr
    assert not (tmp_path / "r").exists()


def test_presets_build_omnigroks_networks():
    cfg = get_preset("omnigrok-digits")
    model = build_model(cfg.model, build_task(cfg.task))
    # 64-200-200-10 ReLU MLP (Omnigrok's 784-200-200-10 on 8x8 images)
    assert sum(p.numel() for p in model.parameters()) == 64 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    assert cfg.model.init_scale == 8.0 and cfg.model.act_fn == "relu"
    t = get_preset("omnigrok-teacher")
    model = build_model(t.model, build_task(t.task))
    assert [tuple(layer.W_in.shape) for layer in model.layers] == [(5, 100), (100, 100)] and model.W_U.shape == (100, 5)
    fixed = get_preset("omnigrok-fixed-norm")
    assert fixed.optim.constrain_norm == 0.8 and fixed.optim.wd == 0.0 and fixed.task.p == 113


def test_regression_run_trains_and_reads_back(tmp_path):
    cfg = get_preset("omnigrok-teacher").replace(steps=40, eval_every=10, device="cpu", n_train=20, n_test=20,
                                                 d_mlp=16, ckpt_floor=3)
    summary = train(cfg, tmp_path / "r", progress=False)
    run = Run(tmp_path / "r")
    assert run.metrics[-1]["test_acc"] is None and summary["S_gen"] is None
    assert run.metrics[-1]["train_loss"] < run.metrics[0]["train_loss"]
    assert run.steps[-1] == 40 and (tmp_path / "r" / "curves.png").exists()
    assert torch.equal(run.data.labels, build_task(cfg.task).labels)
