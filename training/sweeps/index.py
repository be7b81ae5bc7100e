"""The sweep index (sweep.json): one entry per run, merged with what is on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.constants import CKPT_DIR, LOCK, STATE_DIR
from training.errors import RunDirError
from training.sweeps.spec import INDEX, METHOD, PlannedRun, STATE, SweepSpec, check_all, plan


# --- the sweep directory -------------------------------------------------------------------------------------


def spec_dict(spec: SweepSpec, seed_fields: list[str]) -> dict[str, Any]:
    d = {"preset": spec.preset, "overrides": spec.overrides, "grid": spec.grid, "seeds": spec.seeds,
         "seed_fields": seed_fields}
    if spec.variants:  # absent for a plain grid: indexes written before variants existed read the same
        d["variants"] = spec.variants
    return d


def run_entry(r: PlannedRun, status: str, summary: dict[str, Any] | None = None, error: str = "",
              seconds: float | None = None) -> dict[str, Any]:
    s = summary or {}
    entry = {"name": r.name, "dir": r.name, "params": r.params, "seed": r.seed, "status": status,
             "budget": r.config.train.steps}
    if METHOD in r.params:
        entry[METHOD] = r.params[METHOD]
    for k in ("S_mem", "S_gen", "steps"):  # None kept: S_gen null = did not generalise
        if k in s:
            entry[k] = s[k]
    for k in ("switch_step", "diverged_at"):
        if s.get(k) is not None:
            entry[k] = s[k]
    if seconds is not None:
        entry["seconds"] = seconds
    if isinstance(s.get("final"), dict):
        entry["final_train_acc"], entry["final_test_acc"] = s["final"].get("train_acc"), s["final"].get("test_acc")
    if error:
        entry["error"] = error
    return entry


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed kinds: keep the order given
        return values


def merged(spec: SweepSpec, old: dict[str, Any], seed_fields: list[str]) -> SweepSpec | None:
    """`spec` joined with the sweep already in the directory: the union of grid values, of methods and of seeds,
    when both fix the same preset, fields and seed fields, sweep the same fields and give a method present in
    both the same overrides; None when they do not."""
    new = json.loads(json.dumps(spec_dict(spec, seed_fields)))  # JSON-normalised, as stored
    if any(new[k] != old.get(k) for k in ("preset", "overrides", "seed_fields")) or set(new["grid"]) != set(old["grid"]):
        return None
    old_v, new_v = old.get("variants") or {}, new.get("variants") or {}
    if bool(old_v) != bool(new_v) or any(old_v[k] != new_v[k] for k in set(old_v) & set(new_v)):
        return None
    grid = {k: _sorted(list(old["grid"][k]) + [v for v in spec.grid[k] if v not in old["grid"][k]]) for k in spec.grid}
    seeds = sorted(set(old["seeds"]) | set(spec.seeds))
    variants = {**old_v, **{k: spec.variants[k] for k in spec.variants if k not in old_v}}
    return SweepSpec(spec.preset, grid, seeds, spec.overrides, spec.doc, variants)


# What a killed run can leave before its first config write: the lock and the (empty) folders the writer makes.
_STARTUP_DEBRIS = {LOCK, CKPT_DIR, STATE_DIR}


def existing_status(r: PlannedRun, path: Path) -> tuple[str, dict[str, Any] | None]:
    """'done' (with its summary), 'resume' (state saved, not finished) or 'new' (nothing usable there).
    Done means reached its configured steps (`run_finished`): a summary.json alone is not enough."""
    from training.runs.format import is_run_dir, run_finished
    from training.runs.reader import Run

    if not path.exists():
        return "new", None
    if not is_run_dir(path):
        if path.is_dir() and all(p.name in _STARTUP_DEBRIS for p in path.iterdir()):
            return "new", None
        raise RunDirError(f"{path} exists and is not a run directory; refusing to write into it")
    if Run(path).config != r.config:
        raise RunDirError(f"{path} holds a run with a different config; remove it or pick another --out")
    if run_finished(path):
        return "done", Run(path).summary
    return ("resume" if (path / STATE).exists() else "new"), None


def open_sweep(spec: SweepSpec, out: Path, seed_fields: list[str]) -> tuple[SweepSpec, list[PlannedRun]]:
    """The spec (joined with the one already in `out`) and its checked runs. Reads only: nothing is written."""
    index_path = out / INDEX
    if index_path.exists():
        from training.safeio import read_json

        try:
            old = read_json(index_path, "sweep index")["spec"]
            joined = merged(spec, old, seed_fields)
        except (KeyError, TypeError, AttributeError) as e:
            raise RunDirError(f"{index_path}: unreadable sweep index ({e})") from None
        if joined is None:
            raise RunDirError(f"{out} holds a different sweep (same preset, fixed fields, grid fields and method "
                              "overrides needed; only grid values, methods or seeds can be added); pick another --out")
        spec = joined
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"{out} exists and is not a sweep directory (no {INDEX}); refusing to write into it")
    runs = plan(spec, seed_fields)
    check_all(runs)
    return spec, runs
