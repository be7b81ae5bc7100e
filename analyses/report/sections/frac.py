"""The report's fig. 1: steps to generalise against the training fraction on (x+y) mod p. Its pre-registered
checks (analyses.report.checks), a pure `frac_settings(scale)`, `frac_evidence(rows)` (sweep rows to the per-seed
evidence its rules read; the tests feed it synthetic rows) and `frac_run(ctx, settings)`.
"""

from __future__ import annotations

from typing import Any

from analyses.report.checks import CheckDef, Rule, Untested, kendall_tau, num, ratio
from analyses.report.common import Ctx, Outcome, SMOKE_CKPT, SectionDef, Table, by_seed, failed_note
from training.constants import SWEEP_CKPT
from training.sweeps.spec import SweepSpec, fmt


# --- fig. 1: steps to generalise against the training fraction ------------------------------------------------


def _fit(pts: list[dict[str, Any]], lo: float = 0.0, hi: float = 1.0) -> dict[str, Any]:
    from analyses.sweep_stats import fit_exp

    gen = [p for p in pts if p["S_gen"] is not None and lo <= p["frac"] <= hi]
    return fit_exp([p["frac"] for p in gen], [p["S_gen"] for p in gen]) if len(gen) >= 3 else \
        {"ok": False, "reason": f"{len(gen)} fraction(s) in [{lo:g}, {hi:g}] generalised, the fit needs 3"}


def _exp(ev):
    f = _fit(ev["points"])
    return (f["b"] < 0 and f["r2"] >= 0.8, f"b = {f['b']:.3g}, R^2 {f['r2']:.2f} over {f['n']} fractions") \
        if f["ok"] else (None, f["reason"])


def _local(ev):
    f = _fit(ev["points"], 0.2, 0.4)
    if not f["ok"]:
        return None, f["reason"]
    return 0.35 <= f["per_step_decrease"] <= 0.55, f"{100 * f['per_step_decrease']:+.1f}% per 1% less data " \
        f"(R^2 {f['r2']:.2f})"


def _mem_v1(ev):
    mem = [p for p in ev["points"] if p["S_mem"] is not None]
    return (mem[0]["S_mem"] <= mem[-1]["S_mem"], _mem_text(mem)) if len(mem) >= 2 else (None, "fewer than 2 "
                                                                                          "fractions memorised")


def _mem_v2(ev):
    pts = [p for p in ev["points"] if p["S_mem"] is not None and p["S_gen"] is not None]
    tau = kendall_tau([p["frac"] for p in pts], [p["S_mem"] for p in pts])
    if tau is None:
        return None, f"{len(pts)} fraction(s) generalised, or S_mem equal at all: " + _mem_text(pts)
    rise = pts[-1]["S_mem"] - pts[0]["S_mem"]
    return tau > 0 and rise > ev["eval_every"], f"tau {tau:.2f}, rise {rise:.0f} steps (evaluated every " \
        f"{ev['eval_every']}): " + _mem_text(pts)


def _mem_text(pts) -> str:
    return ", ".join(f"{fmt(p['frac'])}: {p['S_mem']:.0f}" for p in pts) or "none"


def _ratios(ev) -> list[tuple[float, float]]:
    return [(p["frac"], r) for p in ev["points"] if (r := ratio(p["S_gen"], p["S_mem"])) is not None]


def _peak_v1(ev):
    rs = _ratios(ev)
    if not rs:
        return None, "no fraction generalised"
    f, r = max(rs, key=lambda t: t[1])
    return 0.4 <= f <= 0.6, f"largest S_gen / S_mem at frac {fmt(f)} ({r:.1f}x)"


def _peak_v2(ev):
    rs = _ratios(ev)
    if len(rs) < 3:
        return None, f"{len(rs)} fraction(s) generalised, a peak needs 3"
    i = max(range(len(rs)), key=lambda j: rs[j][1])
    f, r = rs[i]
    text = ", ".join(f"{fmt(x)}: {y:.1f}x" for x, y in rs)
    if i == 0 or i == len(rs) - 1:
        return None, f"the largest ratio is at the edge of what generalised ({text})"
    return 0.4 <= f <= 0.6, f"peak at frac {fmt(f)} ({text})"


