"""How many torch threads a run trains on, chosen before torch starts its thread pool, and changed with the load.

A second thread pays only while it has a core to itself. Idle, torch's threads (one per core, spinning while they
wait) make even a few-millisecond step faster (default preset 4.8 ms at two threads, 7.3 at one on the 2-core
development machine); beside one busy process a thread that spins while its partner is descheduled makes the same
step several times slower (19 ms). No count fixed in advance wins both, so by default a run trains "by load": each
step at one thread or at one per core, whichever the `Governor` last measured faster, re-measured as it goes.

That is only allowed because it changes no bit. A run's bits could depend on the thread count (a kernel that splits
a sum between threads adds in another order), so before the first step `same_bits` trains one step and one
evaluation of the run's configs at one thread and at the full count, from scratch, and compares every parameter
and metric bit for bit. On the development machine they agree for all but a few presets (a 5-row matmul of
`omnigrok-teacher`, long reductions of `add97-lstm`, the attention softmax backward of the sequence tasks); where
they differ the run trains on one thread. Either way its bits are those of one thread, which config.json's
"numerics" records as `"threads": 1` (with `"threads_by_load": N` when steps ran at 1 or N), so a run trained by
load, a run at `--threads 1`, an ensemble member and a sweep's run (one thread per worker) are the same run.

An explicit choice wins: training.run's --threads, then OMP_NUM_THREADS; a resumed run keeps the count its
config.json records (by load again if it trained by load). A process that imported torch already (a notebook, the
tests) keeps the count it set. Torch-free at import, so it runs before torch is imported.
"""

from __future__ import annotations

import os
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from training.constants import CONFIG
from training.errors import ConfigError, RunDirError

ENV = "OMP_NUM_THREADS"
_by_load = 0  # inside `threads_for`: the most threads a run may step at by load (0: a fixed count)


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not every platform has affinity
        return max(1, os.cpu_count() or 1)


def by_load() -> int:
    """The most threads the run being started may step at by load; 0 when its count is fixed."""
    return _by_load


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


def recorded(run_dir: Path) -> tuple[int | None, bool]:
    """(the thread count a run directory's config.json records, whether it trained by load); None for runs from
    before the record."""
    from training.safeio import read_json

    try:
        numerics = read_json(Path(run_dir) / CONFIG, "config").get("numerics")
    except (RunDirError, AttributeError):  # unreadable, or not an object: the resume itself says so, in one line
        return None, False
    numerics = numerics if isinstance(numerics, dict) else {}
    threads = numerics.get("threads")
    count = threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None
    return count, "threads_by_load" in numerics


@contextmanager
def threads_for(flag: int | None = None, resume: Path | None = None) -> Iterator[int | None]:
    """Set the torch thread count a run trains on (see the module docstring) for the duration of the block; yields
    it (None: the count torch already has in this process). Before torch is imported it is set through the
    environment, so torch's pool starts with it, and restored after."""
    global _by_load
    n, load = explicit(flag), False
    if n is None and "torch" not in sys.modules:
        n, load = (None, True) if resume is None else recorded(resume)
        if load:
            n = cores()
    if n is None:  # torch loaded (the process chose with torch.set_num_threads), or a run from before the record
        yield None  # (trained at torch's default): the count torch has stands, and is recorded
        return
    saved = {k: os.environ.get(k) for k in (ENV, "OMP_WAIT_POLICY")}
    os.environ[ENV] = str(n)
    if n > 1 and not load and saved["OMP_WAIT_POLICY"] is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # a fixed count: waiting threads sleep, a busy neighbour does not
        # stall a step. By load they spin (faster idle) and the governor drops to one thread beside a busy neighbour
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    _by_load = n if load and n > 1 else 0
    try:
        yield n
    finally:
        _by_load = 0
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if torch is not None:
            torch.set_num_threads(before)


def same_bits(make: Callable[[], Any], most: int) -> bool:
    """Whether a Trainer from `make()` gives the same bits at one thread and at `most`: one step (every transform
    and the optimiser included) and one evaluation, each from a fresh Trainer (the same seeds, so the same draws),
    compared parameter by parameter and metric by metric. Kernels pick their code by shape, stride and thread count,
    not by value, and a run's shapes are those of its first step and evaluation."""
    import torch

    before, seen = torch.get_num_threads(), []
    try:
        for n in (1, most):
            torch.set_num_threads(n)
            trainer = make()
            trainer.step()
            seen.append(([p.detach().clone() for p in trainer.plist], repr(trainer.evaluate())))
            del trainer
    finally:
        torch.set_num_threads(before)
    (a, ra), (b, rb) = seen
    return ra == rb and all(torch.equal(x, y) for x, y in zip(a, b))


class Governor:
    """Steps at one thread or at `most`, whichever was faster when last measured (`same_bits` has checked that the
    two give the same bits). A probe times PROBE steps at each count, after one untimed step there (threads that
    slept wake slowly: 12, 9, then 5 ms for the default preset), and keeps the faster by the median; the count then
    holds for `hold` steps, doubling from HOLD to MAX_HOLD while probes keep choosing it (so a long run spends under
    1% of its steps probing). A held count's step three times in a row SLOWER times its probed median means the
    load changed: probe again at once."""

    PROBE, HOLD, MAX_HOLD, SLOWER = 3, 16, 1024, 2.0

    def __init__(self, most: int, set_threads: Callable[[int], None]):
        self.counts, self.set_threads = (most, 1), set_threads
        self.current, self.choice, self.best, self.hold, self.left, self.slow = 0, most, 0.0, self.HOLD, 0, 0
        self.times: dict[int, list[float]] = {}
        self.steps = {n: 0 for n in self.counts}  # steps taken at each count (summary.json's "steps_by_threads")
        self._probe()

    def _probe(self) -> None:
        order = sorted(self.counts, key=lambda n: n == self.choice)  # the held count last: it goes on from there
        self.plan = [(n, i > 0) for n in order for i in range(self.PROBE + 1)]  # (count, timed)
        self.times = {n: [] for n in self.counts}

    def next(self) -> int:
        """The count for the next step, set."""
        n = self.plan[0][0] if self.plan else self.choice
        if n != self.current:
            self.set_threads(n)
            self.current = n
        return n

    def timed(self, seconds: float) -> None:
        """The step just taken (at the count `next` gave) took `seconds`."""
        self.steps[self.current] += 1
        if self.plan:
            n, timed = self.plan.pop(0)
            if timed:
                self.times[n].append(seconds)
            if not self.plan:
                medians = {n: statistics.median(t) for n, t in self.times.items()}
                choice = min(self.counts, key=lambda n: medians[n])
                self.hold = min(2 * self.hold, self.MAX_HOLD) if choice == self.choice else self.HOLD
                self.choice, self.best, self.left, self.slow = choice, medians[choice], self.hold, 0
            return
        self.left -= 1
        self.slow = self.slow + 1 if seconds > self.SLOWER * self.best else 0
        if self.left <= 0 or self.slow >= 3:
            self._probe()
