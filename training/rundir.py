"""The run directory: the one owner of its format, writer and reader side by side.

The files it holds are named, with what each holds, in `training.constants`.

Every file is written to a temporary name (`.NAME.tmpPID`) and renamed, so a reader never sees half a file; a
failed write removes its temporary, and the temporaries of a killed writer are removed the next time the run is
opened for writing. metrics.jsonl is append-only: a torn last line (a kill mid-write) is dropped, any other bad line
is an error naming the file and line. Nothing here unpickles anything. docs/reliability.md lists the promises.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import signal
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from training.cli import json_safe
from training.config import SECTIONS, ConfigError, RunConfig
from training.errors import RunDirError  # noqa: F401  (re-exported)
from training.taskdata import split_digest
from training.safeio import (atomic_write_bytes, atomic_write_json, open_append, open_lock, open_regular,  # noqa: F401
                             output_dir, read_bytes, read_json, refuse_links, unlink_quietly)

from training.constants import (ANALYSES_DIR, CKPT_DIR, CKPT_PATTERN, CONFIG, CURVES, FORMAT, LOCK,  # noqa: F401
                                METRICS, SPLIT, STATE_DIR, STATE_FILE, SUMMARY)

# what a writer writes into (the lock is opened with O_NOFOLLOW): a link among them leads into somebody else's data
RUN_PARTS = (CONFIG, SPLIT, METRICS, SUMMARY, CURVES, CKPT_DIR, STATE_DIR)
CKPT_RE = re.compile(CKPT_PATTERN)
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
TEMP_RE = re.compile(r"^\..+\.tmp\d+$")  # atomic_write_bytes's temporaries
MAX_HEADER = 100 * 2**20  # safetensors refuses larger headers too; a bigger length field means a corrupt file
METRIC_KEYS = ("step", "train_loss", "test_loss", "train_acc", "test_acc")
# Test-only hooks that make a training process kill itself at a known point (docs/reliability.md).
KILL_AT_STEP, KILL_DURING = "GROKSCOPE_KILL_AT_STEP", "GROKSCOPE_KILL_DURING"


# --- temporaries (the writing itself: training.safeio) ---------------------------------------------------------


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Temporaries left by a killed writer. Only called by the holder of the run's lock, so none is live; analyses/
    is left alone (an analysis may be writing there while the run trains)."""
    removed = []
    for d in (Path(run_dir), Path(run_dir) / CKPT_DIR, Path(run_dir) / STATE_DIR):
        if d.is_dir():
            for p in d.iterdir():
                if TEMP_RE.match(p.name) and p.is_file() and not p.is_symlink():
                    unlink_quietly(p)
                    removed.append(p)
    return removed


def ckpt_name(step: int) -> str:
    return f"step_{step}.safetensors"


# --- metrics.jsonl -------------------------------------------------------------------------------------------


