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
`analyses.hypotheses` is a client of these functions.

A sweep with methods (variants, e.g. `--sweep accel`) is analysed per method by default (`--by method`,
analyses.sweep_methods: S_gen, speed-up over plain AdamW and final test accuracy per method, and for a swept
training fraction the final test accuracy against it); `--by field` (or `--field F`) gives the view above, with
"method" as one more field.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from training.cli import Parser, main_entry, require
from training.errors import RunDirError
from training.sweep import INDEX, METHOD, fmt

NAME = "sweep"
STEP = 0.01  # the fit reports the change of S_gen per this decrease of the swept value


# --- reading a sweep -----------------------------------------------------------------------------------------


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / INDEX
    if not sweep_dir.is_dir():
        raise RunDirError(f"{sweep_dir}: no such sweep directory")
    if not path.exists():
        raise RunDirError(f"{sweep_dir}: not a sweep directory (no {INDEX}; make one with python -m training.sweep)")
    try:
        index = json.loads(path.read_text())
        grid, runs = index["spec"]["grid"], index["runs"]
        if not isinstance(grid, dict) or not isinstance(runs, list):
            raise TypeError("spec.grid must be an object and runs a list")
        for r in runs:
            r["dir"], r["params"], r["seed"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise RunDirError(f"{path}: unreadable sweep index ({type(e).__name__}: {e})") from None
    return index


def read_run(sweep_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """One run of the index as a row: its parameters and seed, whether it is finished, and (if so) its numbers
    read from its own summary.json (the index can lag behind an interrupted sweep)."""
    from training.rundir import SUMMARY, read_config, run_finished

    run_dir = sweep_dir / str(entry["dir"])
    row = {"params": entry["params"], "seed": entry["seed"], "finished": run_finished(run_dir),
           "budget": entry.get("budget")}
    if row["finished"]:
        row["numerics"] = read_config(run_dir)[1].get("numerics")  # None: trained before it was recorded
        try:
            s = json.loads((run_dir / SUMMARY).read_text())
            final = s.get("final") or {}
            row.update(S_mem=s.get("S_mem"), S_gen=s.get("S_gen"), switch_step=s.get("switch_step"),
                       diverged_at=s.get("diverged_at"), final_test_acc=final.get("test_acc"))
        except (OSError, ValueError, AttributeError) as e:
            raise RunDirError(f"{run_dir / SUMMARY}: unreadable summary ({e})") from None
        row["budget"] = row["budget"] if row["budget"] is not None else s.get("steps")
    return row


def collect(sweep_dir: Path, index: dict[str, Any], progress: bool = True) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    runs = index["runs"]
    return [read_run(sweep_dir, e) for e in tqdm(runs, desc="runs", unit="run", leave=False,
                                                  disable=not progress or len(runs) < 50)]


def say_if_numerics_differ(rows: list[dict[str, Any]]) -> None:
    """One line when the finished runs compared were trained at different torch thread counts or on different
    devices (config.json's "numerics"; "unknown" for runs from before the record): a run's bits depend on both,
    and near a threshold that alone can decide whether it generalises in its budget."""
    parts = []
    for key in ("threads", "device"):
        count: dict[str, int] = {}
        for r in rows:
            if r["finished"]:
                rec = r.get("numerics")
                value = str(rec[key]) if isinstance(rec, dict) and key in rec else "unknown"
                count[value] = count.get(value, 0) + 1
        if len(count) > 1:
            parts.append(f"{key} " + ", ".join(f"{v} ({n} runs)" for v, n in sorted(count.items())))
    if parts:
        print(f"note: the runs were trained with different numerics ({'; '.join(parts)}): "
              "their rounding differs, which near a threshold can decide whether a run generalises")


# --- statistics ----------------------------------------------------------------------------------------------


def spread(v: list[float]) -> dict[str, float | None]:
    """Median, min/max and the interquartile range (linear interpolation, as numpy's default)."""
    if not v:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None}
    s = sorted(v)

    def q(p: float) -> float:
        i = p * (len(s) - 1)
        lo = math.floor(i)
        return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (i - lo)

    return {"median": float(statistics.median(s)), "min": s[0], "max": s[-1], "q1": q(0.25), "q3": q(0.75)}


def point(value: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One value of the swept field: the statistics of its finished runs."""
    done = [r for r in rows if r["finished"]]
    gen = [r["S_gen"] for r in done if r.get("S_gen") is not None]
    mem = [r["S_mem"] for r in done if r.get("S_mem") is not None]
    acc = [r["final_test_acc"] for r in done if r.get("final_test_acc") is not None]
    return {"value": value, "runs": len(done), "unfinished": len(rows) - len(done), "generalised": len(gen),
            "S_mem": spread(mem), "S_gen": spread(gen),
            "budget": max((r["budget"] for r in rows if r.get("budget") is not None), default=None),
            "final_test_acc_median": float(statistics.median(acc)) if acc else None}


def is_numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def thresholds(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The blocks at either end of the (sorted, numeric) range where no finished run generalised:
    `below` = the largest value v with no run generalising at any value <= v, `above` = the smallest v with none
    at any value >= v. Values without finished runs are left out; None where the end generalised."""
    done = [p for p in points if p["runs"] > 0]
    res: dict[str, Any] = {"below": None, "above": None, "none_generalised": bool(done) and
                           all(p["generalised"] == 0 for p in done),
                           "all_generalised": bool(done) and all(p["generalised"] > 0 for p in done)}
    if not done or not is_numeric([p["value"] for p in done]):
        return res
    done = sorted(done, key=lambda p: p["value"])
    for p in done:
        if p["generalised"] > 0:
            break
        res["below"] = p["value"]
    for p in reversed(done):
        if p["generalised"] > 0:
            break
        res["above"] = p["value"]
    return res


def fit_exp(xs: list[float], ys: list[float]) -> dict[str, Any]:
    """S_gen ~ a * exp(b * x): least squares of log y on x. `per_step_decrease`: the relative change of S_gen
    when x decreases by STEP (0.05 = 5% more steps)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return {"ok": False, "reason": f"needs generalising runs at 2 or more values (have {len(set(xs))})"}
    if min(ys) <= 0:
        return {"ok": False, "reason": "S_gen must be positive to fit an exponential"}
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(xs), statistics.fmean(ly)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ly)) / sxx
    log_a = my - b * mx
    ss_res = sum((y - (log_a + b * x)) ** 2 for x, y in zip(xs, ly))
    ss_tot = sum((y - my) ** 2 for y in ly)
    return {"ok": True, "a": math.exp(log_a), "b": b, "n": len(xs),
            "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0, "per_step_decrease": math.exp(-b * STEP) - 1}


def series_key(params: dict[str, Any], field: str) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(params.items()) if k != field)


def _sorted_values(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return list(values)


def analyse(rows: list[dict[str, Any]], field: str, values: list[Any], fit: str | None = None) -> list[dict[str, Any]]:
    """One series per combination of the other swept fields: its points (in value order), thresholds, fit."""
    keys: list[str] = []
    for r in rows:
        if (k := series_key(r["params"], field)) not in keys:
            keys.append(k)
    out = []
    for k in keys:
        mine = [r for r in rows if series_key(r["params"], field) == k]
        points = [point(v, [r for r in mine if r["params"].get(field) == v]) for v in _sorted_values(values)]
        points = [p for p in points if p["runs"] + p["unfinished"] > 0]
        s = {"key": k, "points": points, "thresholds": thresholds(points)}
        if fit == "exp":
            gen = [p for p in points if p["S_gen"]["median"] is not None]
            s["fit"] = (fit_exp([p["value"] for p in gen], [p["S_gen"]["median"] for p in gen])
                        if is_numeric([p["value"] for p in points]) else {"ok": False, "reason": "not a numeric field"})
        out.append(s)
    return out


# --- output --------------------------------------------------------------------------------------------------


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _range(sp: dict[str, Any]) -> str:
    return "-" if sp["min"] is None else f"[{_n(sp['min'])}, {_n(sp['max'])}]"


def _iqr(sp: dict[str, Any]) -> str:
    return "-" if sp["q1"] is None else f"{_n(sp['q1'])}-{_n(sp['q3'])}"


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
            lines.append(f"| {fmt(p['value'])} | {p['generalised']}/{p['runs']}{unf} | {_n(g['median'])} | "
                         f"{_range(g)} | {_iqr(g)} | {_n(m['median'])} | {_range(m)} | {acc} |")
    return "\n".join(lines)


def describe_thresholds(field: str, points: list[dict[str, Any]], th: dict[str, Any]) -> str:
    budget = max((p["budget"] or 0 for p in points), default=0)
    within = f"within {budget} steps" if budget else "within its budget"
    done = [p for p in points if p["runs"] > 0]
    if not done:
        return "threshold: no finished runs yet"
    if th["none_generalised"]:
        return f"threshold: no run generalised {within} at any value of {field}"
    parts = []
    if th["below"] is not None:
        parts.append(f"no run generalises {within} at {field} <= {fmt(th['below'])}")
    if th["above"] is not None:
        parts.append(f"no run generalises {within} at {field} >= {fmt(th['above'])}")
    if parts:
        return "threshold: " + "; ".join(parts)
    if th["all_generalised"]:
        return f"threshold: not reached (some run generalised {within} at every value)"
    inner = ", ".join(fmt(p["value"]) for p in done if p["generalised"] == 0)
    return f"threshold: none at either end (runs generalised at both ends; none at {field} = {inner})"


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
    order = _sorted_values(list({json.dumps(p["value"]): p["value"] for s in series for p in s["points"]}.values()))
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


def pick_field(grid: dict[str, Any], field: str | None, flag: str = "--field") -> str:
    if field is None:
        require(len(grid) == 1, f"the grid sweeps {', '.join(grid)}; choose one with {flag}")
        return next(iter(grid))
    require(field in grid, f"{flag} {field}: not swept here (the grid sweeps {', '.join(grid) or 'nothing'})")
    return field


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
    from training.rundir import atomic_write_json
    from training.cli import json_safe

    index = read_sweep(args.sweep_dir)
    variants = index["spec"].get("variants") or {}
    require(args.by != "method" or bool(variants), f"--by method: {args.sweep_dir} has no methods (variants)")
    by_method = args.by == "method" or (args.by is None and args.field is None and bool(variants))
    require(by_method or args.methods is None, "--methods is for --by method")
    if by_method:
        require(args.field is None and args.fit is None, "--field and --fit are for --by field")
        rows = collect(args.sweep_dir, index, progress=not args.no_progress)
        say_if_numerics_differ(rows)
        from analyses.sweep_methods import run

        return run(args.sweep_dir, index, rows, args.methods)
    grid = {**({METHOD: list(variants)} if variants else {}), **index["spec"]["grid"]}
    field = pick_field(grid, args.field)
    rows = collect(args.sweep_dir, index, progress=not args.no_progress)
    require(any(r["finished"] for r in rows), f"{args.sweep_dir}: no finished runs yet")
    say_if_numerics_differ(rows)
    series = analyse(rows, field, grid[field], args.fit)
    res = {"sweep": str(args.sweep_dir), "field": field, "preset": index["spec"].get("preset"),
           "seeds": index["spec"].get("seeds"), "fit": args.fit, "series": series, "rows": rows}
    out = args.sweep_dir / "analyses"
    out.mkdir(exist_ok=True)
    stem = f"{NAME}_{field}"
    text = table(field, series)
    plot(field, series, rows, f"{args.sweep_dir.name}: steps against {field} ({res['preset']})", out / f"{stem}.png")
    atomic_write_json(out / f"{stem}.json", json_safe(res))
    (out / f".{stem}.md.tmp").write_text(text + "\n\n" + "\n".join(summary_lines(field, series)) + "\n")
    (out / f".{stem}.md.tmp").replace(out / f"{stem}.md")
    print(text)
    print("\n".join(summary_lines(field, series)))
    print(f"wrote {out / stem}.json, .png and .md")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.sweep", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
