"""Where a sweep's runs are trained: the chunk executor (worker side) and the backends that run it.

A *chunk* is a list of planned runs that one worker trains; each item is plain data (so it crosses a process or a
Ray task boundary): `{"name", "config" (RunConfig.to_dict()), "dir", "resume", "preset"}`. `execute_chunk` creates
and locks the run directories, trains them (`train_chunk`, the one place that calls the training code) and returns
one result per item: `{"status": "done" | "interrupted" | "failed" | "not_started", "summary", "error", "seconds"}`.

Draining (Ctrl-C, SIGTERM) works the same on every backend: the driver writes a stop file into the sweep
directory (a shared filesystem is assumed for Ray as well), and each executor, which watches for it, sends its own
process SIGINT. The training loop takes that as its Ctrl-C (finish the step, save the resume state, return), and
the executor starts nothing more. A signal rather than a call, because the loop already owns that path.

A driver that dies, however it dies (SIGKILL included), takes its workers with it: an executor whose parent
process changed (the driver, or Ray's raylet, is gone) drains as if the stop file were there, a local pool worker
then exits (it would otherwise wait for work forever, keeping its resource tracker alive too), and a Ray instance
the driver started is ended by a watcher process (`training.reaper`), since Ray leaves its agents running then.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from training.errors import ConfigError

POLL_S = 0.2  # how often an executor looks for the stop file; a drain costs at most this plus one training step
_BUSY = threading.Lock()  # held while this process trains a chunk: a worker whose driver died exits between chunks


# --- worker side ---------------------------------------------------------------------------------------------


class DrainWatch:
    """While a chunk runs: `requested` is set by SIGINT/SIGTERM or by the stop file, and once the stop file is
    there SIGINT is re-sent to this process every POLL_S, so a training loop that installs its handler after the
    first one (it was still building its model) is stopped too. Ray blocks SIGINT in its workers: unblocked here,
    and the mask restored on exit."""

    def __init__(self, stop_file: str | None):
        self.stop_file = Path(stop_file) if stop_file else None
        self.parent = os.getppid()  # the driver (local pool) or the raylet (Ray): when it changes, it died
        self.requested = self._asked()  # a task that started late
        self._done = threading.Event()

    def _asked(self) -> bool:
        return (self.stop_file is not None and self.stop_file.exists()) or os.getppid() != self.parent

    def __enter__(self) -> "DrainWatch":
        self._mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM])
        self._handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _on_signal(self, signum, frame) -> None:
        self.requested = True

    def _watch(self) -> None:
        while not self._done.wait(POLL_S):
            if self._asked():
                self.requested = True
                os.kill(os.getpid(), signal.SIGINT)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        for s, h in self._handlers.items():
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)


def train_chunk(items: list[dict[str, Any]], paths: list[Path], drain: DrainWatch) -> list[Any]:
    """Train the chunk's runs into their (created, locked) directories as one ensemble: one summary dict per
    item (an exception from the ensemble fails the whole chunk, which execute_chunk reports per run); None for
    every run when a drain was asked for before it started."""
    from training.config import RunConfig, validate
    from training.ensemble import train_ensemble
    from training.loop import pick_device

    if drain.requested:
        return [None] * len(items)
    results: list[Any] = [None] * len(items)
    ok = []
    for i, item in enumerate(items):  # a run that cannot start here fails alone, not its whole ensemble
        try:
            cfg = RunConfig.from_dict(item["config"])
            validate(cfg)
            pick_device(cfg.train.device)
            ok.append((i, cfg))
        except Exception as e:  # noqa: BLE001
            results[i] = e
    if ok:
        summaries = train_ensemble([c for _, c in ok], [paths[i] for i, _ in ok],
                                   resume=[items[i]["resume"] for i, _ in ok], progress=False,
                                   preset=items[0]["preset"], log=lambda s: None)
        for (i, _), summary in zip(ok, summaries):
            results[i] = summary
    return results


def failure_reason(e: BaseException) -> str:
    """An exception as the reason a failed run is listed with: its type and the first line of its message
    (`training.cli.one_line` is another thing: a message with its control characters escaped)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _result(item_result: Any, seconds: float) -> dict[str, Any]:
    if item_result is None:
        return {"status": "not_started"}
    if isinstance(item_result, BaseException):
        return {"status": "failed", "error": failure_reason(item_result)}
    status = "interrupted" if item_result.get("interrupted") else "done"
    return {"status": status, "summary": item_result, "seconds": round(seconds, 2)}