def _row_problem(line: bytes, prev_step: int) -> str | dict[str, Any]:
    """The row on `line`, or what is wrong with it."""
    try:
        row = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError):
        return "not JSON"
    if not isinstance(row, dict) or any(k not in row for k in METRIC_KEYS):
        return f"not a metrics row (needs {', '.join(METRIC_KEYS)})"
    if not isinstance(row["step"], int) or isinstance(row["step"], bool) or row["step"] < 0:
        return f"step {row['step']!r} is not a step number"
    if row["step"] <= prev_step:
        return f"step {row['step']} does not follow step {prev_step}"
    bad = [k for k in METRIC_KEYS[1:] if row[k] is not None and (isinstance(row[k], bool)
                                                                   or not isinstance(row[k], (int, float)))]
    return f"{', '.join(bad)} not a number" if bad else row


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl. A row counts once its newline is written, so a last line without one is a write
    cut short (a kill, a full disk) and is dropped; any other bad line raises RunDirError naming file:line."""
    path = Path(path)
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return []
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(raw.split(b"\n")[:-1], 1):  # [:-1]: the torn tail, or "" after the last newline
        row = _row_problem(line, rows[-1]["step"] if rows else -1)
        if isinstance(row, str):
            raise RunDirError(f"{path}:{n}: {row}; refusing to guess (fix or remove that line)")
        rows.append(row)
    return rows


# --- config.json and split.json ------------------------------------------------------------------------------


def _field_problem(value: Any, default: Any) -> str | None:
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a boolean"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    return None if isinstance(value, str) else "a string"


def config_from_json(raw: Any, path: Path) -> tuple[RunConfig, dict[str, Any]]:
    """RunConfig + the extras beside it (format, run_id, preset, versions, numerics, imported), every field
    type-checked."""
    if not isinstance(raw, dict):
        raise RunDirError(f"{path}: not a run config (expected a JSON object)")
    raw = dict(raw)
    extras = {k: raw.pop(k) for k in ("format", "run_id", "preset", "versions", "numerics", "imported") if k in raw}
    if extras.get("format", FORMAT) != FORMAT:
        raise RunDirError(f"{path}: format {extras['format']!r}, this grokscope reads {FORMAT!r}")
    for name, sub in SECTIONS.items():
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise RunDirError(f"{path}: '{name}' must be a JSON object")
        defaults = sub()
        for key, value in values.items():
            problem = hasattr(defaults, key) and _field_problem(value, getattr(defaults, key))
            if problem:
                raise RunDirError(f"{path}: {name}.{key} must be {problem}, got {value!r}")
    try:
        return RunConfig.from_dict(raw), extras
    except (ConfigError, TypeError, ValueError) as e:
        raise RunDirError(f"{path}: not a run config ({e})") from None


def read_config(run_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RunDirError(f"{run_dir}: no run directory there (no {CONFIG})")
    return config_from_json(read_json(run_dir / CONFIG, "config"), run_dir / CONFIG)


def set_steps(run_dir: Path, steps: int) -> None:
    """--resume --steps N: change only train.steps, keeping every other key (run_id, versions) as written."""
    raw = read_json(Path(run_dir) / CONFIG, "config")
    raw.setdefault("train", {})["steps"] = steps
    atomic_write_json(Path(run_dir) / CONFIG, raw)


def check_split(path: Path, data) -> None:
    """split.json must describe exactly the split rebuilt from the config (its sha256 and its train indices)."""
    split = read_json(path, "split")
    if not isinstance(split, dict):
        raise RunDirError(f"{path}: not a split (expected a JSON object)")
    if split.get("sha256") != split_digest(data.train_idx, data.test_idx):
        raise RunDirError(f"{path}: sha256 does not match the split rebuilt from config.json")
    if "train_idx" in split and split["train_idx"] != data.train_idx.tolist():
        raise RunDirError(f"{path}: train_idx does not match the split rebuilt from config.json")


def explicit_split(path: Path, data):
    """`data` with the train and test indices an imported run's split.json names ("explicit": true: a split
    made elsewhere, which no seed here rebuilds), checked: disjoint, in range, matching their sha256."""
    import dataclasses

    split = read_json(path, "split")
    idx = [split.get(k) if isinstance(split, dict) else None for k in ("train_idx", "test_idx")]
    n = len(data.inputs)
    if not all(isinstance(v, list) and all(type(i) is int and 0 <= i < n for i in v) for v in idx):
        raise RunDirError(f"{path}: train_idx and test_idx must be lists of row indices below {n}")
    train, test = (torch.tensor(v, dtype=torch.long) for v in idx)
    if len(set(idx[0]) | set(idx[1])) != len(idx[0]) + len(idx[1]):
        raise RunDirError(f"{path}: train_idx and test_idx overlap or repeat a row")
    if split.get("sha256") != split_digest(train, test):
        raise RunDirError(f"{path}: sha256 does not match its train_idx and test_idx")
    return dataclasses.replace(data, train_idx=train, test_idx=test)


def is_explicit_split(path: Path) -> bool:
    split = read_json(path, "split") if Path(path).exists() else None
    return isinstance(split, dict) and split.get("explicit") is True


# --- safetensors files ---------------------------------------------------------------------------------------


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (8 bytes of length, then JSON), read without trusting the length."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > min(size - 8, MAX_HEADER):
                raise RunDirError(f"{path}: not a safetensors file (a {n}-byte header in a {size}-byte file)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing") from None
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{path}: not a safetensors file ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__") or {}, dict):
        raise RunDirError(f"{path}: not a safetensors file (bad header)")
    return header


def metadata(path: Path) -> dict[str, str]:
    return read_header(path).get("__metadata__") or {}


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    read_header(path)  # refuses a lying length field before safetensors allocates anything
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError, MemoryError) as e:
        raise RunDirError(f"{path}: corrupt safetensors file ({e})") from None


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def bad_counters(state: Any) -> list[str]:
    """The resume counters every state carries that are missing or make no sense: a step or checkpoint count below
    0, a time that is negative or not finite, a checkpoint policy without its fields. Checked before anything is
    truncated: resuming "from step -5" would forget every checkpoint and metrics row. (The optimiser's own layout
    is checked by check_state_fits.)"""
    if not isinstance(state, dict):
        return ["all of them"]
    bad = [] if _count(state.get("step")) else ["step"]
    bad += [k for k in ("elapsed", "train_time", "overhead_time")
            if not (_number(state.get(k)) and math.isfinite(state[k]) and state[k] >= 0)]
    policy = state.get("policy")
    last = policy.get("last") if isinstance(policy, dict) else None
    if not (isinstance(policy, dict) and _count(policy.get("count")) and _count(policy.get("bytes"))
            and (last is None or isinstance(last, dict)
                 and all(_number(last.get(k)) for k in ("test_acc", "train_acc", "test_loss")))):
        bad.append("policy")
    return bad


def load_state(run_dir: Path, run_id: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The resume state, checked to be whole and to belong to the run whose config.json holds `run_id` (None for
    a run written before run ids: then the state must carry none either). None when there is no state yet."""
    path = Path(run_dir) / STATE_DIR / STATE_FILE
    if not path.exists():
        return None
    meta = metadata(path)
    if meta.get("run_id") != run_id:
        raise RunDirError(f"{path}: written by another run (run_id {meta.get('run_id')}, config.json has {run_id}); "
                          "refusing to continue with its weights")
    try:
        state = json.loads(meta["state"])
    except (KeyError, TypeError, ValueError):
        raise RunDirError(f"{path}: no resume counters in its metadata") from None
    bad = bad_counters(state)
    if bad:
        raise RunDirError(f"{path}: resume counters missing or malformed ({', '.join(bad)})")
    return load_tensors(path), state


