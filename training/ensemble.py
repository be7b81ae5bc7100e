"""Ensembles: K runs whose configs keep the same tensor shapes train as one stacked model, one step for all.

    summaries = train_ensemble(configs, run_dirs)          # each run into its own ordinary run directory
    chunks = plan_chunks(configs)                           # index groups worth training together (measured)

Configs with equal `shape_key` can share a `training.trainer.Trainer`: they may differ in seeds, split seed, lr,
wd, betas, momentum, warmup, init scale, dropout rate, label noise, norm constraint, the memorisation switch,
steps, eval cadence and checkpoint policy. A member is bit for bit the same config trained alone, on the same
device at the same torch thread count: a run alone is the same Trainer with K = 1 (same batched forward, same
per-member loss weighting, same fused optimiser kernels, same minibatches and dropout masks from its own
generators), and members share a Trainer only with runs of their own training-set size (the data fraction is part
of `shape_key`), so each member's examples are padded exactly as they are alone. A member that finishes (its steps, stop_after_gen) leaves the
ensemble and the rest go on. Incompatible configs are split into separate ensembles, never an error.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from training.config import RunConfig
from training.registry import ensemble_key, model_spec
from training.tasks.build import build_task
from training.tasks.data import TaskData
from training.trainer import state_path

def shape_key(cfg: RunConfig) -> tuple:
    """Configs with equal keys can train as one ensemble: everything that fixes a tensor shape or the step's
    code path, as the specs declare it (training.registry.ensemble_key: the task's and the model's shape fields,
    optimiser kind, batch size, loss and its precision, device, the Grokfast filter and its window), and the
    training-set size (the data fraction): members of different sizes would be padded to the longest, and a
    matmul's rounding depends on the padded length, so a member would no longer be bit for bit its run alone.
    Weight noise, decay to init, ⊥Grad and Grokfast's alpha and lamb vary per member. A model without a batched
    forward trains alone."""
    if not model_spec(cfg.model.model).batched:
        return ("alone", cfg.to_json())
    return (*ensemble_key(cfg), ("frac", cfg.task.frac))


def _datas(configs: list[RunConfig]) -> list[TaskData]:
    """Each config's task, built once per distinct task config."""
    built: dict[Any, TaskData] = {}
    for c in configs:
        if c.task not in built:
            built[c.task] = build_task(c.task)
    return [built[c.task] for c in configs]


def _groups(keys: list[Any]) -> list[list[int]]:
    order: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        order.setdefault(key, []).append(i)
    return list(order.values())


def train_ensemble(configs: list[RunConfig], run_dirs: list[Path], *, resume: bool | list[bool] = False,
                   progress: bool = False, preset: str = "", log: Callable[[str], None] = print) -> list[dict]:
    """Train `configs` into `run_dirs` (created and locked by the caller, as for `training.loop.train`).

    Shape-compatible configs resuming from the same step on the same recorded step path (`state_path`) train as
    one ensemble; the others as separate ones. Returns each run's summary (as `train` returns it),
    {"interrupted": True, "step": s} after Ctrl-C.
    """
    from training.loop import run_members, state_meta

    resume = [resume] * len(configs) if isinstance(resume, bool) else list(resume)
    saved = [state_meta(d) if r else None for d, r in zip(run_dirs, resume)]
    starts = [m["step"] if m else 0 for m in saved]
    paths = [state_path(m) if m else "exact" for m in saved]
    datas = _datas(configs)
    results: list[dict | None] = [None] * len(configs)
    for group in _groups([(shape_key(c), s, p) for c, s, p in zip(configs, starts, paths)]):
        if any(r is not None and r.get("interrupted") for r in results):  # Ctrl-C: start no further ensemble
            for i in group:
                results[i] = {"interrupted": True, "step": starts[i]}
            continue
        out = run_members([configs[i] for i in group], [Path(run_dirs[i]) for i in group],
                          datas=[datas[i] for i in group], resume=[resume[i] for i in group], progress=progress,
                          preset=preset, log=log)
        for i, r in zip(group, out):
            results[i] = r
    return results  # type: ignore[return-value]


# --- measuring whether an ensemble pays ----------------------------------------------------------------------

_GAINS: dict[tuple, float] = {}


def step_time(configs: list[RunConfig], steps: int = 3, data: TaskData | None = None) -> float:
    """Seconds per step of `configs` as one Trainer (after a warm-up step and the Trainer's chunk tuning)."""
    from training.loop import pick_device
    from training.models.base import plain_models
    from training.trainer import Trainer

    data = data if data is not None else build_task(configs[0].task)
    with plain_models():
        trainer = Trainer(configs, [data] * len(configs), pick_device(configs[0].train.device))
    trainer.step()
    while trainer.batched and not trainer.chunks.best:  # its member chunking is tuned first (ChunkTuner)
        trainer.step()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def ensemble_gain(cfg: RunConfig, K: int, steps: int = 3) -> float:
    """Throughput of K members of `cfg`'s shape as one ensemble over K runs one after another (measured once
    per shape and K, at the current torch thread count)."""
    key = (shape_key(cfg), K, torch.get_num_threads())
    if key not in _GAINS:
        data = build_task(cfg.task)
        one = step_time([cfg], steps, data)
        many = step_time([cfg.replace(seed=cfg.train.seed + j) for j in range(K)], steps, data)
        _GAINS[key] = K * one / many
    return _GAINS[key]


def plan_chunks(configs: list[RunConfig], max_members: int = 64, min_gain: float = 1.1,
                threads: int | None = None) -> list[list[int]]:
    """Indices of `configs` grouped into ensembles that pay: per shape, the largest of (max_members, 8, 2)
    members whose measured throughput gain (`ensemble_gain`) is at least `min_gain`; else one run per chunk.
    threads: the torch thread count the chunks will train with (the local sweep: its --threads), measured under
    it; default the current one."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _plan(configs, max_members, min_gain)
    finally:
        torch.set_num_threads(before)


def _plan(configs: list[RunConfig], max_members: int, min_gain: float) -> list[list[int]]:
    chunks: list[list[int]] = []
    for group in _groups([shape_key(c) for c in configs]):
        size = 1
        if len(group) > 1 and model_spec(configs[group[0]].model.model).batched:
            cap = min(len(group), max_members)
            for K in sorted({cap, min(cap, 8), min(cap, 2)}, reverse=True):
                if K > 1 and ensemble_gain(configs[group[0]], K) >= min_gain:
                    size = K
                    break
        n = math.ceil(len(group) / size)  # chunks of near-equal size
        chunks += [group[round(j * len(group) / n): round((j + 1) * len(group) / n)]
                   for j in range(n)]
    return chunks

