"""The report's sections read off sweeps (analyses.report): steps against training fraction (fig. 1), three
architectures (fig. 2), operations (fig. 3) and optimisers (fig. 4). Each has a `*_settings(scale)` (pure: the
sweep specs, for --dry-run too) and a `*_run(ctx, settings)` returning an Outcome with its checks.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from analyses.report_common import (SMOKE_CKPT, SWEEP_CKPT, Check, Ctx, Outcome, SectionSkipped, Table,
                                    curves_figure, failed_note, median, save_figure)
from training.sweep import SWEEPS, SweepSpec, fmt

# --- fig. 1: steps to generalise against the training fraction ------------------------------------------------


def frac_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    if scale == "smoke":
        spec = SweepSpec("default", {"frac": [0.3, 0.6]}, [0],
                         {"steps": 40, "eval_every": 10, "stop_after_gen": 0, **SMOKE_CKPT})
    elif scale == "cpu":  # the named sweep as it is: the default preset, frac 0.2-0.8, 3 seeds, 3000 steps
        f = SWEEPS["frac"]
        spec = SweepSpec(f.preset, f.grid, f.seeds, f.overrides)
    else:  # seed 004's transformer and budget, 5 seeds, finer near 25-30%
        spec = SweepSpec("add97-transformer", {"frac": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8]},
                         [0, 1, 2, 3, 4], {"stop_after_gen": 0, **SWEEP_CKPT})
    return {"sweeps": {"frac": spec}}


def frac_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    from analyses.sweep import analyse, fit_exp, plot

    spec = st["sweeps"]["frac"]
    rows = ctx.sweep("frac", "frac", spec)
    series = analyse(rows, "frac", spec.grid["frac"], "exp")[0]
    fig = ctx.figure("frac", "steps.png")
    plot("frac", [series], rows, f"S_gen and S_mem against training fraction ({spec.preset})", fig)
    pts = [p for p in series["points"] if p["runs"]]
    ratio = {p["value"]: p["S_gen"]["median"] / p["S_mem"]["median"] for p in pts
             if p["S_gen"]["median"] and p["S_mem"]["median"] and 2 * p["generalised"] > p["runs"]}
    table = Table(["frac", "generalised", "S_gen median", "S_gen IQR", "S_mem median", "S_gen / S_mem"],
                  [[fmt(p["value"]), f"{p['generalised']}/{p['runs']}", p["S_gen"]["median"],
                    None if p["S_gen"]["q1"] is None else f"{p['S_gen']['q1']:.0f}-{p['S_gen']['q3']:.0f}",
                    p["S_mem"]["median"], ratio.get(p["value"])] for p in pts])
    near = [p for p in pts if 0.2 <= p["value"] <= 0.4 and p["S_gen"]["median"] is not None]
    local = fit_exp([p["value"] for p in near], [p["S_gen"]["median"] for p in near])
    checks = frac_checks(pts, series["fit"], local, ratio)
    numbers = {"fit": series["fit"], "fit_near_25_30": local, "points": pts, "delay_ratio": ratio}
    return Outcome([fig.name], [table], checks, numbers, failed_note(rows))


def _pct(fit: dict[str, Any]) -> str:
    return f"{100 * fit['per_step_decrease']:+.1f}% per 1% less data (R^2 {fit['r2']:.2f})" if fit["ok"] \
        else f"no fit ({fit['reason']})"


def frac_checks(pts, fit, local, ratio) -> list[Check]:
    mem = [p for p in pts if p["S_mem"]["median"] is not None]
    big = [p for p in pts if p["value"] >= 0.8]
    small = [p for p in pts if p["value"] <= 0.3]
    best = max(ratio, key=ratio.get) if ratio else None
    return [
        Check("000: exponential increase of the steps to generalise as the dataset shrinks",
              "S_gen = a exp(b frac) fitted to the medians: b < 0 and R^2 >= 0.8",
              f"b = {fit['b']:.3g}, R^2 {fit['r2']:.2f}" if fit["ok"] else fit["reason"],
              fit["ok"] and fit["b"] < 0 and fit["r2"] >= 0.8 if fit["ok"] else None),
        Check("000: near 25-30% of the data, 1% less data -> 40-50% more median steps",
              "the same fit over the fractions 0.2-0.4 gives +35% to +55% per 0.01", _pct(local),
              0.35 <= local["per_step_decrease"] <= 0.55 if local["ok"] else None),
        Check("000: steps to 99% train accuracy trend down as the dataset shrinks",
              "median S_mem at the smallest fraction <= at the largest",
              ", ".join(f"{fmt(p['value'])}: {p['S_mem']['median']:.0f}" for p in mem) or "no run memorised",
              mem[0]["S_mem"]["median"] <= mem[-1]["S_mem"]["median"] if len(mem) >= 2 else None),
        Check("001: grokking is most pronounced near a training fraction of 0.5",
              "the largest median S_gen / S_mem (fractions where most seeds generalised) lies in [0.4, 0.6]",
              f"largest at frac {fmt(best)} ({ratio[best]:.1f}x)" if best is not None else "no fraction generalised",
              0.4 <= best <= 0.6 if best is not None else None),
        Check("004: 80% of the data generalises; <= 30% does not within the budget",
              "every seed at frac >= 0.8 generalised, none at frac <= 0.3",
              f"frac >= 0.8: {sum(p['generalised'] for p in big)}/{sum(p['runs'] for p in big)}; frac <= 0.3: "
              f"{sum(p['generalised'] for p in small)}/{sum(p['runs'] for p in small)} generalised",
              bool(big) and all(p["generalised"] == p["runs"] for p in big) and bool(small)
              and all(p["generalised"] == 0 for p in small)),
    ]


# --- fig. 2: transformer, LSTM, MLP --------------------------------------------------------------------------

MODELS = ("transformer", "lstm", "mlp")


def architectures_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    name = "add97-{}" if scale == "gpu" else "add-{}-cpu"
    over = {"stop_after_gen": 0, **SWEEP_CKPT} if scale != "smoke" else \
        {"steps": 20, "eval_every": 10, "stop_after_gen": 0, **SMOKE_CKPT}
    seeds = [0] if scale == "smoke" else [0, 1, 2]
    return {"sweeps": {m: SweepSpec(name.format(m), {"frac": [0.5]}, seeds, over) for m in MODELS}}


def architectures_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    rows = {m: ctx.sweep("architectures", m, spec) for m, spec in st["sweeps"].items()}
    stats = {m: _delay(rs) for m, rs in rows.items()}
    table = Table(["model (preset)", "generalised", "S_mem median", "S_gen median", "S_gen - S_mem", "S_gen / S_mem",
                   "final test acc"],
                  [[f"{m} ({st['sweeps'][m].preset})", f"{s['gen']}/{s['runs']}", s["S_mem"], s["S_gen"],
                    s["delay"], s["ratio"], s["acc"]] for m, s in stats.items()])
    fig = save_figure(curves_figure([(m, rs[0]["dir"]) for m, rs in rows.items() if rs],
                                    "accuracy against step, seed 0"), ctx.figure("architectures", "curves.png"))
    t = stats["transformer"]
    checks = [Check("004: the transformer groks: it fits the training set first and generalises much later",
                    "median S_gen >= 2 x median S_mem", f"S_gen / S_mem = {cell_ratio(t['ratio'])}",
                    t["ratio"] is not None and t["ratio"] >= 2)]
    which = {}
    for m in ("lstm", "mlp"):
        s = stats[m]
        weaker = s["ratio"] is not None and t["ratio"] is not None and s["ratio"] < t["ratio"]
        which[m] = "004 (a weaker delay)" if weaker else "001 (no generalisation)" if s["gen"] == 0 else "neither"
        checks.append(Check(f"004: the {m.upper()} shows a delay of generalisation, weaker than the transformer's "
                            "(001: it does not generalise under its encoding)",
                            "most seeds generalise and median S_gen / S_mem is below the transformer's",
                            f"{s['gen']}/{s['runs']} generalised, S_gen / S_mem = {cell_ratio(s['ratio'])}: "
                            f"{which[m]} holds", weaker))
    notes = [f"{m.upper()}: {w} holds here" for m, w in which.items()] + \
        [n for rs in rows.values() for n in failed_note(rs)]
    longer = [m.upper() for m in ("lstm", "mlp") if None not in (stats[m]["delay"], t["delay"])
              and stats[m]["delay"] > t["delay"]]
    if longer:  # the rule reads the delay as a ratio, as the seeds' log-step axes show it
        delays = ", ".join(f"{m}: {stats[m]['delay']:.0f}" for m in MODELS if stats[m]["delay"] is not None)
        notes.append(f"in absolute steps the delay S_gen - S_mem of the {' and '.join(longer)} is longer than "
                     f"the transformer's ({delays}); the rule compares ratios, as the seeds' log-step axes show it")
    return Outcome([fig], [table], checks, {"stats": stats, "which_holds": which}, notes)


def cell_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f}"


def _delay(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["finished"]]
    gen = [r for r in done if r.get("S_gen") is not None]
    s_mem, s_gen = median([r.get("S_mem") for r in done]), median([r["S_gen"] for r in gen])
    ok = 2 * len(gen) > len(done)
    return {"runs": len(done), "gen": len(gen), "S_mem": s_mem, "S_gen": s_gen,
            "delay": s_gen - s_mem if ok and s_mem is not None else None,
            "ratio": s_gen / s_mem if ok and s_mem else None,
            "acc": median([r.get("final_test_acc") for r in done])}


# --- fig. 3: operations ----------------------------------------------------------------------------------------


def operations_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    if scale == "smoke":
        preset, p, ops, fracs, over = "default", 59, ["add", "div", "sq_sum"], [0.5], \
            {"steps": 20, "eval_every": 10, "stop_after_gen": 0, **SMOKE_CKPT}
    elif scale == "cpu":
        preset, p, ops, fracs, over = "default", 59, ["add", "sub", "div", "sq_sum", "cubic"], [0.3, 0.5, 0.7], \
            {"steps": 1500, "stop_after_gen": 0, **SWEEP_CKPT}
    else:
        preset, p, ops, fracs, over = "add97-transformer", 97, ["add", "sub", "div", "sq_sum", "quad", "cubic",
                                                               "cubic_y"], \
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], {"stop_after_gen": 0, **SWEEP_CKPT}
    return {"p": p, "sweeps": {
        "ops": SweepSpec(preset, {"task": ops, "frac": fracs}, [0], {**over, "p": p}),
        "sub_p-1": SweepSpec(preset, {"frac": fracs}, [0], {**over, "task": "sub", "p": p - 1})}}


def min_fraction(rows: list[dict[str, Any]]) -> float | None:
    """The smallest swept fraction at which most of its seeds generalised within the budget (None: at none)."""
    fracs = sorted({r["params"]["frac"] for r in rows})
    return next((f for f in fracs if 2 * sum(r.get("S_gen") is not None for r in rows if r["params"]["frac"] == f)
                 > sum(r["params"]["frac"] == f for r in rows)), None)


def gaps(rows: list[dict[str, Any]], lo: float | None) -> list[float]:
    """Fractions above the minimum at which the operation did not generalise within the budget."""
    return sorted({r["params"]["frac"] for r in rows if lo is not None and r["params"]["frac"] > lo
                   and r.get("S_gen") is None})


def operations_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    from analyses.sweep import analyse, plot
    from training.taskshape import MOD_OPS

    p = st["p"]
    rows = [r for r in ctx.sweep("operations", "ops", st["sweeps"]["ops"]) if r["finished"]]
    for r in rows:
        r["params"] = {"task": f"{MOD_OPS[r['params']['task']].expr} mod {p}", "frac": r["params"]["frac"]}
    extra = [r for r in ctx.sweep("operations", "sub_p-1", st["sweeps"]["sub_p-1"]) if r["finished"]]
    for r in extra:
        r["params"] = {"task": f"x-y mod {p - 1}", "frac": r["params"]["frac"]}
    rows += extra
    labels = list(dict.fromkeys(r["params"]["task"] for r in rows))
    fracs = sorted({r["params"]["frac"] for r in rows})
    mine = {lab: [r for r in rows if r["params"]["task"] == lab] for lab in labels}
    mins = {lab: min_fraction(mine[lab]) for lab in labels}
    notes = [f"{lab}: did not generalise within {st['sweeps']['ops'].overrides.get('steps', 'the preset')} steps at "
             f"the larger fraction(s) {', '.join(map(fmt, g))}" for lab in labels if (g := gaps(mine[lab], mins[lab]))]
    series = analyse(rows, "frac", fracs)
    fig = ctx.figure("operations", "steps.png")
    plot("frac", series, rows, "S_gen against training fraction per operation", fig)
    gen = {(r["params"]["task"], r["params"]["frac"]): r.get("S_gen") for r in rows}
    table = Table(["operation", "min fraction"] + [f"S_gen @ {fmt(f)}" for f in fracs],
                  [[lab, mins[lab]] + [gen.get((lab, f)) for f in fracs] for lab in labels])
    return Outcome([fig.name], [table], operations_checks(mins, p), {"min_fraction": mins}, notes)


def operations_checks(mins: dict[str, float | None], p: int) -> list[Check]:
    inf = lambda v: math.inf if v is None else v  # noqa: E731  (never generalised: needs more than we gave)
    add = mins.get(f"x+y mod {p}")
    hard = {k: v for k, v in mins.items() if k.split(" mod")[0] in ("x^2+y^2", "x^3+xy", "x^2+xy+y^2", "x^3+xy^2+y")}
    checks = [Check("000: less symmetric, more complicated operations need a larger training fraction",
                    "x+y generalises from some swept fraction, and every polynomial operation needs at least as "
                    "large a fraction (never = more than the largest swept)",
                    ", ".join(f"{k}: {fmt(v) if v is not None else 'never'}" for k, v in mins.items()),
                    add is not None and bool(hard) and all(inf(v) >= add for v in hard.values()))]
    div, sub1 = mins.get(f"x/y mod {p}"), mins.get(f"x-y mod {p - 1}")
    checks.append(Check(f"000: x/y mod {p} behaves like x-y mod {p - 1} (a primitive root maps one to the other)",
                        "the same minimum fraction (both generalise somewhere)",
                        f"x/y mod {p}: {fmt(div) if div is not None else 'never'}; x-y mod {p - 1}: "
                        f"{fmt(sub1) if sub1 is not None else 'never'}",
                        None if div is None or sub1 is None else div == sub1))
    return checks


# --- fig. 4: optimisers and regularisers within a budget (the accelerator sweeps, once they have landed) --------


def optimisers_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    names = ["accel-nanda", "accel-budget", "accel"] if scale == "gpu" else ["accel-budget", "accel"]
    name = next((n for n in names if n in SWEEPS), None)
    if name is None:
        raise SectionSkipped("the accelerator comparison (named sweeps accel / accel-budget in "
                             "training.sweep.SWEEPS) has not landed")
    s = SWEEPS[name]
    if scale == "smoke":  # two values per swept field, three methods (plain AdamW first), one seed, a few steps
        methods = {k: s.variants[k] for k in list(s.variants)[:3]}
        return {"sweeps": {name: replace(s, grid={k: v[:2] for k, v in s.grid.items()}, seeds=s.seeds[:1],
                                         overrides={**s.overrides, "steps": 20, "eval_every": 10, **SMOKE_CKPT},
                                         variants=methods)}}
    return {"sweeps": {name: replace(s)}}


def optimisers_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    """Per method (and grid point), the view `python -m analyses.sweep` gives of the same sweep
    (analyses.sweep_methods: S_gen, S_mem, final test accuracy, speed-up over plain AdamW)."""
    from analyses.sweep_methods import REFERENCE, group, plot_acc, plot_sgen, speed_text, speedups
    from training.sweep import METHOD

    (name, spec), = st["sweeps"].items()
    rows = ctx.sweep("optimisers", name, spec)
    methods = list(spec.variants) or ["-"]
    for r in rows:
        r["params"].setdefault(METHOD, "-")
    reference = REFERENCE if REFERENCE in methods else methods[0]
    groups = group(rows, methods)
    speedups(groups, reference)
    figures = [ctx.figure("optimisers", "sgen.png")]
    plot_sgen(groups, rows, methods, f"{name}: S_gen per method ({spec.preset})", figures[0])
    fields = [k for k, v in spec.grid.items() if len(v) > 1]
    if len(fields) == 1:
        budget = max((g["budget"] or 0 for g in groups), default=0)
        figures.append(ctx.figure("optimisers", f"acc_{fields[0]}.png"))
        plot_acc(groups, methods, fields[0], f"{name}: final test accuracy within {budget} steps", figures[-1])
    table = Table(["grid point", "method", "generalised", "S_mem median", "S_gen median", f"speed-up over {reference}",
                   "final test acc median"],
                  [[g["key"] or "-", g["method"], f"{g['generalised']}/{g['runs']}", g["S_mem"]["median"],
                    g["S_gen"]["median"], None if g["speedup"] is None else speed_text(g),
                    g["final_test_acc"]["median"]] for g in groups])
    return Outcome([f.name for f in figures], [table], _optimiser_checks(groups, spec),
                   {"sweep": name, "reference": reference, "groups": groups}, failed_note(rows))


def _optimiser_checks(groups: list[dict[str, Any]], spec: SweepSpec) -> list[Check]:
    """001 fig. 5's two statements, read from the mean final test accuracy of each method over the grid points."""
    acc: dict[str, list[float]] = {}
    for g in groups:
        if g["final_test_acc"]["median"] is not None:
            acc.setdefault(g["method"], []).append(g["final_test_acc"]["median"])
    mean = {m: sum(v) / len(v) for m, v in acc.items()}
    wd = {m: _variant_wd(spec, m) for m in mean}
    best = max(mean, key=mean.get) if mean else None
    mem = [g["S_mem"]["median"] for g in groups]
    return [
        Check("000 / 001 fig. 5: weight decay (AdamW) improves generalisation the most within the budget",
              "the method with the highest final test accuracy (mean over the grid points of the per-point medians) "
              "uses weight decay, and the sweep has methods without it",
              f"best: {best} (mean final test acc {mean[best]:.3f}, wd {wd[best]:g})" if best else "no runs",
              None if best is None or not any(w == 0 for w in wd.values()) else wd[best] > 0),
        Check("001 fig. 5: training accuracy is reached after ~100-200 updates for every method",
              "every (method, grid point)'s median S_mem <= 400 steps",
              f"median S_mem {min(m for m in mem if m is not None):.0f}-{max(m for m in mem if m is not None):.0f}, "
              f"{sum(m is None for m in mem)} of {len(mem)} never memorised" if any(m is not None for m in mem)
              else "no method memorised", bool(mem) and all(m is not None and m <= 400 for m in mem))]


def _variant_wd(spec: SweepSpec, method: str) -> float:
    from training.presets import get_preset

    flat = {**spec.overrides, **spec.variants.get(method, {})}
    cfg = get_preset(spec.preset)
    return float(flat.get("wd", cfg.optim.wd))
