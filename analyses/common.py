"""What every analysis command shares: opening a run so that everything wrong with it is found before any work
(and before anything is written), and writing its outputs only under RUN_DIR/analyses/, all at the end.

Importing this module is cheap (no torch): `require_run_dir` answers a missing RUN_DIR at once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training.cli import json_safe
from training.constants import CONFIG
from training.errors import ConfigError, GrokscopeError, RunDirError


def require_run_dir(path: Path) -> None:
    """The cheap checks (no torch): a directory holding config.json."""
    if not Path(path).is_dir():
        raise RunDirError(f"{path}: no such run directory")
    if not (Path(path) / CONFIG).is_file():
        raise RunDirError(f"{path}: not a run directory (no config.json)")


def require_writable_dir(path: Path) -> None:
    """`path` is a folder, or can be created as one: checked before hours of work, without creating anything."""
    import os

    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"{path}: cannot be a folder ({probe} is not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"{path}: not writable ({probe} refuses writes)")


def open_run(path: Path, need_checkpoints: bool = True):
    """A `training.runs.reader.Run` whose config, summary, metrics and split have all been read and checked, so that
    a garbage file ends the analysis with one line naming it before anything is computed or written."""
    from training.config import validate
    from training.constants import ANALYSES_DIR, CKPT_DIR, CONFIG, METRICS, SPLIT, SUMMARY
    from training.runs.reader import Run

    from training.safeio import refuse_links

    require_run_dir(path)
    run = Run(path)
    refuse_links(run.dir, [ANALYSES_DIR])  # where the outputs go: refused now, not after the work
    try:
        validate(run.config)
    except ConfigError as e:
        raise RunDirError(f"{run.dir / CONFIG}: {e}") from None
    summary = _read(run, SUMMARY, lambda: run.summary)
    if not isinstance(summary, dict):
        raise RunDirError(f"{run.dir / SUMMARY}: expected a JSON object")
    metrics = _read(run, METRICS, lambda: run.metrics)
    bad = next((i for i, r in enumerate(metrics) if not (isinstance(r, dict) and isinstance(r.get("step"), int))),
               None)
    if bad is not None:
        raise RunDirError(f"{run.dir / METRICS}: line {bad + 1} is not a metrics row")
    _read(run, SPLIT, lambda: run.data)
    if need_checkpoints and not run.steps:
        raise RunDirError(f"{run.dir / CKPT_DIR}: no checkpoints")
    return run


def _read(run, name: str, get):
    """`get()`, with whatever a garbage file makes it raise turned into one RunDirError naming the file (the
    project's own errors, e.g. a split that does not match, pass through as they are)."""
    try:
        return get()
    except GrokscopeError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OSError) as e:  # JSONDecodeError: ValueError
        raise RunDirError(f"{run.dir / name}: unreadable ({type(e).__name__}: {e})") from None


def finite_weights(run, step: int) -> dict:
    """The checkpoint's tensors, or RunDirError when it is missing, corrupt or holds NaN/inf (a diverged run)."""
    import torch

    weights = run.weights(step)
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise RunDirError(f"{run.checkpoint_path(step)}: '{bad}' holds NaN or inf (did the run diverge?)")
    return weights


def check_checkpoints(run, steps: list[int]) -> None:
    """Every checkpoint an analysis will use is readable and finite (RunDirError naming the first that is not)."""
    for step in steps:
        finite_weights(run, step)


def finite(values) -> list[float]:
    """The finite numbers among `values` (metrics rows may hold null or NaN after a divergence)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def write_outputs(run_or_dir, files: dict[str, Any]) -> list[Path]:
    """Write an analysis' outputs into RUN_DIR/analyses/ (or a folder): dicts as strict JSON (NaN as null),
    matplotlib Figures as PNG. Every file is rendered in memory first, so a failure leaves nothing half-written;
    each is then written atomically (temporary name + rename)."""
    from training.runs.plots import render_png
    from training.constants import ANALYSES_DIR
    from training.safeio import atomic_write_bytes, output_dir

    rendered = {}
    for name, obj in files.items():
        if isinstance(obj, (bytes, bytearray)):
            rendered[name] = bytes(obj)
        elif isinstance(obj, (dict, list)):
            rendered[name] = (json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n").encode()
        else:
            rendered[name] = render_png(obj)
    out = output_dir(run_or_dir.dir / ANALYSES_DIR if hasattr(run_or_dir, "dir") else run_or_dir)
    paths = []
    for name, data in rendered.items():
        atomic_write_bytes(out / name, data)
        paths.append(out / name)
    return paths


def write_and_summarise(run, files: dict[str, Any], summary: list[str]) -> int:
    """The end of an analysis command: write its outputs (`write_outputs`), then print its summary and the files."""
    written = write_outputs(run, files)
    print("\n".join(summary))
    print(f"wrote {written[0]} and {', '.join(p.name for p in written[1:])}")
    return 0
