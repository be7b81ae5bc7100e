"""Reading a sweep directory (training.sweep) and the statistics every sweep analysis shares: analyses.sweep,
analyses.sweep_methods and analyses.hypotheses are clients. Imports nothing heavy (no torch)."""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

from training.cli import require
from training.errors import RunDirError
from training.safeio import read_json, refuse_links
from training.sweeps.spec import INDEX, fmt

STEP = 0.01  # the fit reports the change of S_gen per this decrease of the swept value


@dataclasses.dataclass
class Sweep:
    """A sweep directory and its index (sweep.json), read and checked."""

    dir: Path
    index: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        return self.index["spec"]


def open_sweep(sweep: Any) -> Sweep:
    """A Sweep from a path (the index read and checked), or the Sweep given."""
    return sweep if isinstance(sweep, Sweep) else Sweep(Path(sweep), read_sweep(Path(sweep)))


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / INDEX
    if not sweep_dir.is_dir():
        raise RunDirError(f"{sweep_dir}: no such sweep directory")
    if not path.exists():
        raise RunDirError(f"{sweep_dir}: not a sweep directory (no {INDEX}; make one with python -m training.sweep)")
    refuse_links(sweep_dir, ["analyses"])  # where the outputs go: refused now, not after the work
    index = read_json(path, "sweep index")
    try:
        grid, runs = index["spec"]["grid"], index["runs"]
        if not isinstance(grid, dict) or not isinstance(runs, list):
            raise TypeError("spec.grid must be an object and runs a list")
        for r in runs:
            r["dir"], r["params"], r["seed"]
    except (KeyError, TypeError) as e:
        raise RunDirError(f"{path}: unreadable sweep index ({type(e).__name__}: {e})") from None
    return index


def read_run(sweep_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """One run of the index as a row: its parameters and seed, whether it is finished, and (if so) its numbers
    read from its own summary.json (the index can lag behind an interrupted sweep)."""
    from training.constants import SUMMARY
    from training.runs.format import run_finished

    run_dir = sweep_dir / str(entry["dir"])
    row = {"params": entry["params"], "seed": entry["seed"], "finished": run_finished(run_dir),
           "budget": entry.get("budget")}
    if row["finished"]:
        s = read_json(run_dir / SUMMARY, "summary")
        try:
            final = s.get("final") or {}
            row.update(S_mem=s.get("S_mem"), S_gen=s.get("S_gen"), switch_step=s.get("switch_step"),
                       diverged_at=s.get("diverged_at"), final_test_acc=final.get("test_acc"))
        except AttributeError as e:
            raise RunDirError(f"{run_dir / SUMMARY}: unreadable summary ({e})") from None
        row["budget"] = row["budget"] if row["budget"] is not None else s.get("steps")
    return row


def numerics_note(sweep: Sweep) -> str | None:
    """numerics_line over the finished runs of a sweep (their config.json's "numerics")."""
    from training.runs.format import read_config, run_finished

    runs = [sweep.dir / str(e["dir"]) for e in sweep.index["runs"]]
    return numerics_line([read_config(d)[1].get("numerics") for d in runs if run_finished(d)])


def numerics_line(records: list[dict[str, Any] | None]) -> str | None:
    """One line when the runs compared were trained at different torch thread counts or on different devices
    ("unknown" for runs from before the record): a run's bits depend on both, and near a threshold that alone can
    decide whether it generalises in its budget. None when they agree."""
    parts = []
    for key in ("threads", "device"):
        count: dict[str, int] = {}
        for rec in records:
            value = str(rec[key]) if isinstance(rec, dict) and key in rec else "unknown"
            count[value] = count.get(value, 0) + 1
        if len(count) > 1:
            parts.append(f"{key} " + ", ".join(f"{v} ({n} runs)" for v, n in sorted(count.items())))
    if not parts:
        return None
    return (f"note: the runs were trained with different numerics ({'; '.join(parts)}): their rounding differs, "
            "which near a threshold can decide whether a run generalises")


def collect(sweep_dir: Path, index: dict[str, Any], progress: bool = True) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    runs = index["runs"]
    return [read_run(sweep_dir, e) for e in tqdm(runs, desc="runs", unit="run", leave=False,
                                                  disable=not progress or len(runs) < 50)]


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


def sorted_values(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return list(values)


def series_keys(rows: list[dict[str, Any]], field: str) -> list[str]:
    """The distinct series keys (combinations of the fields other than `field`) in the order the rows have them."""
    keys: list[str] = []
    for r in rows:
        if (k := series_key(r["params"], field)) not in keys:
            keys.append(k)
    return keys


def field_series(rows: list[dict[str, Any]], field: str, values: list[Any], fit: str | None = None) -> list[dict[str, Any]]:
    """One series per combination of the other swept fields: its points (in value order), thresholds, fit."""
    out = []
    for k in series_keys(rows, field):
        mine = [r for r in rows if series_key(r["params"], field) == k]
        points = [point(v, [r for r in mine if r["params"].get(field) == v]) for v in sorted_values(values)]
        points = [p for p in points if p["runs"] + p["unfinished"] > 0]
        s = {"key": k, "points": points, "thresholds": thresholds(points)}
        if fit == "exp":
            gen = [p for p in points if p["S_gen"]["median"] is not None]
            s["fit"] = (fit_exp([p["value"] for p in gen], [p["S_gen"]["median"] for p in gen])
                        if is_numeric([p["value"] for p in points]) else {"ok": False, "reason": "not a numeric field"})
        out.append(s)
    return out


# --- text --------------------------------------------------------------------------------------------------


def steps_text(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def range_text(sp: dict[str, Any]) -> str:
    return "-" if sp["min"] is None else f"[{steps_text(sp['min'])}, {steps_text(sp['max'])}]"


def iqr_text(sp: dict[str, Any]) -> str:
    return "-" if sp["q1"] is None else f"{steps_text(sp['q1'])}-{steps_text(sp['q3'])}"


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


def pick_field(grid: dict[str, Any], field: str | None, flag: str = "--field") -> str:
    if field is None:
        require(len(grid) == 1, f"the grid sweeps {', '.join(grid)}; choose one with {flag}")
        return next(iter(grid))
    require(field in grid, f"{flag} {field}: not swept here (the grid sweeps {', '.join(grid) or 'nothing'})")
    return field
