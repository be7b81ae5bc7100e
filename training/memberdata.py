"""Each member's examples as padded stacks [K, n, ...], and the per-member loss weights over them.

Padding rows carry weight 0. The exact step path (`training.trainer`) pads every member to a multiple of ROWS
rows, so that a member's block of any activation starts 64-byte aligned and holds whole vector steps of the
elementwise kernels, whatever K and the member's place (its bits then do not depend on its ensemble).
"""

from __future__ import annotations

import torch

from training.tasks.data import TaskData

# the exact path's row multiple: every member's block of an activation then starts 64-byte aligned, and holds a whole
# number of elementwise kernels' vector steps (2 x 16 float32), so none of its elements falls in a kernel's scalar tail
ROWS = 32


def padded(tensors: list[torch.Tensor], multiple: int = 1) -> torch.Tensor:
    """Stack tensors of different lengths along a new member dimension, zero-padded to the longest (rounded up to
    `multiple`)."""
    n = -(-max(len(t) for t in tensors) // multiple) * multiple
    if all(len(t) == len(tensors[0]) for t in tensors):  # minibatches of one size: one stack, one block of zeros
        out = torch.stack(tensors)
        pad = n - out.shape[1]
        return torch.cat([out, out.new_zeros((len(tensors), pad, *out.shape[2:]))], 1) if pad else out
    out = tensors[0].new_zeros((len(tensors), n, *tensors[0].shape[1:]))
    for k, t in enumerate(tensors):
        out[k, : len(t)] = t
    return out


def member_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """t [K, n, ...] at rows [K, m] of each member's own: [K, m, ...] (t[arange(K)[:, None], rows]), as one
    index_select of whole rows of the flattened stack, the fastest copy torch has for it."""
    K, n = t.shape[:2]
    flat = rows if K == 1 else rows + torch.arange(0, K * n, n, device=rows.device).unsqueeze(1)
    return t.flatten(0, 1).index_select(0, flat.flatten()).view(*rows.shape, *t.shape[2:])


class MemberData:
    """Every member's train and test examples as padded stacks [K, n_max, ...] with their lengths."""

    def __init__(self, datas: list[TaskData], device: torch.device, multiple: int = 1):
        self.n_train = [len(d.train_idx) for d in datas]
        self.n_test = [len(d.test_idx) for d in datas]
        self.x_tr = padded([d.inputs[d.train_idx] for d in datas], multiple).to(device)
        self.y_tr = padded([d.labels[d.train_idx] for d in datas], multiple).to(device)
        self.x_te = padded([d.inputs[d.test_idx] for d in datas], multiple).to(device)
        self.y_te = padded([d.labels[d.test_idx] for d in datas], multiple).to(device)

    def keep(self, idx: torch.Tensor) -> None:
        self.n_train = [self.n_train[i] for i in idx.tolist()]
        self.n_test = [self.n_test[i] for i in idx.tolist()]
        for name in ("x_tr", "y_tr", "x_te", "y_te"):
            t = getattr(self, name)
            setattr(self, name, t[idx.to(t.device)])


def loss_weights(lengths: list[int], n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[K, n]: 1/n_k on member k's first n_k examples, 0 on its padding."""
    w = torch.zeros(len(lengths), n, dtype=torch.float64)
    for k, m in enumerate(lengths):
        w[k, :m] = 1.0 / m
    return w.to(dtype=dtype, device=device)