def check_state_fits(tensors: dict[str, torch.Tensor], state: dict[str, Any], model: torch.nn.Module,
                     path: Path) -> None:
    """The state's tensors fit this config: every parameter of its model (`model.<name>`, same shape and dtype),
    both RNG states, and optimiser buffers `opt.<i>.<name>` shaped like parameter i. Other tensors (a transform's
    buffers) are left to their owner."""
    want = {f"model.{k}": v for k, v in model.named_parameters()}
    want["rng.batch"], want["rng.torch"] = torch.Generator().get_state(), torch.get_rng_state()
    params = list(model.parameters())
    problems = [k for k, v in want.items() if k not in tensors or tensors[k].shape != v.shape
                or tensors[k].dtype != v.dtype]
    for k, t in tensors.items():
        m = re.match(r"^opt\.(\d+)\.(\w+)$", k)
        idx = int(m.group(1)) if m else 0
        if m and (idx >= len(params) or (m.group(2) != "step" and t.shape != params[idx].shape)):
            problems.append(k)
    groups = state.get("param_groups")
    if groups is not None and (not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict)
                               or len(groups[0].get("params", [])) != len(params)):
        problems.append("param_groups")
    if problems:
        raise RunDirError(f"{path}: does not fit this run's model and optimiser ({', '.join(problems[:4])}"
                          f"{', ...' if len(problems) > 4 else ''})")


