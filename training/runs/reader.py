"""Reading a run directory: `Run`."""

from __future__ import annotations

from functools import cached_property
import json
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from training.constants import ANALYSES_DIR, CKPT_DIR, CONFIG, METRICS, SPLIT, SUMMARY
from training.errors import RunDirError  # noqa: F401  (re-exported)
from training.runs.format import checkpoint_steps, ckpt_name, explicit_split, is_explicit_split, is_run_dir, load_tensors, metadata, read_config, read_metrics, run_finished
from training.runs.resume import check_split
from training.safeio import output_dir, read_json


class Run:
    """Read side of a run directory, for analyses and notebooks. Anything wrong with a file raises RunDirError
    naming it.

    >>> run = Run("checkpoints/default")
    >>> run.config.task.p, run.steps[-1], run.metrics[-1]["test_acc"]
    >>> model = run.model(run.steps[-1])        # our HookedRootModule, eval mode
    >>> bridge = run.bridge(run.steps[-1])      # the same weights as a TransformerLens TransformerBridge
    >>> data = run.data                         # TaskData: the full input table, labels, train/test split
    """

    def __init__(self, path: str | os.PathLike):
        self.dir = Path(path)
        if not self.dir.is_dir():
            raise RunDirError(f"{self.dir}: no such run directory")
        if not is_run_dir(self.dir):
            raise RunDirError(f"{self.dir}: not a run directory (no {CONFIG})")
        self.config, extras = read_config(self.dir)
        self.versions = extras.get("versions", {})
        self.preset = extras.get("preset", "")  # written by the loop beside the config sections
        self.run_id: str | None = extras.get("run_id")  # None for a run written before run ids

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, task={self.config.task.task}, {len(self.steps)} checkpoints)"

    @property
    def steps(self) -> list[int]:
        return checkpoint_steps(self.dir)

    @property
    def checkpoint_steps(self) -> list[int]:
        """The steps with a checkpoint, in order (`run.steps`): per-checkpoint arrays line up with it."""
        return self.steps

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir / METRICS)

    @property
    def summary(self) -> dict[str, Any]:
        path = self.dir / SUMMARY
        if not path.exists():
            return {}
        summary = read_json(path, "summary")
        if not isinstance(summary, dict):
            raise RunDirError(f"{path}: not a summary (expected a JSON object)")
        return summary

    @property
    def finished(self) -> bool:
        return run_finished(self.dir)

    @cached_property
    def data(self):
        """The task's TaskData, rebuilt from the config and checked against split.json."""
        from training.tasks.build import build_task

        data = build_task(self.config.task)
        if is_explicit_split(self.dir / SPLIT):  # an imported run (python -m training.import_tl)
            return explicit_split(self.dir / SPLIT, data)
        if (self.dir / SPLIT).exists():
            check_split(self.dir / SPLIT, data)
        return data

    def checkpoint_path(self, step: int) -> Path:
        return self.dir / CKPT_DIR / ckpt_name(step)

    def _existing_checkpoint(self, step: int) -> Path:
        path = self.checkpoint_path(step)
        if not path.exists():
            raise RunDirError(f"{path}: no checkpoint at step {step} (have {len(self.steps)}: "
                              f"{', '.join(map(str, self.steps[-5:]))}{' ...' if len(self.steps) > 5 else ''})")
        return path

    def weights(self, step: int) -> dict[str, torch.Tensor]:
        path = self._existing_checkpoint(step)
        weights = load_tensors(path)
        bad = next((k for k, v in weights.items() if not v.is_floating_point()), None)
        if bad is not None:  # the loop saves float weights only; integers would be converted without a word
            raise RunDirError(f"{path}: '{bad}' holds {str(weights[bad].dtype).removeprefix('torch.')}, not the "
                              "floating-point weights a checkpoint holds")
        return weights

    def checkpoint_metrics(self, step: int) -> dict[str, Any]:
        path = self._existing_checkpoint(step)
        try:
            found = json.loads(metadata(path).get("metrics", "{}"))
        except (TypeError, ValueError):
            found = None
        if not isinstance(found, dict):
            raise RunDirError(f"{path}: unreadable metrics in its metadata")
        return found

    def iter_weights(self, steps: list[int] | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor] | RunDirError]]:
        """(step, weights) for each checkpoint; a corrupt one yields (step, RunDirError) instead of raising."""
        for s in self.steps if steps is None else steps:
            try:
                yield s, self.weights(s)
            except RunDirError as e:
                yield s, e

    def nearest_step(self, step: int) -> int:
        """The checkpoint step closest to `step` (the earlier one on a tie); checkpoints are irregular."""
        steps = self.steps
        if not steps:
            raise RunDirError(f"{self.dir}: no checkpoints")
        return min(steps, key=lambda s: (abs(s - step), s))

    def model(self, step: int, device: str | torch.device = "cpu", nearest: bool = False):
        """Our model at checkpoint `step` (eval mode); `nearest=True` takes the closest checkpoint instead."""
        from training.models.build import build_model

        step = self.nearest_step(step) if nearest else step
        model = build_model(self.config.model, self.data, seed=self.config.train.seed)
        try:
            model.load_state_dict(self.weights(step))
        except RuntimeError as e:  # missing, unexpected or wrong-shaped tensors
            first = str(e).strip().splitlines()[-1].strip()
            raise RunDirError(f"{self.checkpoint_path(step)}: does not fit this run's model ({first})") from None
        return model.to(device).eval()

    def bridge(self, step: int, nearest: bool = False):
        from training.models.bridge import to_bridge

        return to_bridge(self.model(step, nearest=nearest))

    def iter_models(self, steps: list[int] | None = None) -> Iterator[tuple[int, Any]]:
        """(step, model) for each checkpoint (all by default), one model object reloaded in place: copy a model
        you keep past the next iteration."""
        model = None
        for step in self.steps if steps is None else steps:
            if model is None:
                model = self.model(step)
            else:
                model.load_state_dict(self.weights(step))
            yield step, model

    def stacked_weights(self, steps: list[int] | None = None) -> dict[str, torch.Tensor]:
        """{name: [T, ...]} every weight stacked over the checkpoints `steps` (all by default), in step order."""
        steps = self.steps if steps is None else steps
        states = [self.weights(s) for s in steps]
        return {k: torch.stack([w[k] for w in states]) for k in states[0]} if states else {}

    @property
    def analyses_dir(self) -> Path:
        return output_dir(self.dir / ANALYSES_DIR)
