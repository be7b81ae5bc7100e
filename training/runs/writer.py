"""Writing a run directory: creating and locking it, and the writer the training loop holds."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
import shutil
import signal
from typing import Any
import uuid

from safetensors.torch import save
import torch

from training.cli import json_safe
from training.config import RunConfig
from training.constants import CKPT_DIR, CONFIG, FORMAT, LOCK, METRICS, SPLIT, STATE_DIR, STATE_FILE, SUMMARY
from training.errors import RunDirError  # noqa: F401  (re-exported)
from training.runs.format import RUN_PARTS, checkpoint_steps, ckpt_name, read_config, read_metrics, remove_stale_temps, run_marker
from training.runs.resume import load_state
from training.safeio import atomic_write_bytes, atomic_write_json, open_append, open_lock, read_bytes, refuse_links


# Test-only hooks that make a training process kill itself at a known point (docs/reliability.md).
KILL_AT_STEP, KILL_DURING = "GROKSCOPE_KILL_AT_STEP", "GROKSCOPE_KILL_DURING"


# --- the lock, and making or replacing a run directory -------------------------------------------------------


def _holder(lock_path: Path) -> str:
    """' (pid N)' when the lock file names a live process, else '' (never a guess like 'pid ?')."""
    try:
        pid = int(read_bytes(lock_path, 64).decode().strip())
        os.kill(pid, 0)
    except PermissionError:
        return f" (pid {pid})"
    except (OSError, ValueError, RunDirError):
        return ""
    return f" (pid {pid})"


class RunLock:
    """An exclusive flock on <run>/.lock: one writer per run directory. The kernel drops it if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.fd = open_lock(self.path)  # never through a link: the pid below would overwrite its target
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RunDirError(f"{self.path.parent} is being written by another process"
                              f"{_holder(self.path)}") from None
        # one fixed-width write, no truncation first: a refused process reads the old pid or ours, never nothing
        os.pwrite(self.fd, f"{os.getpid():<20}\n".encode(), 0)
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _make_dirs(path: Path) -> None:
    """mkdir -p that removes what it made when a deeper level fails, so a refused path leaves nothing behind."""
    made = []
    try:
        for d in reversed([path, *path.parents]):
            if not d.exists():
                d.mkdir()
                made.append(d)
    except OSError as e:
        for d in reversed(made):
            d.rmdir()
        raise RunDirError(f"cannot create {path}: {e.strerror or e}") from None


def check_out_dir(path: Path, overwrite: bool = False) -> bool:
    """Everything that can refuse `path` as a new run's directory, checked without changing anything. True when
    `path` holds a run that `overwrite` will replace (only a directory `run_marker` recognises)."""
    path = Path(path)
    if path.is_symlink():  # replacing it would act on the link, not on the run it points to
        raise RunDirError(f"--out {path}: is a symbolic link; give the directory it points to")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a directory")
    if not path.exists() or not any(p.name != LOCK for p in path.iterdir()):  # (a lock left by a run killed at
        return False                                                          # its start counts as empty)
    if not overwrite:
        raise RunDirError(f"{path} already exists; pass --resume {path} to continue it or --overwrite to replace it")
    if run_marker(path) is None:
        raise RunDirError(f"{path} is not a run directory written by grokscope (no {FORMAT!r} run id in {CONFIG}, "
                          f"or no {SPLIT}/{METRICS}); refusing to overwrite it")
    cwd = Path.cwd()
    if path.resolve() in (cwd, *cwd.parents):  # renaming it would move this process's own folder away
        raise RunDirError(f"--out {path}: is the current folder (or holds it); refusing to overwrite it")
    return True


def create_run_dir(path: Path, overwrite: bool = False) -> RunLock:
    """Make (or, with `overwrite`, replace) the run directory `path` and return its acquired lock.

    Replacing renames the old run aside to a hidden sibling first and only then deletes it (never following a
    symlink), so `path` never holds a half-deleted run; only a directory `run_marker` recognises is replaced."""
    return create_run_dirs([path], overwrite)[0]


def create_run_dirs(paths: list[Path], overwrite: bool = False) -> list[RunLock]:
    """`create_run_dir` for an ensemble's members, all checked first: every path passes `check_out_dir` and the
    lock of every run to be replaced is taken (refused while another process writes it) before any is replaced."""
    paths = [Path(p) for p in paths]
    replace = [check_out_dir(p, overwrite) for p in paths]
    old: list[RunLock | None] = []
    new: list[RunLock] = []
    try:
        for p, r in zip(paths, replace):
            old.append(RunLock(p).acquire() if r else None)
        for p, lock in zip(paths, old):
            new.append(_replace_run_dir(p, lock) if lock else _new_run_dir(p))
        return new
    except BaseException:
        for lock in [*old, *new]:
            if lock is not None:
                lock.release()  # a released lock releases as nothing
        raise