def check_resume(run_dir: Path, cfg: RunConfig, data) -> int:
    """Everything --resume relies on, checked before anything in the run is written: split.json against the
    rebuilt split, every metrics row, the state's run id and shapes, and that --steps is not below the step the
    run has reached. Returns that step (0 without a state)."""
    from training.models import build_model, plain_models

    run_dir = Path(run_dir)
    refuse_links(run_dir, RUN_PARTS)
    _, extras = read_config(run_dir)
    for d in (run_dir / CKPT_DIR, run_dir / STATE_DIR):
        if d.exists() and not d.is_dir():
            raise RunDirError(f"{d}: not a directory")
    check_split(run_dir / SPLIT, data)
    read_metrics(run_dir / METRICS)
    saved = load_state(run_dir, extras.get("run_id"))
    if saved is None:
        return 0
    tensors, state = saved
    with plain_models():  # its parameters' names and shapes only
        model = build_model(cfg.model, data, seed=cfg.train.seed)
    check_state_fits(tensors, state, model, run_dir / STATE_DIR / STATE_FILE)
    if cfg.train.steps < state["step"]:
        raise ConfigError(f"--steps {cfg.train.steps} is below step {state['step']}, which {run_dir} has already "
                          "reached; a run is only ever extended")
    return state["step"]


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


def run_marker(path: Path) -> str | None:
    """The run_id when `path` is a run directory this project wrote (format marker and run id in config.json,
    split.json and metrics.jsonl beside it), else None. Only such a directory may be replaced by --overwrite."""
    path = Path(path)
    if path.is_symlink() or not all((path / f).is_file() for f in (CONFIG, SPLIT, METRICS)):
        return None
    try:
        raw = read_json(path / CONFIG, "config")
    except RunDirError:
        return None
    ok = isinstance(raw, dict) and raw.get("format") == FORMAT and isinstance(raw.get("run_id"), str)
    return raw["run_id"] if ok and RUN_ID_RE.match(raw["run_id"]) else None


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


def checkpoint_steps(run_dir: Path) -> list[int]:
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := CKPT_RE.match(p.name)))


def is_run_dir(path: Path) -> bool:
    """Readable as a run (a config.json): older runs without the format marker included. See `run_marker`."""
    return (Path(path) / CONFIG).is_file()


def run_finished(path: Path) -> bool:
    """Finished = the training loop wrote its summary after reaching the configured steps (or stopping early by
    design, or diverging). Only the loop writes summary.json; a run extended with --resume --steps is unfinished
    again."""
    try:
        summary = read_json(Path(path) / SUMMARY, "summary")
        steps = read_json(Path(path) / CONFIG, "config")["train"]["steps"]
        return isinstance(summary, dict) and (summary.get("steps") == steps or bool(summary.get("stopped_early"))
                                               or summary.get("diverged_at") is not None)
    except (RunDirError, KeyError, TypeError):
        return False


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
        from training.tasks import build_task

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
        from training.models import build_model

        step = self.nearest_step(step) if nearest else step
        model = build_model(self.config.model, self.data, seed=self.config.train.seed)
        try:
            model.load_state_dict(self.weights(step))
        except RuntimeError as e:  # missing, unexpected or wrong-shaped tensors
            first = str(e).strip().splitlines()[-1].strip()
            raise RunDirError(f"{self.checkpoint_path(step)}: does not fit this run's model ({first})") from None
        return model.to(device).eval()

    def bridge(self, step: int, nearest: bool = False):
        from training.models import to_bridge

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
