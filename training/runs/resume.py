"""Resuming a run: its saved state, checked against the run before anything changes."""

from __future__ import annotations

import json
import math
from pathlib import Path
import re
from typing import Any

import torch

from training.config import ConfigError, RunConfig
from training.constants import CKPT_DIR, METRICS, SPLIT, STATE_DIR, STATE_FILE
from training.errors import RunDirError  # noqa: F401  (re-exported)
from training.runs.format import RUN_PARTS, load_tensors, metadata, read_config, read_metrics
from training.safeio import read_json, refuse_links
from training.tasks.data import split_digest


def check_split(path: Path, data) -> None:
    """split.json must describe exactly the split rebuilt from the config (its sha256 and its train indices)."""
    split = read_json(path, "split")
    if not isinstance(split, dict):
        raise RunDirError(f"{path}: not a split (expected a JSON object)")
    if split.get("sha256") != split_digest(data.train_idx, data.test_idx):
        raise RunDirError(f"{path}: sha256 does not match the split rebuilt from config.json")
    if "train_idx" in split and split["train_idx"] != data.train_idx.tolist():
        raise RunDirError(f"{path}: train_idx does not match the split rebuilt from config.json")


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
    from training.models.base import plain_models
    from training.models.build import build_model

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
