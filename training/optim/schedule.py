"""Schedules: linear warmup, and new weight decay and/or learning rate once training accuracy first reaches 100%.

The switch happens at an evaluation (every `eval_every` steps): if the evaluation of step s finds 100% training
accuracy, updates s, s+1, ... use `wd_after_memorisation` / `lr_after_memorisation`. The metrics row of step s still
shows the old values (a row's lr and wd are those of the update that led to it). On resume the switch step is
re-derived from metrics.jsonl (and kept in the resume state), so a resumed run switches exactly where an
uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from training.config import RunConfig


def lr_at(step: int, cfg: RunConfig) -> float:
    """Linear warmup: update number `step` (0-based) uses lr * min(1, (step + 1) / warmup_steps)."""
    w = cfg.optim.warmup_steps
    return cfg.optim.lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)


class MemorisationSwitch:
    def __init__(self, cfg: RunConfig, metrics: list[dict[str, Any]], base_lr: Callable[[int], float]):
        o = cfg.optim
        self.wd_after = o.wd_after_memorisation if o.wd_after_memorisation >= 0 else None
        self.lr_after = o.lr_after_memorisation if o.lr_after_memorisation > 0 else None
        self.on = self.wd_after is not None or self.lr_after is not None
        self.base_wd, self.base_lr = o.wd, base_lr
        self.step: int | None = None
        if self.on:
            self.step = next((r["step"] for r in metrics if r.get("train_acc") is not None and r["train_acc"] >= 1.0),
                             None)

    def switched(self, update: int) -> bool:
        """Whether update number `update` (0-based: it takes step `update` to `update + 1`) uses the new values."""
        return self.step is not None and update >= self.step

    def lr(self, update: int) -> float:
        return self.lr_after if self.lr_after is not None and self.switched(update) else self.base_lr(update)

    def wd(self, update: int) -> float:
        return self.wd_after if self.wd_after is not None and self.switched(update) else self.base_wd

    def observe(self, step: int, row: dict[str, Any]) -> None:
        if self.on and self.step is None and row.get("train_acc") is not None and row["train_acc"] >= 1.0:
            self.step = step

    def summary(self) -> dict[str, Any]:
        if not self.on:
            return {}
        return {"switch_step": self.step, "wd_after_memorisation": self.wd_after,
                "lr_after_memorisation": self.lr_after}
