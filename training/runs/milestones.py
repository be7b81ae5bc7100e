"""S_mem and S_gen: the one definition of when a run has memorised and when it has generalised.

S_mem is the first evaluated step with training accuracy >= THRESHOLD, S_gen the first with test accuracy
>= THRESHOLD (Nanda et al. 2023 read both off at 99%). The loop's early stop, its summary and the phase probes
all read them from here, so changing the threshold is one line.
"""

from __future__ import annotations

from typing import Any, Sequence

THRESHOLD = 0.99


def first_at_least(steps: Sequence[int], values: Sequence[float | None], threshold: float = THRESHOLD) -> int | None:
    """The first step whose value is >= threshold (None values, as for regression tasks, never count)."""
    return next((s for s, v in zip(steps, values) if v is not None and v >= threshold), None)


def first_step(metrics: list[dict[str, Any]], key: str, threshold: float = THRESHOLD) -> int | None:
    """The first metrics row (of metrics.jsonl) whose `key` is >= threshold."""
    return first_at_least([r["step"] for r in metrics], [r.get(key) for r in metrics], threshold)


def s_mem(metrics: list[dict[str, Any]]) -> int | None:
    return first_step(metrics, "train_acc")


def s_gen(metrics: list[dict[str, Any]]) -> int | None:
    return first_step(metrics, "test_acc")


def generalised(row: dict[str, Any]) -> bool:
    """Whether one evaluation row reaches S_gen's threshold."""
    return row.get("test_acc") is not None and row["test_acc"] >= THRESHOLD