def _sha(ev):
    big = [p for p in ev["points"] if p["frac"] >= 0.8]
    small = [p for p in ev["points"] if p["frac"] <= 0.3]
    if not big or not small:
        return None, "the sweep has no fraction >= 0.8 or <= 0.3"
    ok = all(p["S_gen"] is not None for p in big) and all(p["S_gen"] is None for p in small)
    return ok, f"frac >= 0.8: S_gen {', '.join(num(p['S_gen'], '.0f') for p in big)}; frac <= 0.3: " \
        f"{', '.join(num(p['S_gen'], '.0f') for p in small)} (budget {ev['budget']})"


# Why the S5 claim is tested on modular addition: at cpu scale an S5 sweep down to 25% does not fit (measured with
# one thread on the shared 2-core machine, load ~8: training/presets.py, s5-transformer-cpu and s5-cpu).
FRAC_S5_WHY = ("modular addition, not the product in S5 the seed's figure is about: an S5 sweep does not fit the cpu "
               "scale. At 50-60% of the pairs an S5 run takes minutes to 20 minutes here (s5-cpu: 614-1148 s for 5000 "
               "steps; s5-transformer-cpu: two of three seeds not at 99% test accuracy after 6000 steps, 531 s); at "
               "40% the transformer had fit only 89% of its training pairs after 5200 steps and generalised not at "
               "all; the claim is about 25-30%, which needs 3 seeds at 5 or more fractions")

FRAC_CHECKS = [
    CheckDef("frac.exp", "000", "Exponential increase in optimization time until reaching generalization as "
             "dataset size decreases on all the algorithmic tasks", (
                 Rule("S_gen = a exp(b frac) fitted over the fractions that generalised (>= 3): b < 0 and R^2 >= 0.8",
                      _exp),), min_generalised=3),
    CheckDef("frac.local", "000", "In the vicinity of 25-30% of data, a decrease of 1% of training data leads to "
             "an increase of 40-50% in median time to generalization.", (
                 Rule("the same fit over the fractions 0.2-0.4 that generalised (>= 3): +35% to +55% per 0.01",
                      _local),),
             seed_number="+40-50% per 1% less data", min_generalised=3,
             tested_on=FRAC_S5_WHY),
    CheckDef("frac.mem", "000", "the number of steps until the train accuracy first reaches 99% generally trends "
             "down as dataset size decreases and stays in the range of 10^3 - 10^4 optimization steps.", (
                 Rule("S_mem at the smallest fraction that memorised <= at the largest", _mem_v1),
                 Rule("over the fractions that generalised (>= 3): Kendall's tau(frac, S_mem) > 0 and S_mem rises by "
                      "more than one evaluation interval from the smallest to the largest", _mem_v2,
                      why="the first rule held on 75 <= 75: equal steps at the evaluation resolution are no trend, "
                          "and it held on runs that only memorised", when="before the results")),
             seed_number="S_mem in 10^3 - 10^4 steps (shown, not a rule: it depends on the learning rate)",
             min_generalised=3),
    CheckDef("frac.peak", "001", "It finds that grokking is most pronounced around a training data fraction of "
             "α ≈ 0.5 for a p=97 modular arithmetic task", (
                 Rule("the largest S_gen / S_mem over the fractions that generalised lies in [0.4, 0.6]", _peak_v1),
                 Rule("S_gen / S_mem over the fractions that generalised (>= 3) peaks inside the range, with a "
                      "smaller ratio on both sides, at a fraction in [0.4, 0.6]", _peak_v2,
                      why="the first rule picks the smallest fraction that generalised (S_gen grows as the data "
                          "shrinks, so the ratio is largest at the edge of what generalises within the budget)",
                      when="before the results")),
             seed_number="α ≈ 0.5", min_generalised=3),
    CheckDef("frac.sha", "004", "When α=80%, the model generalizes in 10^4 steps. As α decreases, it becomes easier "
             "for the model to overfit the training data, while the number of steps required for generalization "
             "increases rapidly. When α≤30%, the model would not generalize in 10^5 steps.", (
                 Rule("within the budget: every fraction >= 0.8 generalises and no fraction <= 0.3 does", _sha),),
             seed_number="α = 80%: within 10^4 steps; α <= 30%: not within 10^5"),
]
FRAC_UNTESTED: list[Untested] = []


