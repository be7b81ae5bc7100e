"""(n, k)-sparse parity."""

from __future__ import annotations

import numpy as np
import torch

from training.config import TaskConfig
from training.tasks.data import TaskData


# --- (n, k)-sparse parity ------------------------------------------------------------------------------------


def parity(cfg: TaskConfig) -> TaskData:
    """(n, k)-sparse parity (Barak et al. 2022; Merrill et al. 2023): x uniform in {-1, +1}^n, y = x_0 * ... * x_{k-1}.

    n_train + n_test samples (default 1000 + 1000) drawn from `split_seed` (the first n_train train); labels in {0, 1} (1 for y = +1),
    one output and the hinge loss. `label_noise` flips that fraction of the training labels, drawn from a stream
    of its own and nested (the labels flipped at 0.1 are among those flipped at 0.2), so that runs differing only
    in label_noise see the same inputs. The relevant bits are the first k: the network treats inputs symmetrically.
    """
    n, k, n_train, n_test = cfg.n_bits, cfg.k, cfg.n_train or 1000, cfg.n_test or 1000
    rng = np.random.default_rng(cfg.split_seed)
    x = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n_train + n_test, n))
    labels = (x[:, :k].prod(1) > 0).astype(np.int64)
    order = np.random.default_rng([cfg.split_seed, 1]).permutation(n_train)
    flipped = np.sort(order[: int(round(cfg.label_noise * n_train))])
    labels[flipped] ^= 1
    return TaskData("parity", torch.from_numpy(x), torch.from_numpy(labels), torch.arange(n_train),
                    torch.arange(n_train, n_train + n_test), d_vocab=0, d_vocab_out=1, n_ctx=1, d_in=n, loss="hinge",
                    structure={"kind": "parity", "op": f"({n},{k})-parity", "n": n, "k": k, "bits": list(range(k)),
                               "label_noise": cfg.label_noise, "flipped": flipped.tolist()})
