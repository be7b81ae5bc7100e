"""Driving a sweep: planning its chunks, running them, reporting progress."""

from __future__ import annotations

from pathlib import Path
import signal
from typing import Any

from training.safeio import atomic_write_bytes
from training.sweeps.executor import failure_reason, make_backend
from training.sweeps.index import existing_status, open_sweep, run_entry, spec_dict
from training.sweeps.spec import INDEX, PlannedRun, STOP_FILE, SweepSpec, plan_chunks


# --- running it: chunks on a backend, the index kept current, Ctrl-C drains ---------------------------------


class Progress:
    """The sweep's index (sweep.json) and its one progress bar, updated as chunks start and finish."""

    def __init__(self, out: Path, spec_d: dict[str, Any], runs: list[PlannedRun], entries: dict[str, dict[str, Any]],
                 progress: bool):
        from tqdm.auto import tqdm

        self.out, self.spec_d, self.runs, self.entries = out, spec_d, runs, entries
        self.running, self.failed = 0, 0
        done = sum(e["status"] == "done" for e in entries.values())
        self.bar = tqdm(total=len(runs), initial=done, desc=out.name, unit="run", disable=not progress,
                        dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix(running=self.running, failed=self.failed, refresh=True)

    def write(self) -> dict[str, Any]:
        from training.safeio import atomic_write_json

        index = {"spec": self.spec_d, "runs": [self.entries[r.name] for r in self.runs]}
        atomic_write_json(self.out / INDEX, index)
        return index

    def started(self, chunk: list[PlannedRun]) -> None:
        for r in chunk:
            self.entries[r.name] = run_entry(r, "running")
        self.running += len(chunk)
        self._postfix()
        self.write()

    def finished(self, chunk: list[PlannedRun], results: list[dict[str, Any]]) -> None:
        self.running -= len(chunk)
        for r, res in zip(chunk, results):
            status = {"not_started": "pending"}.get(res["status"], res["status"])
            self.entries[r.name] = run_entry(r, status, res.get("summary"), res.get("error", ""), res.get("seconds"))
            if status == "failed":
                self.failed += 1
                self.bar.write(f"{r.name}: failed ({res['error']})")
            elif status == "done":
                s = res["summary"]
                self.bar.write(f"{r.name}: S_mem {s.get('S_mem')}, S_gen {s.get('S_gen')} ({res['seconds']:.0f} s)")
            if status in ("done", "failed"):
                self.bar.update(1)
        self._postfix()
        self.write()


def drive(backend, chunks: list[list[PlannedRun]], items_of, stop_file: Path, progress: Progress,
          stop: dict[str, Any]) -> None:
    """Keep at most `backend.capacity()` chunks in flight (nothing waits in a queue that a drain would have to
    empty); once `stop["signal"]` is set, start nothing more, write the stop file and wait for the running chunks
    to save their state and return."""
    queue, in_flight = list(reversed(chunks)), {}
    try:
        while queue or in_flight:
            while queue and stop["signal"] is None and len(in_flight) < backend.capacity():
                chunk = queue.pop()
                in_flight[backend.submit(items_of(chunk), str(stop_file))] = chunk
                progress.started(chunk)
            if stop["signal"] is not None:
                queue.clear()
                if not stop_file.exists():
                    atomic_write_bytes(stop_file, b"drain\n")
            for handle in backend.wait(list(in_flight), timeout=0.5) if in_flight else []:
                chunk = in_flight.pop(handle)
                try:
                    results = backend.result(handle)
                except Exception as e:  # noqa: BLE001  (the worker died: every run of its chunk failed)
                    results = [{"status": "failed", "error": failure_reason(e)}] * len(chunk)
                progress.finished(chunk, results)
    finally:
        if in_flight:  # an error in the driver itself: the workers still drain and save their state
            atomic_write_bytes(stop_file, b"drain\n")
            backend.close()


def sweep(spec: SweepSpec, out: Path, *, backend: Any = "local", workers: int | None = None, threads: int = 1,
          address: str | None = None, seed_fields: tuple[str, ...] = ("seed", "batch_seed"), progress: bool = True,
          log=print) -> dict[str, Any]:
    """Run (or continue) the sweep into `out`; returns the index written to out/sweep.json, with "interrupted".
    `backend` is "local", "ray" or an opened backend object (training.sweeps.executor)."""
    spec, runs = open_sweep(spec, out, list(seed_fields))  # a bad value answers here, before torch is imported
    from training.runs.writer import RunLock

    status = {r.name: existing_status(r, out / r.name) for r in runs}
    if isinstance(backend, str):  # opened (Ray: connected) before anything is created
        backend = make_backend(backend, workers=workers, threads=threads, address=address)
    stop: dict[str, Any] = {"signal": None}
    # From here a signal only asks for a drain: a second one cannot cut the clean-up short.
    handlers = {s: signal.signal(s, lambda signum, frame: stop.update(signal=signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    lock = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out).acquire()  # one driver per sweep directory
        stop_file = out / STOP_FILE
        stop_file.unlink(missing_ok=True)  # left by a driver that was killed while draining
        entries = {r.name: run_entry(r, "done", s) if st == "done" else run_entry(r, "pending")
                   for r, (st, s) in ((r, status[r.name]) for r in runs)}
        todo = [r for r in runs if status[r.name][0] != "done"]
        if todo:
            log(f"{len(todo)} of {len(runs)} runs to go ({len(runs) - len(todo)} already done) on "
                f"{backend.name} with {backend.capacity()} workers")
        prog = Progress(out, spec_dict(spec, list(seed_fields)), runs, entries, progress)
        prog.write()
        chunks = [[todo[i] for i in c] for c in plan_chunks([r.config for r in todo], backend.capacity(), threads)]

        def items_of(chunk: list[PlannedRun]) -> list[dict[str, Any]]:
            return [{"name": r.name, "config": r.config.to_dict(), "dir": str(out / r.name),
                     "resume": status[r.name][0] == "resume", "preset": spec.preset} for r in chunk]

        try:
            drive(backend, chunks, items_of, stop_file, prog, stop)
        finally:
            prog.bar.close()
            stop_file.unlink(missing_ok=True)
        index = prog.write()
    finally:
        backend.close()
        if lock is not None:
            lock.release()
        for s, h in handlers.items():
            signal.signal(s, h)
    index["interrupted"] = stop["signal"] is not None
    return index
