"""The report's fig. 3: the minimum training fraction per operation. Its pre-registered checks
(analyses.report.checks), pure settings, evidence from sweep rows (synthetic rows in the tests) and the runner.
"""

from __future__ import annotations

import math
from typing import Any

from analyses.report.checks import CheckDef, Rule, Untested
from analyses.report.common import Ctx, Outcome, SMOKE_CKPT, SectionDef, Table, save_figure, threshold_line
from training.constants import SWEEP_CKPT
from training.sweeps.spec import SweepSpec, fmt


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
    from training.tasks.specs import MOD_OPS

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


def _variant_wd(spec: SweepSpec, method: str) -> float:
    from training.presets import get_preset

    flat = {**spec.overrides, **spec.variants.get(method, {})}
    return float(flat.get("wd", get_preset(spec.preset).optim.wd))


SECTION = SectionDef("operations",
                     "Minimum training fraction per operation",
                     OPS_CHECKS, OPS_UNTESTED, operations_settings, operations_run, figure="3")