def _new_run_dir(path: Path) -> RunLock:
    if not path.exists():
        _make_dirs(path)
    return RunLock(path).acquire()


def _replace_run_dir(path: Path, old_lock: RunLock) -> RunLock:
    path = path.resolve()  # a real name for the sibling even when --out ends in ".."
    aside = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except OSError as e:
        raise RunDirError(f"cannot move {path} aside to replace it: {e.strerror or e}") from None
    finally:
        old_lock.release()
    _make_dirs(path)
    lock = RunLock(path).acquire()
    try:
        shutil.rmtree(aside)  # unlinks symlinks inside, never follows them
    except OSError as e:
        lock.release()
        raise RunDirError(f"the old run was moved to {aside} but could not be deleted ({e.strerror or e})") from None
    return lock


# --- the writer ----------------------------------------------------------------------------------------------


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _env_step(name: str) -> int | None:
    text = os.environ.get(name, "")
    return int(text) if text.isdigit() else None


class RunWriter:
    """Writes one run directory; the training loop is its only user, and it holds the run's lock."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        refuse_links(self.dir, RUN_PARTS)
        for d in (CKPT_DIR, STATE_DIR):
            try:
                (self.dir / d).mkdir(parents=True, exist_ok=True)
            except OSError as e:  # e.g. a file named ckpt or state
                raise RunDirError(f"cannot create {self.dir / d}: {e.strerror or e}") from None
        remove_stale_temps(self.dir)
        self.run_id: str | None = None  # set by write_config (a new run) or load_state (resume)
        # test-only: die at a known point instead of after a guessed sleep (tests/training/test_cli.py)
        self.kill_at, self.kill_during = _env_step(KILL_AT_STEP), os.environ.get(KILL_DURING, "")

    def write_config(self, cfg: RunConfig, extra: dict[str, Any]) -> None:
        """A new run: a new run id. Written after split.json and metrics.jsonl, so a marked config implies both."""
        self.run_id = uuid.uuid4().hex
        atomic_write_json(self.dir / CONFIG, {"format": FORMAT, "run_id": self.run_id, **cfg.to_dict(), **extra})

    def write_split(self, split: dict[str, Any]) -> None:
        atomic_write_json(self.dir / SPLIT, split)

    def append_metrics(self, row: dict[str, Any]) -> None:
        path = self.dir / METRICS
        line = (json.dumps(row) + "\n").encode()
        try:
            with open_append(path) as f:
                if self.kill_during == "metrics" and row["step"] == self.kill_at:
                    f.write(line[: len(line) // 2])
                    f.flush()
                    _kill_self()
                f.write(line)
        except OSError as e:  # a partial line is a torn tail: dropped on the next read
            raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None

    def truncate_after(self, step: int) -> None:
        """Forget everything past `step` (resume): metrics rows and checkpoints written after the saved state."""
        rows = [r for r in read_metrics(self.dir / METRICS) if r["step"] <= step] if step >= 0 else []
        atomic_write_bytes(self.dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode())
        for s in checkpoint_steps(self.dir):
            if s > step:
                (self.dir / CKPT_DIR / ckpt_name(s)).unlink()

    def save_checkpoint(self, step: int, weights: dict[str, torch.Tensor], metrics: dict[str, Any]) -> int:
        meta = {"step": str(step), "metrics": json.dumps(metrics)}
        data = save({k: v.detach().cpu().contiguous() for k, v in weights.items()}, metadata=meta)
        kill = self.kill_during == "ckpt" and self.kill_at is not None and step >= self.kill_at
        atomic_write_bytes(self.dir / CKPT_DIR / ckpt_name(step), data, before_rename=_kill_self if kill else None)
        return len(data)

    def save_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        tags = {"state": json.dumps(meta), **({"run_id": self.run_id} if self.run_id else {})}
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=tags)
        kill = self.kill_during == "state" and meta["step"] == self.kill_at
        atomic_write_bytes(self.dir / STATE_DIR / STATE_FILE, data, before_rename=_kill_self if kill else None)

    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Resume: the run id comes from config.json, and every later state is tagged with it."""
        self.run_id = read_config(self.dir)[1].get("run_id")
        return load_state(self.dir, self.run_id)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.dir / SUMMARY, json_safe(summary))  # a diverged run's NaN losses as null