def execute_chunk(items: list[dict[str, Any]], stop_file: str | None = None, threads: int = 1) -> list[dict[str, Any]]:
    """Run one chunk in this process (a pool worker or a Ray task); see the module docstring."""
    import torch

    from training.runs.writer import RunLock

    torch.set_num_threads(threads)
    results: list[dict[str, Any] | None] = [None] * len(items)
    locks, locked = [], []
    t0 = time.perf_counter()
    with _BUSY, DrainWatch(stop_file) as drain:
        if drain.requested:  # queued (Ray) before the drain: create nothing
            return [{"status": "not_started"} for _ in items]
        try:
            for i, item in enumerate(items):
                try:
                    Path(item["dir"]).mkdir(parents=True, exist_ok=True)
                    locks.append(RunLock(Path(item["dir"])).acquire())
                    locked.append(i)
                except Exception as e:  # noqa: BLE001  (e.g. another process is writing this run)
                    results[i] = {"status": "failed", "error": failure_reason(e)}
            try:
                outcome = train_chunk([items[i] for i in locked], [Path(items[i]["dir"]) for i in locked], drain)
            except Exception as e:  # noqa: BLE001  (an ensemble failing as a whole)
                outcome = [e] * len(locked)
            seconds = (time.perf_counter() - t0) / max(len(locked), 1)  # the chunk's time, shared by its runs
            for i, r in zip(locked, outcome):
                results[i] = _result(r, seconds)
        finally:
            for lock in locks:
                lock.release()
    return results  # every slot is filled above


def init_local_worker(threads: int, driver: int | None = None) -> None:
    """A pool worker between chunks ignores Ctrl-C (the driver drains through the stop file); during a chunk
    DrainWatch and the training loop handle it. Once its driver is gone it exits (after draining its chunk)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if driver is not None:
        threading.Thread(target=_exit_without, args=(driver,), daemon=True).start()


def _exit_without(driver: int) -> None:
    while os.getppid() == driver:
        time.sleep(POLL_S)
    with _BUSY:  # a chunk in progress drains first (DrainWatch saw the driver go too)
        os._exit(130)


# --- driver side: backends -----------------------------------------------------------------------------------


class LocalBackend:
    """Worker processes on this machine (spawned: no fork of a process holding torch threads)."""

    name = "local"

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        self._pool = None

    def capacity(self) -> int:
        return self.workers

    def _ensure_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=init_local_worker, initargs=(self.threads, os.getpid()))
        return self._pool

    def submit(self, items: list[dict[str, Any]], stop_file: str):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._ensure_pool().submit(execute_chunk, items, stop_file, self.threads)
        except BrokenProcessPool:  # a worker died (killed, out of memory): its chunk failed, start a fresh pool
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return self._ensure_pool().submit(execute_chunk, items, stop_file, self.threads)

    def wait(self, handles: list, timeout: float) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(handles, timeout=timeout, return_when=FIRST_COMPLETED).done)

    def result(self, handle) -> list[dict[str, Any]]:
        return handle.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _check_reachable(address: str) -> None:
    """An unreachable HOST:PORT makes ray.init retry for about a minute and log many lines: refuse it at once."""
    import socket

    host, _, port = address.rpartition(":")
    host = host.split("://", 1)[-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address must be auto or HOST:PORT, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: no Ray cluster reachable there ({e.strerror or e})") from None


class RayBackend:
    """One Ray task per chunk. Without --address a local Ray instance is started (and stopped at the end); with
    one, the driver joins that cluster. Every node must see the sweep directory at the same path."""

    name = "ray"

    def __init__(self, address: str | None, threads: int, workers: int | None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray: ray is not installed (pip install -e .[ray])") from None
        import logging

        self.ray, self.threads, self._started, self._reaper = ray, threads, False, None
        if not ray.is_initialized():
            if address is not None and address != "auto":
                _check_reachable(address)
            if address is None:  # a local instance of our own: it must not outlive this driver
                from training.reaper import Reaper

                self._reaper = Reaper()
            try:
                ray.init(address=address, num_cpus=None if address else (workers or 2) * threads,
                         include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            except (OSError, RuntimeError, ValueError) as e:
                self.close()
                raise ConfigError(f"--backend ray: cannot connect to Ray at {address} ({failure_reason(e)})") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, cpus // threads)
        self._remote = ray.remote(num_cpus=threads, max_retries=0)(execute_chunk)

    def capacity(self) -> int:
        return self.workers

    def submit(self, items: list[dict[str, Any]], stop_file: str):
        return self._remote.remote(items, stop_file, self.threads)

    def wait(self, handles: list, timeout: float) -> list:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return ready

    def result(self, handle) -> list[dict[str, Any]]:
        return self.ray.get(handle)

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None


def make_backend(name: str, *, workers: int | None, threads: int, address: str | None):
    """The backend, opened (Ray: imported and connected) before the sweep directory is created."""
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --backend ray")
        return LocalBackend(workers or 2, threads)
    if name == "ray":
        return RayBackend(address, threads, workers)
    raise ConfigError(f"--backend must be local or ray, got '{name}'")
