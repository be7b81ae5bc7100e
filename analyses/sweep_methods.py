"""The method view of a sweep with variants (training.sweep's `accel`, `accel-nanda`, `accel-budget`): one row per
method (and grid point), compared with a reference method (plain AdamW, "adamw", when the sweep has it).

    python -m training.sweep --sweep accel --out checkpoints/accel && python -m analyses.sweep checkpoints/accel

Per method and grid point, over the finished runs (seeds): how many generalised, S_mem and S_gen (median and
[min, max]), the speed-up (the reference's median S_gen over the method's, at the same grid point), and the final
test accuracy (median and [min, max]). When the reference never generalised within its budget B but the method did,
the speed-up is only bounded: "> B / S_gen"; when the method mostly did not generalise within its own budget B (methods
may have different budgets: `accel-nanda` runs the reference until it generalises) but the reference did, it is
bounded the other way: "< S_gen(reference) / B". No speed-up where at most half the seeds of the method (or of the
reference) generalised and neither bound applies. A run that never generalises is drawn above its budget as a red x.

Writes SWEEP_DIR/analyses/sweep_by_method.json, .md (the table) and .png (S_gen per method); with one swept numeric
field (the training fraction of `accel-budget`) also sweep_by_method_<field>.png: final test accuracy against that
field, one line per method (Hu et al. 2023, Figure 5). `analyses.sweep` uses it when a sweep has variants.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from analyses.api import Result
from analyses.sweep_stats import collect, is_numeric, open_sweep, range_text, series_key, series_keys, spread, steps_text
from training.cli import json_safe, require
from training.sweeps.spec import METHOD

REFERENCE = "adamw"


@dataclasses.dataclass(frozen=True)
class MethodsOptions:
    """The settings of `analyse` (`python -m analyses.sweep --by method`'s flags)."""

    methods: str | None = None  # only these methods ("A,B,..."; None: all, in the sweep's order)
    progress: bool = True


@dataclasses.dataclass
class MethodsResult(Result):
    """sweep_by_method.json: per (grid point, method) the statistics of its runs and the speed-up."""

    FILE = "sweep_by_method.json"
    sweep: str
    preset: str | None
    reference: str  # the method speed-ups are measured against
    methods: list[str]
    variants: dict[str, Any]  # each method's config overrides
    seeds: list[int] | None
    groups: list[dict[str, Any]]  # `group` + `speedups`: one per (grid point, method)
    rows: list[dict[str, Any]]  # one per run of the methods shown


def analyse(sweep, options: MethodsOptions = MethodsOptions()) -> MethodsResult:
    """The method view of a sweep with variants (a sweep directory or an analyses.sweep_stats.Sweep)."""
    sweep = open_sweep(sweep)
    spec = sweep.spec
    require(bool(spec.get("variants")), f"--by method: {sweep.dir} has no methods (variants)")
    rows = collect(sweep.dir, sweep.index, progress=options.progress)
    methods = pick(list(spec["variants"]), options.methods)
    rows = [r for r in rows if r["params"].get(METHOD) in methods]
    require(any(r["finished"] for r in rows), f"{sweep.dir}: no finished runs of these methods yet")
    reference = REFERENCE if REFERENCE in methods else methods[0]
    groups = group(rows, methods)
    speedups(groups, reference)
    return MethodsResult(sweep=str(sweep.dir), preset=spec.get("preset"), reference=reference, methods=methods,
                         variants={m: spec["variants"][m] for m in methods}, seeds=spec.get("seeds"), groups=groups,
                         rows=rows)


def load(sweep) -> MethodsResult:
    """The result `python -m analyses.sweep SWEEP_DIR --by method` wrote."""
    return MethodsResult.load(sweep)


# --- grouping ------------------------------------------------------------------------------------------------


def pick(methods: list[str], text: str | None) -> list[str]:
    """The methods to show: all, or those named in `text` (A,B,...), in the sweep's order."""
    if text is None:
        return methods
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in methods]
    require(bool(names) and not bad, f"--methods: unknown method(s) {', '.join(bad) or '(none given)'} "
                                     f"(this sweep has {', '.join(methods)})")
    return [m for m in methods if m in names]


