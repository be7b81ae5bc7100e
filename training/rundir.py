"""The run directory: the one owner of its format, writer and reader side by side.

```
<run>/config.json            resolved RunConfig + package versions
<run>/split.json             train indices (test = the rest) + sha256 of the split
<run>/metrics.jsonl          one JSON object per evaluation
<run>/ckpt/step_<N>.safetensors  weights; step + headline metrics in the metadata
<run>/state/state.safetensors    what --resume needs: weights, optimiser, RNG; counters in the metadata
<run>/summary.json           S_mem, S_gen, final metrics, timings
<run>/curves.png             loss and accuracy against step
<run>/analyses/              written by the analyses
```

Every file is written to a temporary name and renamed, so a reader never sees half a file; metrics.jsonl is
append-only and a torn last line (a kill mid-write) is ignored. Nothing here unpickles anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save

from training.config import RunConfig

CONFIG, SPLIT, METRICS, SUMMARY, CURVES = "config.json", "split.json", "metrics.jsonl", "summary.json", "curves.png"
CKPT_DIR, STATE_DIR, ANALYSES_DIR, LOCK = "ckpt", "state", "analyses", ".lock"
STATE_FILE = "state.safetensors"
CKPT_RE = re.compile(r"^step_(\d+)\.safetensors$")


from training.errors import RunDirError  # noqa: F401,E402  (re-exported)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def ckpt_name(step: int) -> str:
    return f"step_{step}.safetensors"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a killed writer
    return rows


class RunLock:
    """An exclusive flock on <run>/.lock: one writer per run directory. The kernel drops it if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            other = self.path.read_text().strip() or "?"
            raise RunDirError(f"{self.path.parent} is being written by another process (pid {other})") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class RunWriter:
    """Writes one run directory; the training loop is its only user."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        (self.dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
        (self.dir / STATE_DIR).mkdir(exist_ok=True)

    def write_config(self, cfg: RunConfig, extra: dict[str, Any]) -> None:
        atomic_write_json(self.dir / CONFIG, {**cfg.to_dict(), **extra})

    def write_split(self, split: dict[str, Any]) -> None:
        atomic_write_json(self.dir / SPLIT, split)

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.dir / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """Forget everything past `step` (resume): metrics rows and checkpoints written after the saved state."""
        rows = [r for r in read_metrics(self.dir / METRICS) if r["step"] <= step]
        atomic_write_bytes(self.dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode())
        for s in checkpoint_steps(self.dir):
            if s > step:
                (self.dir / CKPT_DIR / ckpt_name(s)).unlink()

    def save_checkpoint(self, step: int, weights: dict[str, torch.Tensor], metrics: dict[str, Any]) -> int:
        meta = {"step": str(step), "metrics": json.dumps(metrics)}
        data = save({k: v.detach().cpu().contiguous() for k, v in weights.items()}, metadata=meta)
        atomic_write_bytes(self.dir / CKPT_DIR / ckpt_name(step), data)
        return len(data)

    def save_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={"state": json.dumps(meta)})
        atomic_write_bytes(self.dir / STATE_DIR / STATE_FILE, data)

    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        path = self.dir / STATE_DIR / STATE_FILE
        if not path.exists():
            return None
        raw = path.read_bytes()
        return st_load(raw), json.loads(_metadata(raw, path)["state"])

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.dir / SUMMARY, summary)


def _metadata(raw: bytes, path: Path) -> dict[str, str]:
    """The safetensors header's __metadata__ (the header is 8 bytes of length, then JSON)."""
    try:
        n = int.from_bytes(raw[:8], "little")
        return json.loads(raw[8 : 8 + n]).get("__metadata__", {}) or {}
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not a safetensors file ({e})") from None


def checkpoint_steps(run_dir: Path) -> list[int]:
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := CKPT_RE.match(p.name)))


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def run_finished(path: Path) -> bool:
    """Finished = the training loop wrote its summary after reaching the configured steps (or stopping early by
    design). Only the loop writes summary.json; a run extended with --resume --steps is unfinished again."""
    try:
        summary = json.loads((Path(path) / SUMMARY).read_text())
        steps = json.loads((Path(path) / CONFIG).read_text())["train"]["steps"]
        return isinstance(summary, dict) and (summary.get("steps") == steps or bool(summary.get("stopped_early"))
                                               or summary.get("diverged_at") is not None)
    except (OSError, ValueError, KeyError, TypeError):
        return False


class Run:
    """Read side of a run directory, for analyses and notebooks.

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
        try:
            raw = json.loads((self.dir / CONFIG).read_text())
            self.versions = raw.pop("versions", {})
            self.preset = raw.pop("preset", "")  # written by the loop beside the config sections
            self.config = RunConfig.from_dict(raw)
        except (json.JSONDecodeError, ValueError, TypeError) as e:
            raise RunDirError(f"{self.dir / CONFIG}: unreadable config ({e})") from None

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, task={self.config.task.task}, {len(self.steps)} checkpoints)"

    @property
    def steps(self) -> list[int]:
        return checkpoint_steps(self.dir)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir / METRICS)

    @property
    def summary(self) -> dict[str, Any]:
        path = self.dir / SUMMARY
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def data(self):
        """The task's TaskData, rebuilt from the config and checked against split.json."""
        from training.tasks import build_task, split_digest

        data = build_task(self.config.task)
        split_path = self.dir / SPLIT
        if split_path.exists():
            split = json.loads(split_path.read_text())
            if split.get("sha256") != split_digest(data.train_idx, data.test_idx):
                raise RunDirError(f"{split_path}: the rebuilt split does not match the recorded one")
        return data

    def checkpoint_path(self, step: int) -> Path:
        return self.dir / CKPT_DIR / ckpt_name(step)

    def weights(self, step: int) -> dict[str, torch.Tensor]:
        path = self.checkpoint_path(step)
        if not path.exists():
            raise RunDirError(f"{path}: no checkpoint at step {step} (have {len(self.steps)})")
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise RunDirError(f"{path}: corrupt checkpoint ({e})") from None

    def checkpoint_metrics(self, step: int) -> dict[str, Any]:
        path = self.checkpoint_path(step)
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little")
            raw = head + f.read(n)
        return json.loads(_metadata(raw, path).get("metrics", "{}"))

    def iter_weights(self, steps: list[int] | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor] | RunDirError]]:
        """(step, weights) for each checkpoint; a corrupt one yields (step, RunDirError) instead of raising."""
        for s in self.steps if steps is None else steps:
            try:
                yield s, self.weights(s)
            except RunDirError as e:
                yield s, e

    def model(self, step: int, device: str | torch.device = "cpu"):
        from training.models import build_model

        model = build_model(self.config.model, self.data, seed=self.config.train.seed)
        model.load_state_dict(self.weights(step))
        return model.to(device).eval()

    def bridge(self, step: int):
        from training.models import to_bridge

        return to_bridge(self.model(step))

    @property
    def analyses_dir(self) -> Path:
        d = self.dir / ANALYSES_DIR
        d.mkdir(exist_ok=True)
        return d
