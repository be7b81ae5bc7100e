"""The report's operations (fig. 3) and optimisers (fig. 4) sections (analyses.report): minimum training fraction
per operation, and generalisation per optimiser or regulariser within a budget. Pre-registered checks
(analyses.report_checks), pure settings, evidence from sweep rows (synthetic rows in the tests), runners.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from analyses.report_checks import CheckDef, Rule, Untested, num
from analyses.report_common import (
    SMOKE_CKPT,
    SWEEP_CKPT,
    Ctx,
    Outcome,
    SectionSkipped,
    Table,
    failed_note,
    save_figure,
    threshold_line,
)
from training.sweep import SWEEPS, SweepSpec, fmt

# --- fig. 3: operations ----------------------------------------------------------------------------------------

POLYNOMIALS = ("x^2+y^2", "x^3+xy", "x^2+xy+y^2", "x^3+xy^2+y")


def min_fraction_from(gen: dict[float, bool]) -> float | None:
    """The smallest swept fraction from which on every larger swept fraction generalised (None: not even the
    largest did)."""
    best = None
    for f in sorted(gen, reverse=True):
        if not gen[f]:
            break
        best = f
    return best


def min_fraction_any(gen: dict[float, bool]) -> float | None:
    """The smallest swept fraction that generalised, whatever the larger ones did (a rule given up: it reads a
    larger fraction that failed within the budget as success)."""
    return min((f for f, g in gen.items() if g), default=None)


def _mins(ev, how) -> dict[str, float | None]:
    return {op: how({f: s is not None for f, s in fr.items()}) for op, fr in ev["ops"].items()}


def _mins_text(mins) -> str:
    return ", ".join(f"{k}: {fmt(v) if v is not None else 'never'}" for k, v in mins.items())


def _order(how, strict: bool):
    def rule(ev):
        mins = _mins(ev, how)
        add, hard = mins.get(f"x+y mod {ev['p']}"), {k: v for k, v in mins.items() if k.split(" mod")[0] in POLYNOMIALS}
        if add is None or not hard:
            return None, _mins_text(mins) + ("" if hard else "; no polynomial operation swept")
        need = [math.inf if v is None else v for v in hard.values()]
        ok = all(v >= add for v in need) and (not strict or any(v > add for v in need))
        return ok, _mins_text(mins)
    return rule


def _primitive(how, three: bool):
    def rule(ev):
        p, mins = ev["p"], _mins(ev, how)
        names = [f"x/y mod {p}", f"x-y mod {p - 1}"] + ([f"x-y mod {p}"] if three else [])
        got = {n: mins.get(n) for n in names}
        text = _mins_text(got)
        if any(v is None for v in got.values()):
            return None, text + " (each must generalise somewhere)"
        return len(set(got.values())) == 1, text
    return rule


_POSTHOC = ("x-y and x/y mod 59 generalised at 0.5 but not at 0.7 within 1500 steps on one seed, which made them "
            "'never'; the definition was changed to pass them. Given up: a larger fraction that fails within the "
            "budget is a budget (and seed) problem, which more steps and seeds answer, not a new definition")
OPS_CHECKS = [
    CheckDef("ops.order", "000", "Generalization happens at higher percentages of data for intuitively more "
             "complicated and less symmetrical operations.", (
                 Rule("min fraction: the smallest swept fraction from which every larger one generalised; x+y has "
                      "one, and every polynomial operation needs at least as large (never = more than the largest)",
                      _order(min_fraction_from, False)),
                 Rule("min fraction: the smallest swept fraction that generalised; the same comparison",
                      _order(min_fraction_any, False), why=_POSTHOC, when="after the results"),
                 Rule("min fraction: the smallest swept fraction from which every larger one generalised; x+y has "
                      "one, every polynomial operation needs at least as large (never = more than the largest), "
                      "and at least one needs more", _order(min_fraction_from, True),
                      why="back to the first definition; 'higher percentages' needs at least one operation above "
                          "x+y (all equal shows no order)", when="before the results")), min_generalised=1),
    CheckDef("ops.primitive", "000", "x - y (mod 97), x / y (mod 97) - is very similar. [...] x / y (mod 97) ~ "
             "x - y (mod 96) ~ x - y (mod 97)", (
                 Rule("x/y mod p and x-y mod p-1 have the same min fraction (the smallest swept fraction from which "
                      "every larger one generalised)", _primitive(min_fraction_from, False)),
                 Rule("the same, with the min fraction as the smallest swept fraction that generalised",
                      _primitive(min_fraction_any, False), why=_POSTHOC, when="after the results"),
                 Rule("x/y mod p, x-y mod p-1 and x-y mod p have the same min fraction (the smallest swept fraction "
                      "from which every larger one generalised)", _primitive(min_fraction_from, True),
                      why="back to the first definition, and the slide's third term (x-y mod p) added",
                      when="before the results")), min_generalised=1),
]
OPS_UNTESTED: list[Untested] = []


def operations_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    if scale == "smoke":
        preset, p, ops, fracs, seeds, over = "default", 59, ["add", "div", "sq_sum"], [0.5], [0], \
            {"steps": 20, "eval_every": 10, "stop_after_gen": 0, **SMOKE_CKPT}
        dev = ["toy budget: 20 steps, one fraction, one seed"]
    elif scale == "cpu":
        preset, p, ops, fracs, seeds, over = "default", 59, ["add", "sub", "div", "sq_sum", "cubic"], \
            [0.3, 0.4, 0.5, 0.6, 0.7], [0, 1, 2], {"steps": 3000, "stop_after_gen": 0, **SWEEP_CKPT}
        dev = ["p = 59 (and 58), not 97 (and 96)", "the default 1-layer transformer of width 64, not Power et al.'s "
               "2 layers of 128", "budget 3000 steps, not 10^5", "5 of Power et al.'s operations and 5 fractions "
               "(0.3-0.7)", "3 seeds"]
    else:
        preset, p, ops, fracs, seeds, over = "add97-transformer", 97, ["add", "sub", "div", "sq_sum", "quad",
                                                                       "cubic", "cubic_y"], \
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], [0, 1, 2], {"stop_after_gen": 0, **SWEEP_CKPT}
        dev = ["3 seeds"]
    return {"p": p, "deviations": dev, "sweeps": {
        "ops": SweepSpec(preset, {"task": ops, "frac": fracs}, seeds, {**over, "p": p}),
        "sub_p-1": SweepSpec(preset, {"frac": fracs}, seeds, {**over, "task": "sub", "p": p - 1})}}


def operations_evidence(rows: list[dict[str, Any]], p: int) -> dict[int, dict[str, Any]]:
    """rows: finished runs with params {"task": label, "frac"}."""
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        ev = out.setdefault(r["seed"], {"p": p, "ops": {}, "generalised": 0})
        ev["ops"].setdefault(r["params"]["task"], {})[r["params"]["frac"]] = r.get("S_gen")
        ev["generalised"] += r.get("S_gen") is not None
    return out


def operations_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    from training.taskshape import MOD_OPS

    p = st["p"]
    rows = [r for r in ctx.sweep("operations", "ops", st["sweeps"]["ops"]) if r["finished"]]
    for r in rows:
        r["params"] = {"task": f"{MOD_OPS[r['params']['task']].expr} mod {p}", "frac": r["params"]["frac"]}
    extra = [r for r in ctx.sweep("operations", "sub_p-1", st["sweeps"]["sub_p-1"]) if r["finished"]]
    for r in extra:
        r["params"] = {"task": f"x-y mod {p - 1}", "frac": r["params"]["frac"]}
    rows += extra
    ev = operations_evidence(rows, p)
    labels = list(dict.fromkeys(r["params"]["task"] for r in rows))
    fracs = sorted({r["params"]["frac"] for r in rows})
    table = Table(["operation", "seed", "min fraction (every larger generalised)", "smallest that generalised"] +
                  [f"S_gen @ {fmt(f)}" for f in fracs], [])
    notes = []
    for seed, e in sorted(ev.items()):
        for lab in labels:
            g = e["ops"].get(lab, {})
            lo, any_ = min_fraction_from({f: s is not None for f, s in g.items()}), \
                min_fraction_any({f: s is not None for f, s in g.items()})
            table.rows.append([lab, seed, lo if lo is not None else "never", any_] + [g.get(f) for f in fracs])
            if lo != any_:
                notes.append(f"{lab}, seed {seed}: generalised at {fmt(any_)} but not at every larger fraction "
                             f"within {st['sweeps']['ops'].overrides.get('steps', 'the preset')} steps")
    budget = st["sweeps"]["ops"].overrides.get("steps")
    fig = save_figure(_ops_figure(labels, fracs, rows, budget), ctx.figure("operations", "steps.png"))
    out = Outcome(tables=[table], evidence=ev, notes=notes or ["every operation that generalised at a fraction "
                                                                "also generalised at every larger one"])
    out.figure(fig, "One panel per operation: steps to 99% test accuracy against the training fraction, one marker "
               "per seed; a cross on the dashed budget line is a run that never generalised. Look for the "
               "polynomials needing larger fractions than x+y, and x/y mod p matching x-y mod p-1.")
    return out


def _ops_figure(labels, fracs, rows, budget):
    from matplotlib.figure import Figure

    cols = min(len(labels), 3) or 1
    n_rows = math.ceil(len(labels) / cols) or 1
    fig = Figure(figsize=(3.6 * cols, 2.8 * n_rows))
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    top = budget or max((r.get("S_gen") or 0 for r in rows), default=1)
    for ax, lab in zip(axes, labels):
        for j, seed in enumerate(sorted({r["seed"] for r in rows})):
            mine = sorted((r for r in rows if r["params"]["task"] == lab and r["seed"] == seed),
                          key=lambda r: r["params"]["frac"])
            gen = [(r["params"]["frac"], r["S_gen"]) for r in mine if r.get("S_gen") is not None]
            ax.plot([g[0] for g in gen], [g[1] for g in gen], "o-", color=f"C{j}", markersize=4,
                    label=f"seed {seed}")
            never = [r["params"]["frac"] for r in mine if r.get("S_gen") is None]
            ax.plot(never, [top] * len(never), "x", color=f"C{j}", markersize=7)
        threshold_line(ax, top, f"budget {top} (x: never generalised)")
        ax.set_title(lab, fontsize=9)
        ax.set_xticks(fracs)
        ax.set_xlabel("training fraction")
        ax.set_ylabel("S_gen (steps)")
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


# --- fig. 4: optimisers and regularisers within a budget --------------------------------------------------------

# Power et al.'s optimisers and regularisers: the methods the seeds' figure compares (the others came later).
BASELINES = ("adamw", "adamw-full-batch", "adamw-minibatch", "adam-no-wd", "sgd-momentum", "dropout", "weight-noise")
NO_WD_NOR_NOISE = ("adam-no-wd", "sgd-momentum")


def _mean_acc(m: dict[str, Any]) -> float | None:
    v = [a for a in m["acc"].values() if a is not None]
    return sum(v) / len(v) if v else None


def _best(ev, pool) -> tuple[str | None, float | None]:
    means = {k: _mean_acc(m) for k, m in ev["methods"].items() if k in pool and _mean_acc(m) is not None}
    best = max(means, key=means.get) if means else None
    return best, means.get(best) if best else None


def _wd_v1(ev):
    best, acc = _best(ev, ev["methods"])
    if best is None or not any(m["wd"] == 0 for m in ev["methods"].values()):
        return None, "no runs, or no method without weight decay"
    return ev["methods"][best]["wd"] > 0, f"best: {best} (mean final test acc {acc:.3f})"


def _wd_v2(ev):
    pool = [k for k in ev["methods"] if k in BASELINES]
    best, acc = _best(ev, pool)
    nowd, acc0 = _best(ev, [k for k in pool if ev["methods"][k]["wd"] == 0])
    overall, acc_all = _best(ev, ev["methods"])
    if best is None or nowd is None:
        return None, "the sweep lacks the seed's methods with and without weight decay"
    peak = max((a for a in ev["methods"][best]["acc"].values() if a is not None), default=0.0)
    text = f"best of the seed's methods: {best} ({acc:.3f}, best fraction {peak:.3f}); best without weight decay: " \
           f"{nowd} ({acc0:.3f}); best of all: {overall} ({acc_all:.3f})"
    return ev["methods"][best]["wd"] > 0 and peak >= 0.99 and acc - acc0 >= 0.05, text


def _some(ev):
    names = [k for k in ("adamw-full-batch", *NO_WD_NOR_NOISE) if k in ev["methods"]]
    if "adamw-full-batch" not in names or len(names) < 2:
        return None, "the sweep lacks a full-batch method or one without weight decay and noise"
    top = max(f for m in names for f in ev["methods"][m]["acc"])
    acc = {m: ev["methods"][m]["acc"].get(top) for m in names}
    free = max((a for m, a in acc.items() if m != "adamw-full-batch" and a is not None), default=None)
    text = f"at frac {fmt(top)}: " + ", ".join(f"{m} {num(a)}" for m, a in acc.items())
    return (acc["adamw-full-batch"] or 0) >= 0.5 and free is not None and free >= 0.5, text


def _mem(ev):
    mem = [s for m in ev["methods"].values() for s in m["S_mem"].values()]
    done = [s for s in mem if s is not None]
    text = f"S_mem {min(done):.0f}-{max(done):.0f}, {len(mem) - len(done)} of {len(mem)} never memorised" if done \
        else "no run memorised"
    return bool(mem) and len(done) == len(mem) and max(done) <= 400, text


Q_FIG5 = "Weight decay, i.e. AdamW, improves generalization the most"
OPT_CHECKS = [
    CheckDef("opt.wd", "001", Q_FIG5, (
        Rule("the method with the highest mean final test accuracy over the fractions uses weight decay",
             _wd_v1),
        Rule("among the seed's own methods (Power et al.'s optimisers and regularisers), the best mean final test "
             "accuracy over the fractions is a method with weight decay that generalises (>= 99%) at some fraction "
             "and beats the best method without weight decay by >= 0.05", _wd_v2,
             why="the first rule held on runs that learned nothing (the winner's mean accuracy was 0.004)",
             when="before the results")), min_generalised=1),
    CheckDef("opt.some", "001", "but some generalization happens even with full batch optimizers and models without "
             "weight decay or activation noise at high percentages of training data fraction.", (
                 Rule("at the largest fraction, full-batch AdamW and the best of Adam without weight decay and SGD "
                      "with momentum each reach >= 50% test accuracy", _some),), min_generalised=1),
    CheckDef("opt.mem", "001", "Note this: training accuracy achieved after approximately 100-200 updates for all "
             "optimization methods and training data fractions.", (
                 Rule("every (method, fraction)'s S_mem <= 400 steps (2x the seed's 200)", _mem),),
             seed_number="100-200 updates", min_generalised=1),
]
OPT_UNTESTED = [Untested("000", "Optimization budget of 10^5 steps for the problem of learning the product in the "
                         "abstract group S5. Weight decay improves generalization the most, but some generalization "
                         "happens even with full batch optimizers and models without weight or activation noise at "
                         "high percentages of training data.",
                         "the same claims as Hu et al.'s Figure 5, tested there on (x+y) mod 97; S5 with 10^5 steps "
                         "for 14 methods is beyond a CPU")]


def optimisers_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    names = ["accel-budget", "accel"]
    name = next((n for n in names if n in SWEEPS), None)
    if name is None:
        raise SectionSkipped("the accelerator comparison (named sweeps accel / accel-budget in "
                             "training.sweep.SWEEPS) has not landed")
    s = SWEEPS[name]
    if scale == "smoke":  # two values per swept field, three methods (plain AdamW first), one seed, a few steps
        methods = {k: s.variants[k] for k in list(s.variants)[:3]}
        return {"sweeps": {name: replace(s, grid={k: v[:2] for k, v in s.grid.items()}, seeds=s.seeds[:1],
                                         overrides={**s.overrides, "steps": 20, "eval_every": 10, **SMOKE_CKPT},
                                         variants=methods)}, "deviations": ["toy budget: 20 steps, 3 methods"]}
    dev = ["an MLP (64-wide operand embeddings, one ReLU layer of 256), not Hu et al.'s transformer",
           "AdamW lr 3e-3 wd 1 as the base of every method", "3 seeds", "methods that came after the seeds "
           "(Grokfast, perpendicular gradients, StableMax, fixed norm) are shown but the weight-decay check ranks the "
           "seed's own methods"]
    return {"sweeps": {name: replace(s, seeds=[0, 1, 2])}, "deviations": dev}


def optimisers_evidence(rows: list[dict[str, Any]], wd: dict[str, float]) -> dict[int, dict[str, Any]]:
    from training.sweep import METHOD

    out: dict[int, dict[str, Any]] = {}
    for r in (r for r in rows if r["finished"]):
        ev = out.setdefault(r["seed"], {"methods": {}, "generalised": 0})
        m = r["params"].get(METHOD, "-")
        e = ev["methods"].setdefault(m, {"wd": wd.get(m, 0.0), "acc": {}, "S_mem": {}})
        f = r["params"].get("frac", 0.0)
        e["acc"][f], e["S_mem"][f] = r.get("final_test_acc"), r.get("S_mem")
        ev["generalised"] += r.get("S_gen") is not None
    return out


def optimisers_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    from analyses.sweep_methods import REFERENCE, group, plot_sgen, speed_text, speedups
    from training.sweep import METHOD

    (name, spec), = st["sweeps"].items()
    rows = ctx.sweep("optimisers", name, spec)
    methods = list(spec.variants) or ["-"]
    for r in rows:
        r["params"].setdefault(METHOD, "-")
    reference = REFERENCE if REFERENCE in methods else methods[0]
    groups = group(rows, methods)
    speedups(groups, reference)
    out = Outcome(evidence=optimisers_evidence(rows, {m: _variant_wd(spec, m) for m in methods}),
                  notes=failed_note(rows))
    sgen = ctx.figure("optimisers", "sgen.png")
    plot_sgen(groups, rows, methods, f"{name}: S_gen per method ({spec.preset})", sgen)
    acc = save_figure(_acc_figure(rows, methods, spec), ctx.figure("optimisers", "acc.png"))
    out.figure(acc, "One panel per method (the seed's own methods first, titles in bold): final test accuracy "
               "against the training fraction within the budget, one line per seed. Look for the AdamW panels "
               "reaching the 99% line at smaller fractions than the methods without weight decay.")
    out.figure(sgen.name, "Steps to 99% test accuracy per method and fraction (analyses.sweep_methods).")
    out.tables.append(Table(["grid point", "method", "generalised", "S_mem median", "S_gen median",
                             f"speed-up over {reference}", "final test acc median"],
                            [[g["key"] or "-", g["method"], f"{g['generalised']}/{g['runs']}", g["S_mem"]["median"],
                              g["S_gen"]["median"], None if g["speedup"] is None else speed_text(g),
                              g["final_test_acc"]["median"]] for g in groups]))
    out.numbers = {"sweep": name, "reference": reference}
    return out


def _acc_figure(rows, methods, spec):
    from matplotlib.figure import Figure

    from training.sweep import METHOD

    order = [m for m in methods if m in BASELINES] + [m for m in methods if m not in BASELINES]
    cols = min(len(order), 4)
    n_rows = math.ceil(len(order) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.5 * n_rows))
    axes = fig.subplots(n_rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, m in zip(axes, order):
        for j, seed in enumerate(sorted({r["seed"] for r in rows})):
            mine = sorted((r for r in rows if r["params"].get(METHOD) == m and r["seed"] == seed and r["finished"]),
                          key=lambda r: r["params"].get("frac", 0))
            ax.plot([r["params"].get("frac", 0) for r in mine], [r.get("final_test_acc") for r in mine], "o-",
                    color=f"C{j}", markersize=3, label=f"seed {seed}")
        threshold_line(ax, 0.99, "99% test accuracy")
        ax.set_title(f"{m} (wd {_variant_wd(spec, m):g})", fontsize=8,
                     fontweight="bold" if m in BASELINES else "normal")
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[len(order):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6)
    fig.supxlabel("training fraction", fontsize=9)
    fig.supylabel("final test accuracy", fontsize=9)
    fig.tight_layout()
    return fig


def _variant_wd(spec: SweepSpec, method: str) -> float:
    from training.presets import get_preset

    flat = {**spec.overrides, **spec.variants.get(method, {})}
    return float(flat.get("wd", get_preset(spec.preset).optim.wd))