def group(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """One group per (grid point, method), grid points in the order the rows have them, methods in `methods`'."""
    out = []
    for k in series_keys(rows, METHOD):
        for m in methods:
            mine = [r for r in rows if r["params"].get(METHOD) == m and series_key(r["params"], METHOD) == k]
            if mine:
                out.append(stats(m, k, mine))
    return out


def stats(method: str, key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["finished"]]
    gen = [r["S_gen"] for r in done if r.get("S_gen") is not None]
    mem = [r["S_mem"] for r in done if r.get("S_mem") is not None]
    acc = [r["final_test_acc"] for r in done if r.get("final_test_acc") is not None]
    other = {k: v for k, v in rows[0]["params"].items() if k != METHOD}
    return {"method": method, "key": key, "params": other, "runs": len(done), "unfinished": len(rows) - len(done),
            "generalised": len(gen), "S_mem": spread(mem), "S_gen": spread(gen), "final_test_acc": spread(acc),
            "budget": max((r["budget"] for r in rows if r.get("budget") is not None), default=None)}


def speedups(groups: list[dict[str, Any]], reference: str) -> None:
    """Each group's speed-up over the reference method at the same grid point (in place): `speedup` (a float or
    None) and `speedup_bound`: None for a measured ratio, ">" when the reference never generalised within its
    budget (the ratio is a lower bound), "<" when the method mostly did not generalise within its own budget B
    but the reference did (its median S_gen is at least B, so the speed-up is at most S_gen(reference) / B).
    A ratio only where most seeds of the method (and of the reference) generalised: the median S_gen of the few
    seeds that did would flatter a method that usually does not."""
    refs = {g["key"]: g for g in groups if g["method"] == reference}
    for g in groups:
        ref, mine = refs.get(g["key"]), g["S_gen"]["median"]
        g["speedup"], g["speedup_bound"] = None, None
        if ref is None or ref["runs"] == 0 or g["runs"] == 0:
            continue
        ref_gen, gen = ref["generalised"] * 2 > ref["runs"], g["generalised"] * 2 > g["runs"]
        if gen and ref_gen:
            g["speedup"] = ref["S_gen"]["median"] / mine
        elif gen and ref["generalised"] == 0 and ref["budget"]:
            g["speedup"], g["speedup_bound"] = ref["budget"] / mine, ">"
        elif not gen and ref_gen and g["budget"] and g["unfinished"] == 0:
            g["speedup"], g["speedup_bound"] = ref["S_gen"]["median"] / g["budget"], "<"


# --- output --------------------------------------------------------------------------------------------------


def speed_text(g: dict[str, Any]) -> str:
    if g["speedup"] is None:
        return "-"
    if g["speedup_bound"]:
        return f"{g['speedup_bound']} {g['speedup']:.1f}x"
    return f"{g['speedup']:.2f}x"


def _acc(sp: dict[str, Any]) -> str:
    if sp["median"] is None:
        return "-"
    return f"{sp['median']:.3f} [{sp['min']:.3f}, {sp['max']:.3f}]"


def table(groups: list[dict[str, Any]], reference: str) -> str:
    """Markdown: one row per method (a bold row per grid point when the sweep has a grid)."""
    lines = [f"| method | budget | generalised | S_mem median | S_gen median | S_gen [min, max] | "
             f"speed-up over {reference} | final test acc median [min, max] |", "|" + " --- |" * 8]
    key = None
    for g in groups:
        if g["key"] and g["key"] != key:
            lines.append(f"| **{g['key']}** |" + " |" * 7)
        key = g["key"]
        unf = f" ({g['unfinished']} unfinished)" if g["unfinished"] else ""
        lines.append(f"| {g['method']} | {steps_text(g['budget'])} | {g['generalised']}/{g['runs']}{unf} | {steps_text(g['S_mem']['median'])} | "
                     f"{steps_text(g['S_gen']['median'])} | {range_text(g['S_gen'])} | {speed_text(g)} | {_acc(g['final_test_acc'])} |")
    return "\n".join(lines)


def plot_sgen(groups: list[dict[str, Any]], rows: list[dict[str, Any]], methods: list[str], title: str,
              path: Path) -> None:
    """S_gen per method: each seed a dot (a red x above its budget when it never generalised), the median a bar;
    one colour per grid point."""
    from matplotlib.figure import Figure

    keys = list(dict.fromkeys(g["key"] for g in groups))
    fig = Figure(figsize=(max(7.0, 0.6 * len(methods) + 2), 5))
    ax = fig.subplots()
    budget = max((g["budget"] or 0 for g in groups), default=0) or 1
    width = 0.7 / max(len(keys), 1)
    for j, k in enumerate(keys):
        dx, colour = (j - (len(keys) - 1) / 2) * width, f"C{j}"
        for g in (g for g in groups if g["key"] == k):
            x = methods.index(g["method"]) + dx
            if g["S_gen"]["median"] is not None:
                ax.hlines(g["S_gen"]["median"], x - width / 2, x + width / 2, color=colour, linewidth=2)
            mine = [r for r in rows if r["finished"] and r["params"].get(METHOD) == g["method"]
                    and series_key(r["params"], METHOD) == k]
            for r in mine:
                if r.get("S_gen") is not None:
                    ax.scatter(x, r["S_gen"], color=colour, s=14, alpha=0.7)
                else:  # at the run's own budget: methods may have different ones
                    ax.scatter(x, (r.get("budget") or budget) * 1.15, color="tab:red", marker="x", s=24)
        if k:
            ax.plot([], [], color=colour, linewidth=2, label=k)
    for b in sorted({g["budget"] for g in groups if g["budget"]}):
        ax.axhline(b, color="grey", linestyle=":", linewidth=1)
    ax.plot([], [], color="grey", linestyle=":", label="budget (x: never generalised within it)")
    ax.set_yscale("log")
    if len(keys) == 1:  # the share that generalised under each label (the red x's of several seeds overlap)
        share = {g["method"]: f"{g['generalised']}/{g['runs']}" for g in groups}
        labels = [f"{m} ({share.get(m, '-')})" for m in methods]
    else:
        labels = methods
    ax.set_xticks(range(len(methods)), labels, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("S_gen (steps to 99% test accuracy)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)


def plot_acc(groups: list[dict[str, Any]], methods: list[str], field: str, title: str, path: Path) -> None:
    """Final test accuracy (median over seeds) against the swept field, one line per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    for i, m in enumerate(methods):
        pts = sorted((g["params"][field], g["final_test_acc"]["median"]) for g in groups
                     if g["method"] == m and g["final_test_acc"]["median"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="os^v"[i // 10 % 4], color=f"C{i % 10}",
                    linestyle="-" if i < 10 else "--", label=m, alpha=0.8)
    ax.set_xlabel(field)
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the lines crowd the middle
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


# --- the command's outputs (python -m analyses.sweep) ---------------------------------------------------------


def write(sweep_dir: Path, res: MethodsResult) -> int:
    """sweep_by_method.json, .md and the figure(s) under SWEEP_DIR/analyses/; the table printed."""
    from training.safeio import atomic_write_bytes, atomic_write_json, output_dir

    grid = open_sweep(sweep_dir).spec["grid"]
    groups, methods = res.groups, res.methods
    out = output_dir(sweep_dir / "analyses")
    name, text = sweep_dir.name, table(groups, res.reference)
    written = [out / "sweep_by_method.png"]
    plot_sgen(groups, res.rows, methods, f"{name}: S_gen per method ({res.preset})", written[0])
    if len(grid) == 1 and is_numeric(next(iter(grid.values()))):
        field = next(iter(grid))
        budget = max((g["budget"] or 0 for g in groups), default=0)
        written.append(out / f"sweep_by_method_{field}.png")
        plot_acc(groups, methods, field, f"{name}: final test accuracy within {budget} steps", written[-1])
    atomic_write_json(out / res.FILE, json_safe(res.to_dict()))
    atomic_write_bytes(out / "sweep_by_method.md", (text + "\n").encode())
    print(text)
    print(f"wrote {out / 'sweep_by_method'}.json, .md, " + ", ".join(str(p) for p in written))
    return 0
