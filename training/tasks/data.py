"""A built task: its whole input table, labels and a seeded train/test split (training.tasks.build, training.tasks.sequence
build them; the Trainer, the models and the probes read them)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from training.errors import ConfigError


@dataclass
class TaskData:
    """The whole task: `inputs[i] -> labels[i]`, with `train_idx`/`test_idx` into them.

    Attributes:
        name: task name.
        inputs: [N, n_ctx] long token ids, or [N, d_in] float for vector tasks.
        labels: [N] long class ids (or [N, d_vocab_out] float targets for regression tasks).
        train_idx, test_idx: long index tensors, disjoint, covering 0..N-1 or a subset.
        d_vocab: input vocabulary size (0 for vector inputs); d_vocab_out: number of classes / outputs.
        n_ctx: tokens per input; d_in: features per input for vector tasks.
        loss: "ce" (cross-entropy), "mse", "hinge", or "seq_ce" (sequence tasks: cross-entropy at the targets).
        structure: what analyses need to know, e.g. {"kind": "modular", "op": "x+y", "p": 113, "operands": [...]}.
        sample: infinite-data sequence tasks: sample(batch_seed, step, batch_size) -> (inputs, labels), the
            training batch of that step (training.tasks.sequence); None for a fixed training set.

    Sequence tasks (training.tasks.sequence) have labels [N, n_ctx] with -100 where nothing is predicted.
    """

    name: str
    inputs: torch.Tensor
    labels: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    d_in: int = 0
    loss: str = "ce"
    structure: dict[str, Any] = field(default_factory=dict)
    sample: Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]] | None = None

    def split_dict(self) -> dict[str, Any]:
        """What split.json holds: the train indices (test = the rest) and a digest to check a rebuild."""
        train = self.train_idx.tolist()
        return {"n": len(self.inputs), "n_train": len(train), "n_test": len(self.test_idx),
                "sha256": split_digest(self.train_idx, self.test_idx), "train_idx": train}


def split_digest(train_idx: torch.Tensor, test_idx: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(train_idx.numpy().astype(np.int64).tobytes())
    h.update(test_idx.numpy().astype(np.int64).tobytes())
    return h.hexdigest()


def random_split(n: int, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded permutation; the first floor(frac * n) go to training (3830 of 12769 for p=113, frac=0.3)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(frac * n)
    if n_train == 0 or n_train == n:
        raise ConfigError(f"--frac {frac} leaves an empty train or test set ({n} examples)")
    return perm[:n_train].sort().values, perm[n_train:].sort().values
