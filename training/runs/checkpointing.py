"""Which steps get a checkpoint: dense across the transition, sparse elsewhere, within a budget.

A log-spaced floor (step 0 and the last step included) is always saved, and with `ckpt_every` N every N-th step
too (regular checkpoints, outside the budget). On top of them, an evaluated step is saved when, since the last checkpoint, test accuracy or train accuracy moved by `ckpt_acc_delta` or log test loss by
`ckpt_loss_delta`, as long as the budget (count and MiB) still leaves room for the floor steps to come.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from training.config import CheckpointConfig


def floor_steps(total: int, eval_every: int, n: int) -> list[int]:
    """~n log-spaced steps in [0, total], snapped to the evaluation grid; 0 and total always in."""
    raw = np.unique(np.round(np.logspace(0, math.log10(max(total, 1)), n)).astype(int))
    snapped = {int(round(s / eval_every) * eval_every) for s in raw}
    return sorted({0, total} | {s for s in snapped if 0 < s < total})


class CheckpointPolicy:
    def __init__(self, cfg: CheckpointConfig, total_steps: int, eval_every: int):
        self.cfg = cfg
        self.floor = floor_steps(total_steps, eval_every, cfg.ckpt_floor)
        self._floor_set = set(self.floor)
        self.count = 0
        self.bytes = 0
        self.last: dict[str, float] | None = None

    def budget(self) -> int:
        """Checkpoints allowed in all: the count budget, or the disk budget once a checkpoint's size is known."""
        if self.count == 0:
            return self.cfg.ckpt_max
        per = self.bytes / self.count
        return min(self.cfg.ckpt_max, int(self.cfg.ckpt_max_mb * 2**20 / per))

    def want(self, step: int, m: dict[str, Any]) -> bool:
        if step in self._floor_set or (self.cfg.ckpt_every and step % self.cfg.ckpt_every == 0):
            return True
        floor_left = sum(1 for s in self.floor if s > step)
        if self.count + floor_left + 1 > self.budget():
            return False
        last = self.last
        if last is None:
            return True
        moved_acc = max(abs((m["test_acc"] or 0.0) - last["test_acc"]),
                        abs((m["train_acc"] or 0.0) - last["train_acc"]))
        moved_loss = abs(math.log(max(m["test_loss"], 1e-30)) - math.log(max(last["test_loss"], 1e-30)))
        return moved_acc >= self.cfg.ckpt_acc_delta or moved_loss >= self.cfg.ckpt_loss_delta

    def saved(self, m: dict[str, Any], nbytes: int) -> None:
        self.count += 1
        self.bytes += nbytes
        self.last = {k: float(m[k] or 0.0) for k in ("test_acc", "train_acc", "test_loss")}  # acc None: regression

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "bytes": self.bytes, "last": self.last}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.count, self.bytes, self.last = d["count"], d["bytes"], d["last"]
