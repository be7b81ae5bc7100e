"""The report's fig. 4: generalisation per optimiser or regulariser within a budget. Its pre-registered checks
(analyses.report.checks), pure settings, evidence from sweep rows (synthetic rows in the tests) and the runner.
"""

from __future__ import annotations

from dataclasses import replace
import math
from typing import Any

from analyses.report.checks import CheckDef, Rule, Untested, num
from analyses.report.common import (SMOKE_CKPT, Ctx, Outcome, SectionDef, SectionSkipped, Table, failed_note,
                                    save_figure, threshold_line)
from analyses.report.sections.operations import _variant_wd
from training.sweeps.spec import SWEEPS, fmt


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
                             "training.sweeps.spec.SWEEPS) has not landed")
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
    from training.sweeps.spec import METHOD

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
    from training.sweeps.spec import METHOD

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

    from training.sweeps.spec import METHOD

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


SECTION = SectionDef("optimisers",
                     "Optimisers and regularisers within a budget",
                     OPT_CHECKS, OPT_UNTESTED, optimisers_settings, optimisers_run, figure="4")
