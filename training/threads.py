"""How many torch threads a run trains on, chosen before torch starts its thread pool, and changed with the load.

A second thread pays only while it has a core to itself. Idle, torch's threads (one per core, spinning while they
wait) make even a few-millisecond step faster (default preset 4.8 ms at two threads, 7.3 at one on the 2-core
development machine); beside one busy process a thread that spins while its partner is descheduled makes the same
step several times slower (19 ms). No count fixed in advance wins both, so by default a run trains "by load": each
step at one thread or at one per core, whichever the `Governor` last measured faster, re-measured as it goes.

That is only allowed because it changes no bit. A run's bits could depend on the thread count (a kernel that splits
a sum between threads adds in another order), so before the first step `same_bits` trains two steps and one
evaluation of the run's configs at one thread and at the full count, from scratch, and compares every loss,
gradient, parameter and metric bit for bit. The kernels seen to split a sum between threads (MKL's weight
gradients, a sum over the batch rows, and torch's softmax backward) run on one thread by load
(`training.models.batched`); with them, every preset's bits agree at both counts on the Intel Xeon development
machine. Where they still differ (another CPU, another kernel) the run trains on one thread. Either way its bits
are those of one thread, which config.json's "numerics" records as `"threads": 1` (with `"threads_by_load": N`
when steps ran at 1 or N), so a run trained by load, a run at `--threads 1`, an ensemble member and a sweep's run
(one thread per worker) are the same run.

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


@contextmanager
def stepping_by_load(most: int) -> Iterator[None]:
    """Steps taken in the block are those of a run by load of at most `most` threads (the sums a second thread would
    split kept on one, `training.models.batched`), in a process that set its thread count itself: benchmarks,
    tests."""
    global _by_load
    saved, _by_load = _by_load, most if most > 1 else 0
    try:
        yield
    finally:
        _by_load = saved


def same_bits(make: Callable[[], Any], most: int, steps: int = 2) -> bool:
    """Whether a Trainer from `make()` gives the same bits at one thread and at `most`: `steps` steps (every
    transform and the optimiser included) and one evaluation, each count from a fresh Trainer (the same seeds, so
    the same draws), compared loss, gradient, parameter and metric, bit for bit. The gradients are compared before
    the update, and over two steps: Adam's first update is +-lr whatever the gradient's last bits
    (omnigrok-teacher's 5-row weight gradient rounds differently at two threads here, and its parameters after one
    step do not show it). Kernels pick their code by shape, stride and thread count, and a run's shapes are those of
    its first steps and evaluation."""
    import torch

    before, seen = torch.get_num_threads(), []
    try:
        for n in (1, most):
            torch.set_num_threads(n)
            trainer, tensors = make(), []
            for _ in range(steps):
                tensors += [trainer.backward()] + [g.clone() for g in trainer.grads]
                trainer.apply()
                tensors += [p.detach().clone() for p in trainer.plist]
            seen.append((tensors, repr(trainer.evaluate())))
            del trainer
    finally:
        torch.set_num_threads(before)
    (a, ra), (b, rb) = seen
    return ra == rb and len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


class Governor:
    """Steps at one thread or at `most`, whichever was faster when last measured (`same_bits` has checked that the
    two give the same bits).

    The count it holds is timed by its own steps: the mean of the latest, at least PROBE of them and PROBE_S seconds
    (means, not medians: beside a busy neighbour two threads' steps are mostly fast with a stall every few steps,
    which a median does not see). A probe times the other count the same way, after one untimed step (threads that
    slept wake slowly: 12, 9, then 5 ms for the default preset, 1.6 times one thread's step), and switches when its
    mean is lower; it stops at once when that untimed step takes WARM_ABORT times the held mean (two spinning
    threads beside a busy neighbour take 2-8 times one thread's step: a probe then costs one step), or after its
    first timed step when that is ABORT times the held mean or more. The count then holds for `factor` times the
    probe's time, the factor doubling from HOLD to MAX_HOLD while probes keep the count (a long run spends under 1%
    of its time probing).
    A held step three times in a row SLOWER times the mean it was chosen at means the load changed: probe at once."""

    PROBE, PROBE_S, HOLD, MAX_HOLD, SLOWER, ABORT, WARM_ABORT = 3, 0.02, 8, 256, 2.0, 1.5, 2.0

    def __init__(self, most: int, set_threads: Callable[[int], None]):
        self.counts, self.set_threads = (most, 1), set_threads
        self.current, self.choice, self.factor = 0, 1, self.HOLD  # one thread first: never slower while it learns
        self.recent: list[float] = []  # the held count's latest step times
        self.ref, self.slow, self.left = 0.0, 0, 0.0  # its mean when chosen; slow steps in a row; seconds to hold
        self.probing, self.probed, self.probe_s = False, [], 0.0
        self.warm = True  # the next step is the first at a count: not timed
        self.steps = {n: 0 for n in self.counts}  # this process's steps at each count (summary.json)

    @property
    def other(self) -> int:
        return self.counts[1] if self.choice == self.counts[0] else self.counts[0]

    def next(self) -> int:
        """The count for the next step, set."""
        n = self.other if self.probing else self.choice
        if n != self.current:
            self.set_threads(n)
            self.current, self.warm = n, True
        return n

    def timed(self, seconds: float) -> None:
        """The step just taken (at the count `next` gave) took `seconds`."""
        self.steps[self.current] += 1
        warm, self.warm = self.warm, False
        if self.probing:
            return self._probed(seconds, warm)
        self.left -= seconds
        if warm:
            return
        self.recent = _window(self.recent + [seconds], self.PROBE, self.PROBE_S)
        self.slow = self.slow + 1 if self.ref and seconds > self.SLOWER * self.ref else 0
        if _full(self.recent, self.PROBE, self.PROBE_S) and (self.left <= 0 or self.slow >= 3):
            self.probing, self.probed, self.probe_s, self.slow = True, [], 0.0, 0

    def _probed(self, seconds: float, warm: bool) -> None:
        self.probe_s += seconds
        held = statistics.fmean(self.recent)
        if not warm:
            self.probed.append(seconds)
        first = warm or len(self.probed) == 1  # the warm-up step or the first timed one: stop if clearly slower
        aborted = first and seconds >= (self.WARM_ABORT if warm else self.ABORT) * held
        if not aborted and not _full(self.probed, self.PROBE, self.PROBE_S):
            return
        if not aborted and statistics.fmean(self.probed) < held:
            self.choice, self.recent, self.factor = self.other, self.probed, self.HOLD
        else:
            self.factor = min(2 * self.factor, self.MAX_HOLD)
        self.probing, self.left, self.ref = False, self.factor * self.probe_s, statistics.fmean(self.recent)


def _full(times: list[float], steps: int, seconds: float) -> bool:
    return len(times) >= steps and sum(times) >= seconds


def _window(times: list[float], steps: int, seconds: float) -> list[float]:
    """The latest of `times` that still make at least `steps` steps and `seconds` seconds."""
    while len(times) > steps and sum(times[1:]) >= seconds:
        times = times[1:]
    return times