def frac_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    if scale == "smoke":
        spec = SweepSpec("default", {"frac": [0.3, 0.6]}, [0],
                         {"steps": 40, "eval_every": 10, "stop_after_gen": 0, **SMOKE_CKPT})
        dev = ["toy budget: 40 steps, one seed"]
    elif scale == "cpu":  # finer near 25-30%, S_mem resolved to 5 steps
        spec = SweepSpec("default", {"frac": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8]}, [0, 1, 2],
                         {"steps": 3000, "eval_every": 5, "stop_after_gen": 0, **SWEEP_CKPT})
        dev = ["task (x+y) mod 59, not mod 97 (Hu et al.; Sha et al.), nor the product in S5 that Ibragimov's "
               "25-30% figure is about", "model: the default 1-layer transformer of width 64, not 2 layers of 128",
               "optimiser: AdamW lr 5e-3, wd 2, full batch (the seeds: lr 1e-3, wd 0.1-1, batch 512)",
               "budget 3000 steps, not 10^5", "3 seeds"]
    else:  # seed 004's transformer and budget, 5 seeds, finer near 25-30%
        spec = SweepSpec("add97-transformer", {"frac": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8]},
                         [0, 1, 2, 3, 4], {"stop_after_gen": 0, **SWEEP_CKPT})
        dev = ["modular addition, not the product in S5 that Ibragimov's 25-30% figure is about"]
    return {"sweeps": {"frac": spec}, "deviations": dev}


def frac_evidence(rows: list[dict[str, Any]], eval_every: int) -> dict[int, dict[str, Any]]:
    out = {}
    for seed, rs in by_seed([r for r in rows if r["finished"]]).items():
        pts = sorted(({"frac": r["params"]["frac"], "S_mem": r.get("S_mem"), "S_gen": r.get("S_gen")} for r in rs),
                     key=lambda p: p["frac"])
        out[seed] = {"points": pts, "generalised": sum(p["S_gen"] is not None for p in pts),
                     "eval_every": eval_every, "budget": max((r.get("budget") or 0 for r in rs), default=None)}
    return out


def frac_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    from analyses.sweep import plot
    from analyses.sweep_stats import field_series
    from training.presets import get_preset

    spec = st["sweeps"]["frac"]
    rows = ctx.sweep("frac", "frac", spec)
    series = field_series(rows, "frac", spec.grid["frac"], "exp")[0]
    fig = ctx.figure("frac", "steps.png")
    plot("frac", [series], rows, f"S_gen and S_mem against training fraction ({spec.preset})", fig)
    pts = [p for p in series["points"] if p["runs"]]
    table = Table(["frac", "generalised", "S_gen median", "S_gen IQR", "S_mem median", "S_gen / S_mem (median)"],
                  [[fmt(p["value"]), f"{p['generalised']}/{p['runs']}", p["S_gen"]["median"],
                    None if p["S_gen"]["q1"] is None else f"{p['S_gen']['q1']:.0f}-{p['S_gen']['q3']:.0f}",
                    p["S_mem"]["median"], ratio(p["S_gen"]["median"], p["S_mem"]["median"])] for p in pts])
    every = spec.overrides.get("eval_every", get_preset(spec.preset).train.eval_every)
    out = Outcome(tables=[table], evidence=frac_evidence(rows, every),
                  numbers={"fit": series["fit"], "points": pts}, notes=failed_note(rows))
    out.figure(fig.name, "Median steps to 99% test accuracy (S_gen) and to 99% train accuracy (S_mem) against "
               "the training fraction, over the seeds. Look for S_gen rising steeply as the fraction shrinks while "
               "S_mem stays flat or falls; fractions that never generalised within the budget are marked.")
    return out


SECTION = SectionDef("frac",
                     "Steps to generalise against the training fraction",
                     FRAC_CHECKS, FRAC_UNTESTED, frac_settings, frac_run, figure="1")
