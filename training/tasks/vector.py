"""Omnigrok's vector tasks: teacher-student regression, scikit-learn's digits and MNIST."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from training.config import ConfigError, TaskConfig
from training.tasks.data import TaskData
from training.tasks.specs import TEACHER_WIDTHS


# --- vector tasks (Omnigrok): teacher-student regression and image classification -----------------------------
#
# Each keeps its samples in one table: the training samples first, then the test samples, so train_idx is
# 0..n_train-1 and test_idx the rest. The sampled inputs and the teacher are drawn from `split_seed`.

def teacher_net(seed: int, widths: tuple[int, ...] = TEACHER_WIDTHS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A tanh MLP teacher at alpha 1: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as nn.Linear
    initialises them (Omnigrok's teacher is a freshly initialised nn.Linear stack). Returns [(W [in, out], b [out])]."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        bound = 1 / math.sqrt(a)
        W = (torch.rand(a, b, generator=gen) * 2 - 1) * bound
        bias = (torch.rand(b, generator=gen) * 2 - 1) * bound
        layers.append((W, bias))
    return layers


def teacher_forward(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    for i, (W, b) in enumerate(layers):
        x = x @ W + b
        if i < len(layers) - 1:
            x = torch.tanh(x)
    return x


def teacher(cfg: TaskConfig) -> TaskData:
    """Omnigrok's teacher-student regression: Gaussian inputs [N, 5] -> a fixed 5-100-100-5 tanh teacher's outputs
    [N, 5]; MSE loss (summed over the 5 outputs, averaged over samples). Defaults: 100 train + 100 test."""
    n_train, n_test = cfg.n_train or 100, cfg.n_test or 100
    layers = teacher_net(cfg.split_seed)
    gen = torch.Generator().manual_seed(cfg.split_seed + 1)
    x = torch.randn(n_train + n_test, TEACHER_WIDTHS[0], generator=gen)
    with torch.no_grad():
        y = teacher_forward(layers, x)
    return TaskData("teacher", x, y, torch.arange(n_train), torch.arange(n_train, n_train + n_test), d_vocab=0,
                    d_vocab_out=TEACHER_WIDTHS[-1], n_ctx=1, d_in=TEACHER_WIDTHS[0], loss="mse",
                    structure={"kind": "teacher_student", "widths": list(TEACHER_WIDTHS), "act_fn": "tanh",
                               "teacher_seed": cfg.split_seed})


def digits(cfg: TaskConfig) -> TaskData:
    """scikit-learn's 8x8 handwritten digits (1797 images, shipped with the package): 64 features scaled to [0, 1]
    and standardised like MNIST, 10 classes, MSE on one-hot targets. A seeded split: n_train (default 1000) for
    training, n_test of the rest (default: all of them) for testing."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.from_numpy(raw.data.astype(np.float32) / 16.0)
    x = (x - x.mean()) / x.std()
    n = len(x)
    n_train = cfg.n_train or 1000
    n_test = cfg.n_test or n - n_train  # both checked against the image count by the task's shape
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
    train, test = perm[:n_train].sort().values, perm[n_train:n_train + n_test].sort().values
    return TaskData("digits", x, torch.from_numpy(raw.target).long(), train, test, d_vocab=0, d_vocab_out=10,
                    n_ctx=1, d_in=64, loss="mse", structure={"kind": "images", "dataset": "digits", "shape": [8, 8]})


# IDX (LeCun's MNIST format): two zero bytes, a type code, the number of dimensions, big-endian uint32 sizes, data.
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array; ConfigError naming the file if it is not one."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ConfigError(f"{path}: not an IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    body = raw[4 + 4 * ndim:]
    if len(body) != dtype.itemsize * int(np.prod(shape)):
        raise ConfigError(f"{path}: IDX header says {shape} but the file holds {len(body)} bytes of data")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def find_mnist_file(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw"):  # also torchvision's download layout
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def mnist(cfg: TaskConfig) -> TaskData:
    """MNIST from the four IDX files in `--data-path`: the first n_train training images (default 1000, as
    Omnigrok) and the first n_test test images (default all 10000), 784 features scaled to [0, 1] and normalised
    with MNIST's mean/std (0.1307, 0.3081); MSE on one-hot targets."""
    root = Path(cfg.data_path).expanduser()
    paths = {k: find_mnist_file(root, stem) for k, stem in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, v in paths.items() if v is None]
    if missing:
        raise ConfigError(f"--data-path {root}: MNIST IDX file(s) not found: {', '.join(missing)} (optionally .gz)")
    arrays = {k: read_idx(v) for k, v in paths.items()}
    for split in ("train", "test"):
        imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
            raise ConfigError(f"{paths[f'{split}_images']}: {imgs.shape} images do not match {labels.shape} labels")
    n_train = cfg.n_train or min(1000, len(arrays["train_images"]))
    n_test = cfg.n_test or len(arrays["test_images"])
    if n_train > len(arrays["train_images"]) or n_test > len(arrays["test_images"]):
        raise ConfigError(f"--n-train {n_train} / --n-test {n_test}: the files hold {len(arrays['train_images'])} "
                          f"training and {len(arrays['test_images'])} test images")
    imgs = np.concatenate([arrays["train_images"][:n_train], arrays["test_images"][:n_test]])
    x = torch.from_numpy(imgs.reshape(len(imgs), -1).astype(np.float32) / 255.0)
    x = (x - 0.1307) / 0.3081
    labels = np.concatenate([arrays["train_labels"][:n_train], arrays["test_labels"][:n_test]])
    y = torch.from_numpy(labels.astype(np.int64))
    n_classes = max(10, int(y.max()) + 1)
    return TaskData("mnist", x, y, torch.arange(n_train), torch.arange(n_train, n_train + n_test), d_vocab=0,
                    d_vocab_out=n_classes, n_ctx=1, d_in=x.shape[1], loss="mse",
                    structure={"kind": "images", "dataset": "mnist", "shape": list(imgs.shape[1:])})
