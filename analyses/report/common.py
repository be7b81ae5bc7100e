"""What the report's sections share (analyses.report): the context a section runs in (scale, where its runs and
figures go, the sweep backend), checks and the verdict rule, tables, and reading a sweep's runs.

Imports nothing heavy: `python -m analyses.report --help`, bad flags and `--dry-run` answer before torch loads.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from training.constants import SWEEP_CKPT  # noqa: F401  (re-exported)
from training.errors import GrokscopeError
from training.sweeps.spec import SweepSpec

SCALES = ("smoke", "cpu", "gpu")
VERDICTS = ("reproduced", "partly", "not", "not run")
# Small checkpoint budgets for sweeps (training.constants.SWEEP_CKPT, as training.sweep's named sweeps): they want
# S_mem / S_gen, not dense checkpoints; a run a probe reads over its checkpoints keeps its preset's policy.
SMOKE_CKPT = {"ckpt_floor": 4, "ckpt_max": 6}


class SectionSkipped(GrokscopeError):
    """A section that cannot run here (a task, sweep or analysis that has not landed): 'not run: <reason>'."""


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "header": self.header, "rows": [[cell(v) for v in r] for r in self.rows]}


def cell(v: Any) -> str:
    """A table cell: None as '-', floats with 4 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


@dataclass
class Outcome:
    """What a section's runner returns: figures (file name under the report folder, caption: what to look at),
    tables, the evidence its checks read (per seed), numbers, notes."""

    figures: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    evidence: dict[Any, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def figure(self, name: str | None, caption: str) -> None:
        if name:
            self.figures.append((name, caption))

    def seed(self, s: Any) -> dict[str, Any]:
        """One seed's evidence (created empty, with no generalised run)."""
        return self.evidence.setdefault(s, {"generalised": 0})


@dataclass
class Ctx:
    """Where one report invocation trains and writes: runs under root/<scale>/<section>/, figures into out."""

    scale: str
    root: Path
    out: Path
    backend: str = "local"
    workers: int = 2
    data_path: str = ""
    progress: bool = False
    log: Callable[[str], None] = print
    _backend: Any = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per section: runs reused / trained
    sweeps: dict[str, list[Path]] = field(default_factory=dict)  # per section: its sweep directories

    def backend_for_sweeps(self) -> Any:
        """One backend (one pool of worker processes) for all of the report's sweeps: a worker imports torch once,
        not once per sweep. `training.sweeps.drive.sweep` closes the backend it is given after each sweep; this one
        closes only with the report (`close`)."""
        if self._backend is None:
            from training.sweeps.executor import make_backend

            self._backend = SharedBackend(make_backend(self.backend, workers=self.workers, threads=1, address=None))
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.inner.close()
            self._backend = None

    def run_root(self, section: str) -> Path:
        return self.root / self.scale / section

    def sweep(self, section: str, name: str, spec: SweepSpec) -> list[dict[str, Any]]:
        """Train (or reuse: training.sweep skips finished runs, resumes interrupted ones) one sweep under
        root/<scale>/<section>/<name>; returns its rows (analyses.sweep_stats.read_run, + "dir") for the spec's own
        grid values and seeds (a directory may hold more, from another invocation)."""
        from training.runs.format import run_finished
        from training.sweeps.drive import sweep
        from training.sweeps.spec import plan

        path = self.run_root(section) / name
        self.sweeps.setdefault(section, []).append(path)
        planned = plan(spec, ["seed", "batch_seed"])
        reused = sum(run_finished(path / r.name) for r in planned)
        c = self.counts.setdefault(section, {"reused": 0, "trained": 0})
        c["reused"], c["trained"] = c["reused"] + reused, c["trained"] + len(planned) - reused
        t0 = time.perf_counter()
        index = sweep(spec, path, backend=self.backend_for_sweeps(), threads=1, progress=self.progress,
                      log=lambda m: self.log(f"  {section}/{name}: {m}"))
        if index.get("interrupted"):
            raise KeyboardInterrupt
        if reused < len(planned):
            record_training(self.run_root(section), name, time.perf_counter() - t0, len(planned) - reused,
                            fresh=reused == 0)
        return sweep_rows(path, index, spec)

    def training_wall(self, section: str) -> dict[str, Any]:
        """The wall time the section's runs took to train, summed over the invocations that trained them."""
        return training_wall(self.run_root(section))

    def figure(self, section: str, name: str) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / f"{section}_{name}"

    def copy_figure(self, section: str, src: Path) -> str | None:
        """Copy an analysis' PNG (written under its run directory) beside the report; its new file name."""
        if not src.is_file():
            return None
        dst = self.figure(section, src.name)
        shutil.copyfile(src, dst)
        return dst.name


TIMING = "report_training.json"  # per section folder: the wall time of the sweeps that trained its runs


def record_training(section_root: Path, sweep_name: str, wall_s: float, trained: int, fresh: bool) -> None:
    """Add one sweep call's training wall time to the section's record (restarted when every run is new)."""
    from training.safeio import atomic_write_bytes

    path = section_root / TIMING
    try:
        rec = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        rec = {}
    old = {"wall_s": 0.0, "runs_trained": 0} if fresh else rec.get(sweep_name, {"wall_s": 0.0, "runs_trained": 0})
    rec[sweep_name] = {"wall_s": round(old["wall_s"] + wall_s, 1), "runs_trained": old["runs_trained"] + trained}
    atomic_write_bytes(path, (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode())


def training_wall(section_root: Path) -> dict[str, Any]:
    path = section_root / TIMING
    try:
        rec = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        rec = {}
    return {"wall_s": round(sum(v["wall_s"] for v in rec.values()), 1),
            "runs_trained": sum(v["runs_trained"] for v in rec.values()), "sweeps": rec}


class SharedBackend:
    """A sweep backend (training.sweeps.executor) whose `close` is left to its owner (Ctx.close)."""

    def __init__(self, inner: Any):
        self.inner, self.name = inner, inner.name

    def capacity(self) -> int:
        return self.inner.capacity()

    def submit(self, items: list[dict[str, Any]], stop_file: str) -> Any:
        return self.inner.submit(items, stop_file)

    def wait(self, handles: list, timeout: float) -> list:
        return self.inner.wait(handles, timeout)

    def result(self, handle: Any) -> list[dict[str, Any]]:
        return self.inner.result(handle)

    def close(self) -> None:
        pass


def sweep_rows(path: Path, index: dict[str, Any], spec: SweepSpec) -> list[dict[str, Any]]:
    from analyses.sweep_stats import read_run

    rows = []
    for e in index["runs"]:
        if e["seed"] in spec.seeds and all(e["params"].get(k) in v for k, v in spec.grid.items()):
            rows.append({**read_run(path, e), "dir": path / e["dir"], "status": e.get("status")})
    return rows


def failed_note(rows: list[dict[str, Any]]) -> list[str]:
    bad = [r for r in rows if not r["finished"]]
    return [f"{len(bad)} run(s) did not finish: " + ", ".join(str(r["dir"]) for r in bad[:5])] if bad else []


def spec_summary(spec: SweepSpec) -> dict[str, Any]:
    """A sweep spec as JSON (settings of a section), with its run count."""
    n = math.prod(len(v) for v in spec.grid.values()) * len(spec.seeds) * max(len(spec.variants), 1)
    out = {"preset": spec.preset, "grid": spec.grid, "seeds": spec.seeds, "overrides": spec.overrides, "runs": n}
    return {**out, "methods": spec.variants} if spec.variants else out


def median(v: list[float]) -> float | None:
    v = [x for x in v if x is not None]
    return float(statistics.median(v)) if v else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    from training.runs.format import read_metrics as read

    return read(Path(run_dir) / "metrics.jsonl")


def read_json(path: Path) -> Any:
    from training.safeio import read_json as read

    return read(path, "analysis result")


def first_step(metrics: list[dict[str, Any]], key: str, test: Callable[[float], bool]) -> int | None:
    """The first metrics row whose `key` passes `test` (None values never do)."""
    return next((r["step"] for r in metrics if r.get(key) is not None and test(r[key])), None)


def save_figure(fig, path: Path) -> str:
    """A matplotlib Figure as PNG (through a temporary name); returns the file name."""
    from training.runs.plots import render_png
    from training.safeio import atomic_write_bytes

    atomic_write_bytes(path, render_png(fig))
    return path.name


def threshold_line(ax, y: float, label: str, horizontal: bool = True) -> None:
    """A labelled threshold line (grey, dashed); its label goes in the legend."""
    (ax.axhline if horizontal else ax.axvline)(y, color="grey", linestyle="--", linewidth=0.9, label=label)


def curves_figure(runs: list[tuple[str, list[Path]]], title: str):
    """Train / test accuracy against step (log x), one panel per model or preset, one faint line per seed, with
    the 99% line that S_mem and S_gen read."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(4 * max(len(runs), 1), 3.4))
    axes = fig.subplots(1, max(len(runs), 1), squeeze=False)[0]
    for ax, (label, dirs) in zip(axes, runs):
        for i, run_dir in enumerate(dirs):
            m = [r for r in read_metrics(run_dir) if r["step"] > 0]
            steps = [r["step"] for r in m]
            for key, colour in (("train_acc", "tab:blue"), ("test_acc", "tab:red")):
                ax.plot(steps, [r.get(key) for r in m], color=colour, alpha=0.8 if i == 0 else 0.35,
                        label=key.replace("_acc", "") if i == 0 else None)
        threshold_line(ax, 0.99, "99%: S_mem (train), S_gen (test)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short log range
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{label} ({len(dirs)} seed(s))", fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="center left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@dataclass
class SectionDef:
    """One figure of the report: its pre-registered checks (analyses.report.checks), the claims it quotes but does
    not test, its settings at a scale (sweep specs, analysis options and the deviations from the seeds' settings
    in words; SectionSkipped when what it needs has not landed) and its runner."""

    name: str
    title: str
    checks: list[Any]  # analyses.report.checks.CheckDef
    untested: list[Any]  # analyses.report.checks.Untested
    settings: Callable[[str, str], dict[str, Any]]  # (scale, data_path) -> settings
    run: Callable[[Ctx, dict[str, Any]], Outcome]
    figure: str = ""  # which figure of the report it is


def analysis(module: str, body: str, argv: list[str], out_dir: Path, result: str) -> dict[str, Any]:
    """Run `module.body` (an analysis' command body) on argv, quietly, and return its JSON `out_dir/result`;
    reused when an earlier call with the same argv wrote it after the run last changed."""
    import contextlib
    import importlib
    import io

    from training.safeio import atomic_write_bytes

    stamp = out_dir / f".report_{Path(result).stem}.argv"
    target = out_dir / result
    summary = Path(argv[0]) / "summary.json" if argv and Path(argv[0]).is_dir() else None
    fresh = target.exists() and stamp.exists() and read_json(stamp) == argv and \
        (summary is None or not summary.exists() or summary.stat().st_mtime <= target.stat().st_mtime)
    if not fresh:
        mod = importlib.import_module(module)
        args = mod.make_parser().parse_args(argv)
        with contextlib.redirect_stdout(io.StringIO()):
            getattr(mod, body)(args)
        atomic_write_bytes(stamp, json.dumps(argv).encode())
    return read_json(target)


def single(preset: str, seeds: list[int], overrides: dict[str, Any]) -> SweepSpec:
    """One config over seeds as a sweep (a one-value grid on its split seed), so that it is trained or reused as
    every other run of the report."""
    from training.presets import get_preset

    return SweepSpec(preset, {"split_seed": [get_preset(preset).task.split_seed]}, seeds, overrides)


def by_seed(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["seed"], []).append(r)
    return out
