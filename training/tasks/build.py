"""build_task: a task config's full table, from its spec's builder once its constraints hold."""

from __future__ import annotations

from training.config import TaskConfig
from training.registry import task_spec
from training.rules import check_fields
from training.tasks.data import TaskData


def build_task(cfg: TaskConfig) -> TaskData:
    """The task's full table, built by its spec's builder once the spec's constraints hold (training.registry)."""
    spec = task_spec(cfg.task)
    check_fields({name: getattr(cfg, name) for name in spec.fields})  # training.run has checked them; others may not
    spec.shape(cfg)  # the task's own constraints, before anything is built
    return spec.build(cfg)
