"""The report's parity section (analyses.report, fig. 7): the grokking blog's H1 and H2 sweeps, the spectral norm
of the hidden layer as a progress measure, and the learned network's effective sparsity (Merrill et al.'s
2^k-neuron circuit), five seeds as the blog averages five runs. Pre-registered checks (analyses.report.checks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analyses.report.checks import CheckDef, Rule, Untested, num
from analyses.report.common import (Ctx, Outcome, SMOKE_CKPT, SectionDef, Table, analysis, failed_note, save_figure,
                                    single)
from training.sweeps.spec import SWEEPS, SweepSpec, fmt

Q_H1 = ("If we increase the weight decay w in the optimizer after the model has achieved memorization, then the model "
        "should achieve generalization faster. However, there should be some threshold of weight decay beyond which "
        "the model cannot achieve generalization at all.")
Q_H2 = ("If we increase the fraction of outliers p_t, then the model should achieve generalization slower. However, "
        "there should be some threshold of the fraction beyond which the model cannot achieve generalization at all.")
Q_SPEC = ("we notice that the spectral norm has two inflection points at roughly the same epoch when the model "
          "achieves memorization and when it achieves generalization. Between these two points, the spectral norm "
          "sharply declines.")


def _pts(ev, name):
    return sorted(ev[name], key=lambda r: r["value"])


def _h1(ev):
    pts = _pts(ev, "h1")
    gen = [p for p in pts if p["S_gen"] is not None]
    if len(gen) < 2 or pts[0]["S_gen"] is None:
        return None, f"{len(gen)} value(s) generalised (the smallest must, and one more)"
    fast = min(gen, key=lambda p: p["S_gen"])
    above = [p["value"] for p in pts if p["value"] > fast["value"] and p["S_gen"] is None]
    text = f"smallest {fmt(pts[0]['value'])}: {pts[0]['S_gen']}; fastest {fmt(fast['value'])}: {fast['S_gen']}; " \
           f"no generalisation at {', '.join(map(fmt, above)) or 'none above it'}"
    return fast["S_gen"] < pts[0]["S_gen"] and bool(above), text


def _h2(ev):
    pts = _pts(ev, "h2")
    gen = [p for p in pts if p["S_gen"] is not None]
    if len(gen) < 2:
        return None, f"{len(gen)} value(s) generalised, a trend needs 2"
    s = [p["S_gen"] for p in gen]
    above = [p["value"] for p in pts if p["value"] > gen[-1]["value"] and p["S_gen"] is None]
    text = "S_gen " + ", ".join(f"{fmt(p['value'])}: {p['S_gen']}" for p in gen) + \
        f"; none at {', '.join(map(fmt, above)) or '-'}"
    return all(a <= b for a, b in zip(s, s[1:])) and bool(above), text


def decline_peak(steps: list[int], norm: list[float]) -> tuple[int, int]:
    """The decline read as the blog's turning points: it starts at the norm's maximum and ends at the first
    checkpoint after it within 5% of the way from the minimum after the peak."""
    y = np.asarray(norm, float)
    i = int(np.argmax(y))
    lo = float(y[i:].min())
    j = i + int(np.argmax(y[i:] <= lo + 0.05 * (y[i] - lo)))
    return steps[i], steps[j]


def decline_fall(steps: list[int], norm: list[float]) -> tuple[int, int]:
    """The decline read as a fall time: the first checkpoints 10% and 90% of the way down from the maximum to the
    minimum after it (a reading given up, below)."""
    y = np.asarray(norm, float)
    i = int(np.argmax(y))
    drop = y[i] - float(y[i:].min())
    return steps[i + int(np.argmax(y[i:] <= y[i] - 0.1 * drop))], steps[i + int(np.argmax(y[i:] <= y[i] - 0.9 * drop))]


def near(step: int | None, target: int | None) -> bool:
    return step is not None and target is not None and target / 2 <= max(step, 1) <= 2 * max(target, 1)


def _spectral(read):
    def rule(ev):
        sp = ev["spectral"]
        if not sp or sp["S_gen"] is None or sp["S_mem"] is None:
            return None, "the progress run did not generalise"
        start, end = read(sp["steps"], sp["norm"])
        return near(start, sp["S_mem"]) and near(end, sp["S_gen"]), \
            f"decline {start} -> {end}; S_mem {sp['S_mem']}, S_gen {sp['S_gen']}"
    return rule


def _sparse(ev):
    sp = ev["spectral"]
    if not sp or sp["S_gen"] is None:
        return None, "the progress run did not generalise"
    return sp["final_sparsity"] <= 2 ** (ev["k"] + 1), f"final effective sparsity {num(sp['final_sparsity'])} " \
        f"(2^k = {2 ** ev['k']})"


_FALL_WHY = ("the norm is largest at initialisation and falls from step 0, so its maximum never matched S_mem "
             "(verdict partly); the decline was re-read as a 10%-90% fall time, which passed 3 of 5 seeds at the "
             "edge of its window. Given up: the blog's text names the turning points, not a fall time")
PARITY_CHECKS = [
    CheckDef("parity.h1", "003", Q_H1, (
        Rule("per seed: the fastest weight decay's S_gen is below the smallest one's, and some larger weight decay "
             "does not generalise", _h1),), min_seeds=5, min_generalised=2),
    CheckDef("parity.h2", "003", Q_H2, (
        Rule("per seed: S_gen does not decrease with the noise over the values that generalised (>= 2), and a "
             "larger noise does not generalise", _h2),), min_seeds=5, min_generalised=2),
    CheckDef("parity.spectral", "003", Q_SPEC, (
        Rule("the decline starts at the norm's maximum and ends at the first checkpoint within 5% of the minimum "
             "after it; start within 2x of S_mem, end within 2x of S_gen", _spectral(decline_peak)),
        Rule("the decline's start and end are the first checkpoints 10% and 90% of the way down from the maximum; "
             "start within 2x of S_mem, end within 2x of S_gen", _spectral(decline_fall), why=_FALL_WHY,
             when="after the results"),
        Rule("back to the first rule: the decline starts at the norm's maximum and ends within 5% of the minimum "
             "after it; start within 2x of S_mem, end within 2x of S_gen", _spectral(decline_peak),
             why="the fall-time reading is reverted", when="before the results")), min_seeds=5, min_generalised=1),
    CheckDef("parity.sparse", "003", "it is clear that the final memorizing circuit is very sparse, which is "
             "consistent with the earlier theoretical guarantee", (
                 Rule("the run generalised and its final effective sparsity (Merrill et al.) <= 2^(k+1)", _sparse),),
             seed_number="2^k neurons (4 for k = 2)", min_seeds=5, min_generalised=1),
]
PARITY_UNTESTED = [Untested("003", "The plots show a clear emergence of “good” representations after the model had "
                            "already achieved memorization with “bad” representations.",
                            "the t-SNE of the hidden representations is analyses.sparsity's, not run here (--no-tsne)")]


def parity_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    h1, h2 = SWEEPS["h1"], SWEEPS["h2"]
    if scale == "smoke":
        small = {"steps": 40, **SMOKE_CKPT}
        return {"sweeps": {"h1": SweepSpec(h1.preset, {"wd_after_memorisation": [0.1, 1.0]}, [0],
                                           {**h1.overrides, **small}),
                           "h2": SweepSpec(h2.preset, {"label_noise": [0.0, 0.2]}, [0], {**h2.overrides, **small}),
                           "progress": single("parity-blog", [0], {"steps": 60, "eval_every": 10})},
                "argv": ["--no-tsne", "--n-random", "2"], "deviations": ["toy budget: 40-60 steps, one seed"]}
    five = [0, 1, 2, 3, 4]  # the blog averages five runs
    return {"sweeps": {"h1": SweepSpec(h1.preset, h1.grid, five, h1.overrides),
                       "h2": SweepSpec(h2.preset, h2.grid, five, h2.overrides),
                       "progress": single("parity-blog", five, {"steps": 4000})},
            "argv": ["--no-tsne", "--n-random", "10"],
            "deviations": ["the blog names neither loss nor optimiser: hinge loss and SGD with batch 32 as Merrill "
                           "et al.", "H1: weight decay raised at 100% train accuracy, 5000 steps; H2: 10000 steps; "
                           "the progress runs 4000 steps", "5 seeds, as the blog"]}


def hypothesis(ctx: Ctx, name: str, spec: SweepSpec, out: Outcome) -> dict[str, Any]:
    from analyses.hypotheses import plot, summarise

    (param, values), = spec.grid.items()
    rows = [{"value": r["params"][param], "seed": r["seed"], "S_mem": r.get("S_mem"), "S_gen": r.get("S_gen"),
             "switch_step": r.get("switch_step"), "budget": r.get("budget"), "final_test_acc": r.get("final_test_acc")}
            for r in ctx.sweep("parity", name, spec) if r["finished"]]
    for r in rows:
        ev = out.seed(r["seed"])
        ev.setdefault(name, []).append({k: r[k] for k in ("value", "S_mem", "S_gen")})
        ev["generalised"] += r["S_gen"] is not None
    res = {"sweep": name, "param": param, **summarise(rows, sorted(values)), "rows": rows}
    fig = ctx.figure("parity", f"{name}.png")
    plot(res, fig)
    out.figure(fig.name, f"{name.upper()}: steps to generalise per {param} (median and range over the seeds); the "
               "hypothesis needs a fall then a value past which nothing generalises")
    out.tables.append(Table([param, "generalised", "S_gen median", "S_gen [min, max]", "after memorisation",
                             "final test acc"],
                            [[fmt(p["value"]), f"{p['generalised']}/{p['runs']}", p["S_gen_median"],
                              f"[{p['S_gen_min']:.0f}, {p['S_gen_max']:.0f}]" if p["S_gen_min"] is not None else None,
                              p["after_mem_median"], p["final_test_acc_median"]] for p in res["points"]],
                            title=f"{name.upper()}: {param}"))
    return res


def parity_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    from training.runs.format import read_config

    out = Outcome()
    for n in ("h1", "h2"):
        hypothesis(ctx, n, st["sweeps"][n], out)
    runs = [r for r in ctx.sweep("parity", "progress", st["sweeps"]["progress"]) if r["finished"]]
    per_run = []
    for r in runs:
        res = analysis("analyses.sparsity", "run_sparsity", [str(r["dir"]), *st["argv"], "--no-progress"],
                       r["dir"] / "analyses", "sparsity.json")
        sp = {"seed": r["seed"], "S_mem": res["S_mem"], "S_gen": res["S_gen"], "steps": res["steps"],
              "norm": res["interface_spectral_norms"]["hidden W_in"], "final_sparsity": res["effective_sparsity"][-1]}
        per_run.append(sp)
        ev = out.seed(r["seed"])
        ev.update(spectral=sp, k=read_config(r["dir"])[0].task.k)
        ev["generalised"] += sp["S_gen"] is not None
    for ev in out.evidence.values():
        ev.setdefault("spectral", None)
        ev.setdefault("k", 2)
    out.figure(save_figure(_spectral_figure(per_run), ctx.figure("parity", "spectral.png")),
               "Spectral norm of the hidden layer per seed (log step axis) with each seed's S_mem (dotted) and "
               "S_gen (dashed). The blog sees two turning points at those lines and a sharp decline between them; "
               "circles mark where the rule in force reads the decline's start and end.")
    if runs:
        out.figure(ctx.copy_figure("parity", runs[0]["dir"] / "analyses" / "sparsity.png"),
                   "analyses.sparsity on the first seed: effective sparsity and weight statistics over training.")
    out.notes += failed_note(runs)
    return out


def _spectral_figure(per_run: list[dict[str, Any]]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, p in enumerate(per_run):
        ax.plot([max(s, 1) for s in p["steps"]], p["norm"], color=f"C{i}", label=f"seed {p['seed']}")
        for s, style in ((p["S_mem"], ":"), (p["S_gen"], "--")):
            if s is not None:
                ax.axvline(s, color=f"C{i}", linestyle=style, linewidth=0.8)
        for s in decline_peak(p["steps"], p["norm"]):
            ax.plot(max(s, 1), p["norm"][p["steps"].index(s)], "o", color=f"C{i}")
    ax.plot([], [], "k:", label="S_mem")
    ax.plot([], [], "k--", label="S_gen")
    ax.plot([], [], "ko", label="decline start / end (rule in force)")
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("spectral norm of the hidden W_in")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


SECTION = SectionDef("parity",
                     "Parity: H1, H2, the spectral-norm progress measure, effective sparsity",
                     PARITY_CHECKS, PARITY_UNTESTED, parity_settings, parity_run, figure="7")
