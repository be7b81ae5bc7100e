"""`python -m analyses.sweep SWEEP_DIR [--field F] [--fit exp]`: S_mem and S_gen against a swept field.

    python -m training.sweep --sweep frac --out checkpoints/frac && python -m analyses.sweep checkpoints/frac --fit exp

Reads a sweep directory (training.sweep) and, per value of the swept field (and per combination of the other
swept fields, each its own series):

- S_mem and S_gen (first evaluation with train / test accuracy >= 99%): median over seeds, min/max and the
  interquartile range, of the finished runs only (finished = reached the configured steps, `rundir.run_finished`);
- how many seeds generalised (S_gen within the run's budget), and how many runs are not finished yet;
- the thresholds, in both directions of a numeric field: "no run generalises at frac <= 0.25" (the block of
  lowest values where no run generalised) and "... at wd >= 0.3" (the block of highest values);
- with `--fit exp`: S_gen ~ a * exp(b * x) fitted to the medians of the generalising runs (least squares on
  log S_gen), with the relative change of S_gen per 0.01 decrease of x (for a data fraction: % more steps per 1%
  less data).

Writes SWEEP_DIR/analyses/sweep_<field>.json, .png and .md (the table), and prints the table and the summary.
Reading a sweep and the statistics live in `analyses.sweep_stats`, shared with `analyses.hypotheses` and
`analyses.sweep_methods`.

A sweep with methods (variants, e.g. `--sweep accel`) is analysed per method by default (`--by method`,
analyses.sweep_methods: S_gen, speed-up over plain AdamW and final test accuracy per method, and for a swept
training fraction the final test accuracy against it); `--by field` (or `--field F`) gives the view above, with
"method" as one more field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from analyses import sweep_methods
from analyses.api import Result, options_from
from analyses.sweep_methods import MethodsResult
from analyses.sweep_stats import (STEP, Sweep, collect, describe_thresholds, field_series, iqr_text, is_numeric,
                                  numerics_note, open_sweep, pick_field, range_text, series_key, sorted_values, steps_text)
from training.cli import Parser, json_safe, main_entry, require
from training.sweeps.spec import METHOD, fmt

NAME = "sweep"


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    field: str | None = None  # the swept field on the x axis (needed when the grid has several)
    fit: str | None = None  # "exp": fit S_gen ~ a*exp(b*x) to the medians
    by: str | None = None  # "method" or "field" (None: per method for a sweep with methods)
    methods: str | None = None  # by method: only these methods ("A,B,...")
    progress: bool = True

    def __post_init__(self):
        require(self.fit in (None, "exp"), f"--fit must be exp, got {self.fit}")
        require(self.by in (None, "method", "field"), f"--by must be method or field, got {self.by}")


@dataclasses.dataclass
class SweepResult(Result):
    """sweep_<field>.json: per series (combination of the other swept fields) its points, thresholds and fit."""

    FILE = "sweep_{field}.json"
    sweep: str
    field: str
    preset: str | None
    seeds: list[int] | None
    fit: str | None
    series: list[dict[str, Any]]  # {"key", "points", "thresholds"[, "fit"]} (analyses.sweep_stats.field_series)
    rows: list[dict[str, Any]]  # one per run (analyses.sweep_stats.read_run)


def analyse(sweep, options: SweepOptions = SweepOptions()) -> SweepResult | MethodsResult:
    """S_mem and S_gen against a swept field of `sweep` (a sweep directory or a Sweep); per method for a sweep with
    methods unless options.by == "field" or options.field is given (then a MethodsResult, analyses.sweep_methods)."""
    sweep = open_sweep(sweep)
    variants = sweep.spec.get("variants") or {}
    require(options.by != "method" or bool(variants), f"--by method: {sweep.dir} has no methods (variants)")
    by_method = options.by == "method" or (options.by is None and options.field is None and bool(variants))
    require(by_method or options.methods is None, "--methods is for --by method")
    if by_method:
        require(options.field is None and options.fit is None, "--field and --fit are for --by field")
        return sweep_methods.analyse(sweep, sweep_methods.MethodsOptions(options.methods, options.progress))
    grid = {**({METHOD: list(variants)} if variants else {}), **sweep.spec["grid"]}
    field = pick_field(grid, options.field)
    rows = collect(sweep.dir, sweep.index, progress=options.progress)
    require(any(r["finished"] for r in rows), f"{sweep.dir}: no finished runs yet")
    return SweepResult(sweep=str(sweep.dir), field=field, preset=sweep.spec.get("preset"),
                       seeds=sweep.spec.get("seeds"), fit=options.fit,
                       series=field_series(rows, field, grid[field], options.fit), rows=rows)


def load(sweep, field: str) -> SweepResult:
    """The result `python -m analyses.sweep SWEEP_DIR --field FIELD` wrote."""
    return SweepResult.load(sweep.dir if isinstance(sweep, Sweep) else sweep, SweepResult.FILE.format(field=field))


# --- output --------------------------------------------------------------------------------------------------


def table(field: str, series: list[dict[str, Any]]) -> str:
    """A markdown table: one row per value (and series)."""
    lines = [f"| {field} | generalised | S_gen median | S_gen [min, max] | S_gen IQR | S_mem median | "
             f"S_mem [min, max] | final test acc |", "|" + " --- |" * 8]
    for s in series:
        if s["key"]:
            lines.append(f"| **{s['key']}** |" + " |" * 7)
        for p in s["points"]:
            g, m = p["S_gen"], p["S_mem"]
            unf = f" ({p['unfinished']} unfinished)" if p["unfinished"] else ""
            acc = "-" if p["final_test_acc_median"] is None else f"{p['final_test_acc_median']:.3f}"
            lines.append(f"| {fmt(p['value'])} | {p['generalised']}/{p['runs']}{unf} | {steps_text(g['median'])} | "
                         f"{range_text(g)} | {iqr_text(g)} | {steps_text(m['median'])} | {range_text(m)} | {acc} |")
    return "\n".join(lines)


def describe_fit(field: str, fit: dict[str, Any]) -> str:
    if not fit["ok"]:
        return f"fit exp: {fit['reason']}"
    change = fit["per_step_decrease"] * 100
    return (f"fit exp: S_gen = {fit['a']:.4g} * exp({fit['b']:.4g} * {field}) (R^2 {fit['r2']:.3f}, "
            f"{fit['n']} values): {change:+.2f}% steps per {STEP:g} less {field}")


def summary_lines(field: str, series: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in series:
        head = f"[{s['key']}] " if s["key"] else ""
        lines.append(head + describe_thresholds(field, s["points"], s["thresholds"]))
        if "fit" in s:
            lines.append(head + describe_fit(field, s["fit"]))
    return lines


def plot(field: str, series: list[dict[str, Any]], rows: list[dict[str, Any]], title: str, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: never switches a notebook's backend

    fig = Figure(figsize=(7.5, 6.5))
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    numeric = all(is_numeric([p["value"] for p in s["points"]]) for s in series)
    order = sorted_values(list({json.dumps(p["value"]): p["value"] for s in series for p in s["points"]}.values()))
    xpos = (lambda v: v) if numeric else (lambda v: order.index(v))
    budget = max((p["budget"] or 0 for s in series for p in s["points"]), default=0) or 1
    for i, s in enumerate(series):
        _plot_series(ax, ax2, s, [r for r in rows if series_key(r["params"], field) == s["key"]], field, xpos,
                     budget, f"C{i}", len(series))
    ax.axhline(budget, color="grey", linestyle=":", linewidth=1, label="budget (x: did not generalise)")
    ax.set_yscale("log")
    ax.set_ylabel("steps")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("fraction\ngeneralised")
    ax2.set_xlabel(field)
    if not numeric:
        ax2.set_xticks(range(len(order)), [fmt(v) for v in order])
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def _plot_series(ax, ax2, s, rows, field, xpos, budget, colour, n_series) -> None:
    label = f" [{s['key']}]" if n_series > 1 else ""
    pts = [p for p in s["points"] if p["runs"] > 0]
    for r in rows:
        if not r["finished"]:
            continue
        x = xpos(r["params"][field])
        if r.get("S_gen") is not None:
            ax.scatter(x, r["S_gen"], color=colour, s=14, alpha=0.6)
        else:
            ax.scatter(x, budget * 1.1, color="tab:red", marker="x", s=22)
    gen = [p for p in pts if p["S_gen"]["median"] is not None]
    if gen:
        xs = [xpos(p["value"]) for p in gen]
        ax.plot(xs, [p["S_gen"]["median"] for p in gen], color=colour, marker="o", label="S_gen median" + label)
        ax.fill_between(xs, [p["S_gen"]["q1"] for p in gen], [p["S_gen"]["q3"] for p in gen], color=colour,
                        alpha=0.15)
    mem = [p for p in pts if p["S_mem"]["median"] is not None]
    if mem:
        ax.plot([xpos(p["value"]) for p in mem], [p["S_mem"]["median"] for p in mem], color=colour, linestyle="--",
                linewidth=1, label="S_mem median" + label)
    fit = s.get("fit")
    if fit and fit["ok"] and gen:
        lo, hi = min(p["value"] for p in pts), max(p["value"] for p in pts)
        xs = [lo + (hi - lo) * i / 100 for i in range(101)]
        ax.plot(xs, [fit["a"] * math.exp(fit["b"] * x) for x in xs], color=colour, linestyle=":",
                label=f"{fit['a']:.3g} exp({fit['b']:.3g} x)" + label)
    th = s["thresholds"]
    for v in (th["below"], th["above"]):
        if v is not None and not th["none_generalised"]:
            ax.axvline(xpos(v), color="tab:red", linestyle="--", linewidth=1)
    ax2.plot([xpos(p["value"]) for p in pts], [p["generalised"] / p["runs"] for p in pts], color=colour, marker="o")


# --- command line --------------------------------------------------------------------------------------------


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    p.add_argument("--field", default=None, help="the swept field on the x axis (needed when the grid has several)")
    p.add_argument("--fit", choices=("exp",), default=None, help="fit S_gen ~ a*exp(b*x) to the medians")
    p.add_argument("--by", choices=("method", "field"), default=None,
                   help="per method (the default for a sweep with methods) or against a swept field")
    p.add_argument("--methods", default=None, metavar="A,B,...", help="--by method: only these methods")
    p.add_argument("--no-progress", action="store_true")
    return p


def body(args) -> int:
    """The command: flags -> options -> analysis -> the JSON, table (.md) and figure(s), and the table printed."""
    options = options_from(SweepOptions, args, progress=not args.no_progress)
    res = analyse(args.sweep_dir, options)
    note = numerics_note(open_sweep(args.sweep_dir))
    if note:
        print(note)
    if isinstance(res, MethodsResult):
        return sweep_methods.write(args.sweep_dir, res)
    from training.safeio import atomic_write_bytes, atomic_write_json, output_dir

    field, series, rows = res.field, res.series, res.rows
    out = output_dir(args.sweep_dir / "analyses")
    stem = f"{NAME}_{field}"
    text = table(field, series)
    plot(field, series, rows, f"{args.sweep_dir.name}: steps against {field} ({res.preset})", out / f"{stem}.png")
    atomic_write_json(out / f"{stem}.json", json_safe(res.to_dict()))
    atomic_write_bytes(out / f"{stem}.md", (text + "\n\n" + "\n".join(summary_lines(field, series)) + "\n").encode())
    print(text)
    print("\n".join(summary_lines(field, series)))
    print(f"wrote {out / stem}.json, .png and .md")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.sweep", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
