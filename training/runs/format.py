"""The run directory: the one owner of its format, writer and reader side by side.

The files it holds are named, with what each holds, in `training.constants`.

Every file is written to a temporary name (`.NAME.tmpPID`) and renamed, so a reader never sees half a file; a
failed write removes its temporary, and the temporaries of a killed writer are removed the next time the run is
opened for writing. metrics.jsonl is append-only: a torn last line (a kill mid-write) is dropped, any other bad line
is an error naming the file and line. Nothing here unpickles anything. docs/reliability.md lists the promises.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
import re
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
import torch

from training.config import SECTIONS, ConfigError, RunConfig
from training.constants import CKPT_DIR, CKPT_PATTERN, CONFIG, CURVES, FORMAT, METRICS, SPLIT, STATE_DIR, SUMMARY
from training.errors import RunDirError  # noqa: F401  (re-exported)
from training.safeio import atomic_write_json, open_regular, read_bytes, read_json, unlink_quietly
from training.tasks.data import split_digest


# what a writer writes into (the lock is opened with O_NOFOLLOW): a link among them leads into somebody else's data
RUN_PARTS = (CONFIG, SPLIT, METRICS, SUMMARY, CURVES, CKPT_DIR, STATE_DIR)
CKPT_RE = re.compile(CKPT_PATTERN)
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
TEMP_RE = re.compile(r"^\..+\.tmp\d+$")  # atomic_write_bytes's temporaries
MAX_HEADER = 100 * 2**20  # safetensors refuses larger headers too; a bigger length field means a corrupt file
METRIC_KEYS = ("step", "train_loss", "test_loss", "train_acc", "test_acc")


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
