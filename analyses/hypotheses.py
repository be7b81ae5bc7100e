"""`python -m analyses.hypotheses SWEEP_DIR`: steps-to-generalise against a swept parameter, and its threshold.

    python -m training.sweep --sweep h1 --out checkpoints/h1 && python -m analyses.hypotheses checkpoints/h1
    python -m training.sweep --sweep h2 --out checkpoints/h2 && python -m analyses.hypotheses checkpoints/h2

The grokking blog's two hypotheses on (n, k)-parity: H1, raising weight decay once the training set is memorised
speeds generalisation up to a threshold; H2, a fraction p_t of flipped training labels slows it, up to a threshold.
Both read the same way off a sweep (training.sweep) over one parameter and several seeds:

- steps to generalise = S_gen, the first evaluation with test accuracy >= 99% (also reported after memorisation,
  S_gen minus the step of the switch at 100% train accuracy, or S_mem where there is no switch);
- a run that never generalises within its budget (its `steps`) counts as not generalised;
- the threshold = the smallest swept value from which on (it and every larger value) no run generalised; where
  the smallest values never generalise (a data fraction too small), that lower threshold is reported too.

Writes SWEEP_DIR/analyses/hypotheses.json and hypotheses.png, prints the table.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from analyses.api import Result, options_from
from analyses.sweep_stats import collect as collect_runs
from analyses.sweep_stats import describe_thresholds, open_sweep, pick_field, point, sorted_values, thresholds
from training.cli import Parser, json_safe, main_entry, require
from training.sweeps.spec import fmt

NAME = "hypotheses"


@dataclasses.dataclass(frozen=True)
class HypothesesOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    param: str | None = None  # the swept field to analyse (needed when the grid has several)
    progress: bool = False


@dataclasses.dataclass
class HypothesesResult(Result):
    """hypotheses.json: steps to generalise per value of the swept parameter, and its thresholds."""

    FILE = f"{NAME}.json"
    sweep: str
    param: str
    preset: str | None
    seeds: list[int] | None
    points: list[dict[str, Any]]  # per value: runs, generalised, S_gen statistics, steps after memorisation
    threshold: Any  # the smallest value from which on no run generalised (H1, H2)
    threshold_below: Any  # the largest value up to which no run generalised
    thresholds: dict[str, Any]  # analyses.sweep_stats.thresholds
    last_generalising_value: Any
    fastest_value: Any
    fastest_S_gen_median: float | None
    rows: list[dict[str, Any]]  # one per finished run


def analyse(sweep, options: HypothesesOptions = HypothesesOptions()) -> HypothesesResult:
    """Steps to generalise against the swept parameter of `sweep` (a sweep directory or a Sweep), the threshold."""
    sweep = open_sweep(sweep)
    grid = sweep.spec["grid"]
    param = pick_field(grid, options.param, "--param")
    rows = collect(sweep.dir, sweep.index, param, options.progress)
    require(bool(rows), f"{sweep.dir}: no finished runs yet")
    values = sorted_values(grid[param])  # mixed kinds: the order given
    return HypothesesResult(sweep=str(sweep.dir), param=param, preset=sweep.spec.get("preset"),
                            seeds=sweep.spec.get("seeds"), **summarise(rows, values), rows=rows)


def load(sweep) -> HypothesesResult:
    """The result `python -m analyses.hypotheses` wrote for `sweep` (a sweep directory)."""
    return HypothesesResult.load(sweep)


def collect(sweep_dir: Path, index: dict[str, Any], param: str, progress: bool = False) -> list[dict[str, Any]]:
    """One row per finished run (reached its configured steps): its parameter value, seed, S_mem, S_gen, switch
    step and budget (analyses.sweep reads them)."""
    return [{"value": r["params"][param], "seed": r["seed"], "S_mem": r["S_mem"], "S_gen": r["S_gen"],
             "switch_step": r["switch_step"], "budget": r["budget"], "final_test_acc": r["final_test_acc"]}
            for r in collect_runs(sweep_dir, index, progress) if r["finished"]]


def _median(v: list[float]) -> float | None:
    import statistics

    return float(statistics.median(v)) if v else None


def summarise(rows: list[dict[str, Any]], values: list[Any]) -> dict[str, Any]:
    """Per value: runs, generalised, median/min/max S_gen and S_gen - S_mem; the thresholds (analyses.sweep)."""
    points = []
    for v in values:
        rs = [{**r, "finished": True} for r in rows if r["value"] == v]
        p = point(v, rs)
        # steps from memorisation (the wd/lr switch where there is one) to generalisation
        after = [r["S_gen"] - (r["switch_step"] if r["switch_step"] is not None else r["S_mem"])
                 for r in rs if r["S_gen"] is not None and r["S_mem"] is not None]
        points.append({"value": v, "runs": p["runs"], "generalised": p["generalised"],
                       "S_mem_median": p["S_mem"]["median"], "S_gen_median": p["S_gen"]["median"],
                       "S_gen_min": p["S_gen"]["min"], "S_gen_max": p["S_gen"]["max"],
                       "after_mem_median": _median(after), "budget": p["budget"],
                       "final_test_acc_median": p["final_test_acc_median"]})
    th = thresholds([{**p, "unfinished": 0} for p in points])
    done = [p for p in points if p["runs"] > 0]
    # H1/H2 read the upper threshold; when nothing generalised anywhere it is the first value
    threshold = done[0]["value"] if th["none_generalised"] else th["above"]
    last_ok = max((p["value"] for p in done if p["generalised"] > 0), default=None)
    fastest = min((p for p in done if p["S_gen_median"] is not None), key=lambda p: p["S_gen_median"], default=None)
    return {"points": points, "threshold": threshold, "threshold_below": th["below"], "thresholds": th,
            "last_generalising_value": last_ok,
            "fastest_value": fastest["value"] if fastest else None,
            "fastest_S_gen_median": fastest["S_gen_median"] if fastest else None}


def plot(res: dict[str, Any], path: Path) -> None:
    import random

    from matplotlib.figure import Figure  # no pyplot: never switches a notebook's backend

    rows, points, param = res["rows"], res["points"], res["param"]
    numeric = all(isinstance(p["value"], (int, float)) and not isinstance(p["value"], bool) for p in points)
    xs = {p["value"]: (p["value"] if numeric else i) for i, p in enumerate(points)}
    budget = max((p["budget"] or 0) for p in points) or 1
    fig = Figure(figsize=(7, 6))
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    jitter = random.Random(0)
    for r in rows:
        x = xs[r["value"]]
        if r["S_gen"] is not None:
            ax.scatter(x, r["S_gen"], color="tab:blue", s=18, alpha=0.7)
        else:
            ax.scatter(x, budget * (1.02 + 0.03 * jitter.random()), color="tab:red", marker="x", s=25)
    med = [(xs[p["value"]], p["S_gen_median"]) for p in points if p["S_gen_median"] is not None]
    if med:
        ax.plot(*zip(*med), color="tab:blue", label="S_gen (median of generalising runs)")
    aft = [(xs[p["value"]], p["after_mem_median"]) for p in points if p["after_mem_median"] is not None]
    if aft:
        ax.plot(*zip(*aft), color="tab:green", linestyle="--", label="after memorisation (median)")
    ax.axhline(budget, color="grey", linestyle=":", label="budget (x: not generalised)")
    if res["threshold"] is not None:
        for a in (ax, ax2):
            a.axvspan(xs[res["threshold"]], max(xs.values()), color="tab:red", alpha=0.08)
        ax.axvline(xs[res["threshold"]], color="tab:red", linestyle="--", label=f"threshold {fmt(res['threshold'])}")
    if res["threshold_below"] is not None and not res["thresholds"]["none_generalised"]:
        for a in (ax, ax2):
            a.axvspan(min(xs.values()), xs[res["threshold_below"]], color="tab:red", alpha=0.08)
        ax.axvline(xs[res["threshold_below"]], color="tab:red", linestyle="--",
                   label=f"threshold (below) {fmt(res['threshold_below'])}")
    ax.set_ylabel("steps to generalise")
    ax.set_title(f"{res['sweep']}: {param}")
    ax.legend(fontsize=8, loc="best")
    ax2.bar(list(xs.values()), [p["generalised"] / max(p["runs"], 1) for p in points],
            width=_bar_width(list(xs.values()), numeric), color="tab:blue", alpha=0.6)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("fraction\ngeneralised")
    ax2.set_xlabel(param)
    if numeric:
        vals = [v for v in xs.values()]
        if min(vals) >= 0 and max(vals) > 0 and (min(v for v in vals if v > 0) * 20 <= max(vals)):
            lin = min(v for v in vals if v > 0)
            for a in (ax, ax2):
                a.set_xscale("symlog", linthresh=lin) if min(vals) == 0 else a.set_xscale("log")
    else:
        ax2.set_xticks(list(xs.values()), [fmt(v) for v in xs])
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def _bar_width(xs: list[float], numeric: bool):
    if not numeric or len(xs) < 2:
        return 0.6
    return [max(abs(x) * 0.25, 1e-3) for x in xs] if min(xs) > 0 else min(b - a for a, b in zip(sorted(xs), sorted(xs)[1:])) * 0.6


def table(res: dict[str, Any]) -> str:
    def n(v):
        return "-" if v is None else f"{v:.0f}"

    lines = [f"{res['param']:>22} {'gen/runs':>9} {'S_mem':>7} {'S_gen med':>10} {'[min, max]':>15} {'after mem':>10} {'final test':>10}"]
    for p in res["points"]:
        rng = f"[{n(p['S_gen_min'])}, {n(p['S_gen_max'])}]" if p["S_gen_min"] is not None else "-"
        lines.append(f"{fmt(p['value']):>22} {p['generalised']:>4}/{p['runs']:<4} {n(p['S_mem_median']):>7} "
                     f"{n(p['S_gen_median']):>10} {rng:>15} {n(p['after_mem_median']):>10} "
                     f"{'-' if p['final_test_acc_median'] is None else format(p['final_test_acc_median'], '.2f'):>10}")
    lines += threshold_lines(res)
    if res["fastest_value"] is not None:
        lines.append(f"fastest: {res['param']} = {fmt(res['fastest_value'])}, median S_gen "
                     f"{res['fastest_S_gen_median']:.0f}")
    return "\n".join(lines)


def threshold_lines(res: dict[str, Any]) -> list[str]:
    """The upper threshold (H1, H2) as before, the lower one where the smallest values never generalise."""
    th, param, points = res["thresholds"], res["param"], res["points"]
    budget = max((p["budget"] or 0) for p in points)
    if th["none_generalised"] or th["all_generalised"] or (th["above"] is None and th["below"] is None):
        return [describe_thresholds(param, points, th)]
    lines = []
    if th["above"] is not None:
        last = res["last_generalising_value"]
        lines.append(f"threshold: no run generalises within {budget} steps for {param} >= {fmt(th['above'])}"
                     + (f" (last generalising value {fmt(last)})" if last is not None else ""))
    if th["below"] is not None:
        first = min(p["value"] for p in points if p["generalised"] > 0)
        lines.append(f"threshold: no run generalises within {budget} steps for {param} <= {fmt(th['below'])}"
                     f" (first generalising value {fmt(first)})")
    return lines


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.hypotheses", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    p.add_argument("--param", default=None, help="the swept field to analyse (needed when the grid has several)")
    return p


def body(args) -> int:
    """The command: flags -> options -> analysis -> hypotheses.json and .png, and the table printed."""
    from training.safeio import atomic_write_json, output_dir

    res = analyse(args.sweep_dir, options_from(HypothesesOptions, args, progress=False)).to_dict()
    out = output_dir(args.sweep_dir / "analyses")
    plot(res, out / f"{NAME}.png")
    atomic_write_json(out / HypothesesResult.FILE, json_safe(res))
    print(table(res))
    print(f"wrote {out / HypothesesResult.FILE} and {NAME}.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.hypotheses", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
