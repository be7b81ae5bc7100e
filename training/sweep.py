"""`python -m training.sweep`: a grid of configs over several seeds, on local worker processes or on Ray.

    python -m training.sweep --sweep frac --out checkpoints/frac                  # a named sweep (SWEEPS below)
    python -m training.sweep --preset parity-blog --grid wd_after_memorisation=0.01,0.1,1 \\
        --seeds 0 1 2 --steps 4000 --stop-after-gen 0 --out checkpoints/wd       # any grid; config flags as in training.run
    python -m training.sweep --sweep frac --backend ray --address auto             # on a running Ray cluster

A sweep may also name *variants* (methods): a label and the flat config overrides that make it, e.g.
`perp-adamw = {perp_grad: true, wd: 0}`; every variant runs at every grid point and seed, its overrides applied
over the sweep's fixed fields (a variant that sets `wd` wins over `--wd`). `--methods A,B` keeps some of them.

Every run is a normal run directory under the sweep directory, named after its method, grid point and seed
(`wd_after_memorisation=0.1_seed=2/`, `method=perp-adamw_frac=0.3_seed=0/`), so every analysis works on it. `sweep.json` indexes them: the spec (preset,
overrides, grid, variants, seeds) and one entry per run (its method, if any, in "method" and in "params") with its status and headline numbers, rewritten as runs finish.

Running the command again on the same --out continues the sweep: runs that reached their configured steps
(`rundir.run_finished`) are kept, interrupted ones resumed from their saved state; it may add grid values or seeds
(they join those already there). Ctrl-C (or SIGTERM) drains: no queued run starts, running runs save their resume
state, the index is written, exit 130; a second Ctrl-C changes nothing. A run that fails does not stop the others;
failed runs are listed at the end with their reason and the exit status is 1.

The runs are grouped into *chunks* (`plan_chunks`), each trained by one worker (`training.sweep_exec`).
A seed s sets every field in --seed-fields (default: the init seed and the minibatch seed) to s.
Each worker runs on --threads torch threads (default 1: on a small CPU, one thread per process beats several
processes fighting over cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.cli import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, MAX_INT, Parser, main_entry, nonneg_int,
                          positive_int, require)
from training.config import FIELD_SECTION, ConfigError, RunConfig, parse_value, validate
from training.constants import CKPT_DIR, LOCK, STATE_DIR, STATE_PATH, SWEEP_CKPT, SWEEP_INDEX, SWEEP_STOP
from training.errors import RunDirError
from training.safeio import atomic_write_bytes
from training.sweep_exec import failure_reason, make_backend
from training.presets import PRESETS, get_preset
from training.registry import transform_specs

INDEX = SWEEP_INDEX
STOP_FILE = SWEEP_STOP
STATE = STATE_PATH


MAX_RUNS = 10_000  # a typo such as --seeds $(seq 0 100000) is refused before anything is planned or built
METHOD = "method"  # the key a variant's label is stored under, in each run's params and index entry
LABEL = re.compile(r"[a-z0-9][a-z0-9.+-]*")  # a label is part of a directory name


@dataclass(frozen=True)
class SweepSpec:
    """A named sweep: a preset, flat config overrides, a grid (field -> values), seeds, and optionally named
    variants (method label -> flat config overrides), each run at every grid point and seed."""

    preset: str
    grid: dict[str, list[Any]]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


# The sweeps keep small checkpoint budgets (SWEEP_CKPT): a sweep wants S_mem / S_gen, not dense checkpoints
# (analyse single runs for that).
SWEEPS: dict[str, SweepSpec] = {
    # H1 (Fuangkawinsombut and Somsirivattana's blog "Grokking"): raising weight decay once the training set is
    # memorised speeds up generalisation, up to a threshold past which nothing generalises. parity-blog, wd 0.01 until
    # 100% train acc.
    "h1": SweepSpec("parity-blog", {"wd_after_memorisation": [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.3, 1.0]},
                    overrides={"steps": 5000, "stop_after_gen": 0, "eval_every": 10, **SWEEP_CKPT},
                    doc="H1: weight decay switched on at memorisation (parity-blog)"),
    # H2: a fraction p_t of flipped training labels slows generalisation, up to a threshold.
    "h2": SweepSpec("parity-blog", {"label_noise": [0.0, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2]},
                    overrides={"steps": 10000, "stop_after_gen": 0, "eval_every": 10, **SWEEP_CKPT},
                    doc="H2: fraction of flipped training labels (parity-blog)"),
    # Steps to generalise against the training fraction (Power et al. 2022, fig. 1 right): the `default` preset,
    # 3 seeds; each run stops at S_gen, so only the fractions that do not generalise use the whole budget.
    "frac": SweepSpec("default", {"frac": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]},
                      overrides={"steps": 3000, "stop_after_gen": 0, **SWEEP_CKPT},
                      doc="S_gen against the training fraction (default preset)"),
}


def accel_methods(batch_size: int, sgd_lr: float = 0.1) -> dict[str, dict[str, Any]]:
    """The accelerator comparison: baselines (Power et al. 2022's optimisers and regularisers) and the methods that
    claim to remove the delay, each as overrides of a base config whose optimiser is AdamW with weight decay.
    `batch_size`: the other batch size of the batch-size baseline: a minibatch when the base trains full batch
    ("adamw-minibatch"), 0 when the base trains on minibatches ("adamw-full-batch")."""
    other = {"adamw-minibatch" if batch_size else "adamw-full-batch": {"batch_size": batch_size}}
    return {
        "adamw": {},  # the base itself: the reference every speed-up is against
        **other,
        "adam-no-wd": {"optimizer": "adam", "wd": 0.0},
        "sgd-momentum": {"optimizer": "sgd", "lr": sgd_lr, "momentum": 0.9, "wd": 0.0},
        "dropout": {"dropout": 0.1},
        # each transform's own methods (weight noise, Grokfast, ⊥AdamW, decay to init, the norm constraint)
        **{label: over for spec in transform_specs() for label, over in spec.methods.items()},
        "stablemax": {"loss": "stablemax", "wd": 0.0},
        "stablemax-wd": {"loss": "stablemax"},
        "stablemax-perp": {"loss": "stablemax", "perp_grad": True, "wd": 0.0},
    }


# (x+y) mod 97 on a model a shared 2-core CPU trains 42 times: per-operand embeddings of 64, one ReLU layer of 256,
# an unembedding (the "mlp" model); AdamW lr 3e-3 wd 1 on minibatches of 512 as Power et al. (full batch is one
# of the methods). Full batch at frac 0.5 it memorises by ~400 steps and reaches 87% test accuracy by 900 (seed
# 0); half as wide, it had not memorised after 800 minibatch steps.
_BUDGET_TASK = {"p": 97, "model": "mlp", "n_layers": 1, "d_model": 64, "d_mlp": 256, "lr": 3e-3, "wd": 1.0,
                "batch_size": 512}

SWEEPS.update({
    # Every method of issue 13 against plain AdamW on the `default` preset, 3 seeds, stopping at S_gen.
    "accel": SweepSpec("default", {}, overrides={"steps": 1500, "stop_after_gen": 0, **SWEEP_CKPT},
                       variants=accel_methods(128), doc="regularisers and accelerators (default preset)"),
    # The same on Nanda et al.'s setup, 3 seeds. Every method gets 1500 steps (the methods that claim to remove the
    # delay should need far fewer); plain AdamW, the reference, runs until it generalises (~6-10k steps here), so
    # each speed-up is against its measured S_gen, or bounded by it (a method that did not generalise within its
    # 1500 steps is at most S_gen(adamw) / 1500 times faster). A full-batch step is ~80 ms on one CPU thread.
    "accel-nanda": SweepSpec("nanda2023", {}, overrides={"steps": 1500, "stop_after_gen": 0, **SWEEP_CKPT},
                             variants={**accel_methods(512), "adamw": {"steps": 15000}},
                             doc="regularisers and accelerators (nanda2023; 1500 steps, adamw until it generalises)"),
    # Hu, Zhou and Yu, "Exploring Grokking" (2023), Figure 5: final test accuracy within 1800 steps against the training
    # fraction, (x+y) mod 97. Runs stop once generalised (their final accuracy is then >= 99%).
    "accel-budget": SweepSpec("default", {"frac": [0.3, 0.5, 0.7]}, seeds=[0],
                              overrides={**_BUDGET_TASK, "steps": 1800, "eval_every": 100, "stop_after_gen": 0,
                                         **SWEEP_CKPT},
                              variants=accel_methods(0), doc="final test accuracy within 1800 steps, (x+y) mod 97"),
})


# --- the plan: one RunConfig per (grid point, seed), grouped into chunks --------------------------------------


def fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class PlannedRun:
    name: str
    params: dict[str, Any]  # the grid point, with the method label under METHOD when the sweep has variants
    seed: int
    config: RunConfig


def check_variants(spec: SweepSpec) -> None:
    """Labels fit a directory name; a variant sets known config fields, none of them swept by the grid."""
    for label, over in spec.variants.items():
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise ConfigError(f"method label '{label}': use lower-case letters, digits, '.', '+' and '-'")
        if not isinstance(over, dict):
            raise ConfigError(f"method {label}: its overrides must be an object of config fields")
        bad = [f for f in over if f not in FIELD_SECTION]
        if bad:
            raise ConfigError(f"method {label}: unknown config field(s) {', '.join(bad)}")
        clash = sorted(set(over) & set(spec.grid))
        if clash:
            raise ConfigError(f"method {label} sets {', '.join(clash)}, which the grid sweeps")


def n_runs(spec: SweepSpec) -> int:
    return max(len(spec.variants), 1) * math.prod(len(v) for v in spec.grid.values()) * len(spec.seeds)


def plan(spec: SweepSpec, seed_fields: list[str]) -> list[PlannedRun]:
    check_variants(spec)
    if n_runs(spec) > MAX_RUNS:
        raise ConfigError(f"a sweep of {n_runs(spec)} runs is more than the {MAX_RUNS} one sweep directory holds; "
                          "split it into several sweeps (--out)")
    base = get_preset(spec.preset).replace(**spec.overrides)
    names = list(spec.grid)
    runs = []
    for label, over in (spec.variants or {None: {}}).items():
        for values in itertools.product(*(spec.grid[n] for n in names)):
            point = dict(zip(names, values))
            params = {METHOD: label, **point} if label is not None else point
            for s in spec.seeds:
                cfg = base.replace(**{**over, **point, **{f: s for f in seed_fields}})
                name = "_".join(f"{n}={v if n == METHOD else fmt(v)}" for n, v in params.items()) + f"_seed={s}"
                runs.append(PlannedRun(name.replace("/", "_over_"), params, s, cfg))
    return runs


def check_all(runs: list[PlannedRun]) -> None:
    """Every config is valid, before anything is written (as training.run does for one): the cheap checks on
    every run first, so a bad value answers before torch is imported; then the task and model of each."""
    for r in runs:
        try:
            validate(r.config)
        except ConfigError as e:
            raise ConfigError(f"{r.name}: {e}") from None
    from dataclasses import asdict

    from training.run import check

    checked = set()
    for r in runs:
        key = json.dumps([asdict(r.config.task), asdict(r.config.model)], sort_keys=True, default=str)
        if key in checked:  # the task and model a config builds depend on these alone (seeds do not change them)
            continue
        try:
            check(r.config)
        except ConfigError as e:
            raise ConfigError(f"{r.name}: {e}") from None
        checked.add(key)


def plan_chunks(configs: list[RunConfig], workers: int, threads: int) -> list[list[int]]:
    """Indices of `configs` grouped into chunks, each trained by one worker as one ensemble: shape-compatible
    runs, grouped only where a measured step says an ensemble pays (`training.ensemble.plan_chunks`), never more
    members per chunk than keeps every worker busy, and never more than fit in memory (`training.memory`)."""
    from training.ensemble import plan_chunks as ensemble_chunks
    from training.memory import members_that_fit

    per_worker = max(1, -(-len(configs) // max(workers, 1)))
    fit = members_that_fit(configs)
    return ensemble_chunks(configs, max_members=per_worker if fit is None else min(per_worker, fit), threads=threads)


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
    from training.rundir import Run, is_run_dir, run_finished

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
        from training.rundir import atomic_write_json

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
    `backend` is "local", "ray" or an opened backend object (training.sweep_exec)."""
    spec, runs = open_sweep(spec, out, list(seed_fields))  # a bad value answers here, before torch is imported
    from training.rundir import RunLock

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


# --- command line --------------------------------------------------------------------------------------------


def parse_field_value(name: str, text: str, flag: str) -> Any:
    """A config field's value from the command line: its type, and a finite number that fits 64 bits."""
    v = parse_value(name, text.strip())
    if isinstance(v, float) and not math.isfinite(v) or isinstance(v, int) and abs(v) > MAX_INT:
        raise ConfigError(f"{flag}: {name} must be a finite number, got '{text.strip()}'")
    return v


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects NAME=V1,V2,..., got '{item}'")
        name, values = item.split("=", 1)
        name = name.strip().lstrip("-").replace("-", "_")
        if name not in FIELD_SECTION:
            raise ConfigError(f"--grid: unknown config field '{name}'")
        if name in grid:
            raise ConfigError(f"--grid {name} given twice")
        vals: list[Any] = []
        for text in (v for v in values.split(",") if v.strip()):
            v = parse_field_value(name, text, "--grid")
            if v not in vals:  # a value twice would name two runs alike
                vals.append(v)
        if not vals:
            raise ConfigError(f"--grid {name}: no values")
        grid[name] = vals
    return grid


def make_parser() -> Parser:
    p = Parser(prog="python -m training.sweep", description="Run a grid of configs over several seeds.",
               epilog="Named sweeps: " + "; ".join(f"{k} = {v.doc}" for k, v in SWEEPS.items()))
    p.add_argument("--sweep", default=None, help=f"a named sweep: {', '.join(SWEEPS)}")
    p.add_argument("--preset", default=None, help=f"base config: {', '.join(PRESETS)} (default: the sweep's, or 'default')")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a config field and its values (repeat for a product grid)")
    p.add_argument("--seeds", type=nonneg_int, nargs="+", default=None, help="seeds (default: the sweep's, or 0 1 2)")
    p.add_argument("--methods", default=None, metavar="A,B,...",
                   help="only these of the sweep's methods (variants), e.g. adamw,grokfast-ema")
    p.add_argument("--seed-fields", default="seed,batch_seed", help="config fields a seed sets")
    p.add_argument("--out", type=Path, default=None, help="sweep directory (default: checkpoints/sweep-<name>)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local worker processes, or Ray (pip install -e .[ray]; shared filesystem)")
    p.add_argument("--address", default=None, help="Ray: auto or HOST:PORT of a running cluster (default: start "
                   "a local Ray instance)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="chunks trained at once (default: 2 local; Ray: the cluster's CPUs / --threads)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker")
    p.add_argument("--no-progress", action="store_true")
    for name in FIELD_SECTION:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="V", help=argparse.SUPPRESS)
    return p


def pick_methods(variants: dict[str, dict[str, Any]], text: str | None) -> dict[str, dict[str, Any]]:
    if text is None:
        return variants
    require(bool(variants), "--methods: this sweep has no methods (variants); name one with --sweep")
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in variants]
    require(not bad, f"--methods: unknown method(s) {', '.join(bad)} (choose from {', '.join(variants)})")
    require(bool(names), "--methods: give at least one method")
    return {m: variants[m] for m in variants if m in names}


def spec_from_args(args) -> tuple[SweepSpec, str]:
    require(args.sweep is None or args.sweep in SWEEPS,
            f"unknown sweep '{args.sweep}' (choose from {', '.join(SWEEPS)})")
    base = SWEEPS[args.sweep] if args.sweep else SweepSpec(args.preset or "default", {})
    preset = args.preset or base.preset
    get_preset(preset)
    grid = {**base.grid, **parse_grid(args.grid)}
    variants = pick_methods(base.variants, args.methods)
    require(bool(grid) or bool(variants), "nothing to sweep: give --sweep NAME or --grid NAME=V1,V2,...")
    overrides = {**base.overrides, **{n: parse_field_value(n, getattr(args, n), f"--{n.replace('_', '-')}")
                                      for n in FIELD_SECTION if getattr(args, n) is not None}}
    clash = set(overrides) & set(grid)
    require(not clash, f"{', '.join(sorted(clash))} is both swept and fixed")
    seeds = args.seeds if args.seeds is not None else base.seeds
    require(bool(seeds), "--seeds: need at least one seed")
    name = args.sweep or "-".join(grid)
    spec = SweepSpec(preset, grid, sorted(set(seeds)), overrides, base.doc, variants)
    check_variants(spec)
    return spec, name


def body(args) -> int:
    spec, name = spec_from_args(args)
    seed_fields = [f.strip() for f in args.seed_fields.split(",") if f.strip()]
    bad = [f for f in seed_fields if f not in FIELD_SECTION]
    require(not bad, f"--seed-fields: unknown config field(s) {', '.join(bad)}")
    require(args.address is None or args.backend == "ray", "--address is for --backend ray")
    out = args.out if args.out is not None else Path("checkpoints") / f"sweep-{name}"
    t0 = time.perf_counter()
    index = sweep(spec, out, backend=args.backend, workers=args.workers, threads=args.threads, address=args.address,
                  seed_fields=tuple(seed_fields), progress=not args.no_progress)
    print(table(index))
    runs = index["runs"]
    n_done = sum(r["status"] == "done" for r in runs)
    print(f"{n_done}/{len(runs)} runs done in {time.perf_counter() - t0:.0f} s: {out / INDEX}")
    failed = [r for r in runs if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} failed:\n" + "\n".join(f"  {r['name']}: {r.get('error', '?')}" for r in failed))
    if index.get("interrupted"):
        print("interrupted; run the same command again to continue")
        return EXIT_INTERRUPTED
    if failed:
        return EXIT_FAILED
    print(f"analyse: python -m analyses.sweep {out}")
    return EXIT_OK


def _median(v: list[int]) -> str:
    import statistics

    return f"{statistics.median(v):.0f}" if v else "-"


def table(index: dict[str, Any]) -> str:
    """Per grid point (and method): runs done, how many generalised, median S_mem and S_gen (analyses.sweep
    says more)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in index["runs"]:
        groups.setdefault(", ".join(f"{k}={fmt(v)}" for k, v in r["params"].items()), []).append(r)
    lines = [f"{'grid point':<36} {'done':>5} {'gen':>5} {'S_mem':>8} {'S_gen':>8}"]
    for point, rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        gen = [r["S_gen"] for r in done if r.get("S_gen") is not None]
        mem = [r["S_mem"] for r in done if r.get("S_mem") is not None]
        lines.append(f"{point:<36} {len(done):>2}/{len(rs):<2} {len(gen):>5} {_median(mem):>8} {_median(gen):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return main_entry("training.sweep", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
