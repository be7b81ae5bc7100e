"""How many torch threads a run trains on, chosen from its config before torch starts its thread pool.

A second thread pays only for a step with enough work to split: the small presets' steps are a few milliseconds of
many small ops, where OpenMP's fork, barrier and spin-waiting cost more than they save, and with one other busy
process on a 2-core machine a thread that spins while its partner is descheduled makes such a step many times
slower. So a step under `SPLIT_WORK` multiply-adds trains on one thread, a larger one on one thread per core whose
idle threads sleep (OMP_WAIT_POLICY=PASSIVE) instead of spinning.

The count is a function of the run's config alone (its own step: `step_work`), never of the ensemble or sweep
it trains in, so a run's bits, which depend on the thread count, are the same alone, as a member of any ensemble
and in a sweep at that count; config.json's "numerics" records it. An explicit choice wins: training.run's
--threads, then OMP_NUM_THREADS; a resumed run keeps the count its config.json records. A process that imported
torch already (a notebook, the tests) keeps the count it set. Torch-free, so it runs before torch is imported.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from training.constants import CONFIG
from training.errors import ConfigError, RunDirError
from training.memory import n_params
from training.registry import task_shape

SPLIT_WORK = 300_000_000  # multiply-adds (step_work) of one member's step below which one thread is used:
# measured (tests.benchmarks.thread_speed, idle 2-core EPYC) two passive threads were slower than one under a busy
# neighbour at 2.2e8 (power2022 1.12x, power2022-s5 1.08x) and within 3% of one thread from 4e8 (s5-cpu 1.01x,
# digits5-700 0.97x, nanda2023 1.03x) while 25-38% faster idle
ENV = "OMP_NUM_THREADS"


def step_work(cfg) -> int:
    """Rows x positions x parameters of one training step of `cfg` (a RunConfig): the multiply-adds of its matmuls,
    roughly, from the config alone (the same estimate whatever ensemble the run trains in). Positions: n_ctx for
    the sequence tasks, which predict at every position; 1 for the answer-only tasks."""
    shape = task_shape(cfg.task)
    rows = shape.n_train if cfg.optim.batch_size == 0 else min(cfg.optim.batch_size, shape.n_train)
    if cfg.task.infinite:  # a fresh batch every step
        rows = cfg.optim.batch_size
    return rows * (shape.n_ctx if shape.sequence else 1) * n_params(cfg.model, shape)


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not every platform has affinity
        return max(1, os.cpu_count() or 1)


def choose(cfg) -> int:
    """The thread count `cfg`'s step trains on when nothing else decides it."""
    return 1 if step_work(cfg) < SPLIT_WORK else cores()


def explicit(flag: int | None) -> int | None:
    """The user's choice: --threads, else OMP_NUM_THREADS (a positive whole number), else None."""
    if flag is not None:
        return flag
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{ENV}='{text}': expected a positive whole number of threads")
    return int(text)


def recorded(run_dir: Path) -> int | None:
    """The thread count a run directory's config.json records (None for runs from before the record)."""
    from training.safeio import read_json

    try:
        numerics = read_json(Path(run_dir) / CONFIG, "config").get("numerics")
    except (RunDirError, AttributeError):  # unreadable, or not an object: the resume itself says so, in one line
        return None
    threads = numerics.get("threads") if isinstance(numerics, dict) else None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None


@contextmanager
def threads_for(cfg, flag: int | None = None, resume: Path | None = None) -> Iterator[int | None]:
    """Set the torch thread count a run trains on (see the module docstring) for the duration of the block; yields
    it (None: the count torch already has in this process). Before torch is imported it is set through the
    environment, so torch's pool starts with it, and restored after."""
    n = explicit(flag)
    if n is None and "torch" not in sys.modules:
        n = choose(cfg) if resume is None else recorded(resume)
    if n is None:  # torch loaded (the process chose with torch.set_num_threads), or a run from before the record
        yield None  # (trained at torch's default): the count torch has stands, and is recorded
        return
    saved = {k: os.environ.get(k) for k in (ENV, "OMP_WAIT_POLICY")}
    os.environ[ENV] = str(n)
    if n > 1 and saved["OMP_WAIT_POLICY"] is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # waiting threads sleep: a busy neighbour does not stall a step
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if torch is not None:
            torch.set_num_threads(before)
