"""The report's section that probes runs over their checkpoints for Nanda's progress measures (fig. 8; the S5 cosets
of fig. 5 are analyses.report.sections.cosets). The probe is the existing analysis' own function (`analyses.fourier`),
called in-process on each run directory; its JSON under RUN_DIR/analyses/ is reused while the run and the options
are unchanged. Pre-registered checks (analyses.report.checks).
"""

from __future__ import annotations

import math
from typing import Any

from analyses.report.checks import GROK_RATIO, CheckDef, Rule, Untested, num, ratio
from analyses.report.common import Ctx, Outcome, SectionDef, Table, analysis, curves_figure, save_figure, single

# --- fig. 8: Nanda's progress measures ------------------------------------------------------------------------

Q_NANDA = ("A training curve for a 1L Transformer trained to do addition mod 113, trained on 30% of the 113^2 pairs "
           "- it shows clear grokking")
# Nanda et al. 2023's own numbers for this setting, shown beside ours for comparison (not a seed document's
# claim, so no check reads them).
NANDA_PUBLISHED = {"key frequencies (seed 0)": "14, 35, 41, 42, 52 (3-6 over seeds)",
                   "phase ends (memorisation / circuit formation / cleanup)": "~1.4k / ~9.4k / ~14k"}


def _grok(ev):
    r = ratio(ev["S_gen"], ev["S_mem"])
    return (None if r is None else r >= GROK_RATIO), f"S_mem {ev['S_mem']}, S_gen {ev['S_gen']}" + \
        (f" ({r:.1f}x)" if r is not None else "")


PROGRESS_CHECKS = [CheckDef("progress.grok", "000", Q_NANDA, (
    Rule(f"S_gen >= {GROK_RATIO:g} S_mem on Nanda et al.'s setting (the nanda2023 preset)", _grok),))]
PROGRESS_UNTESTED = [Untested("000", "Grokking has a deep relationship to phase changes.",
                              "a thesis, not a measurement; the phases and Nanda et al.'s numbers are shown beside "
                              "ours")]


def progress_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    if scale == "smoke":
        return {"sweeps": {"run": single("default", [0], {"steps": 40, "eval_every": 10})},
                "deviations": ["the default preset (mod 59), toy budget: 40 steps, one seed"]}
    over = {"steps": 15000, "stop_after_gen": 3000} if scale == "cpu" else {}
    return {"sweeps": {"run": single("nanda2023", [0, 1, 2], over)},
            "deviations": (["stops 3000 steps after generalising (at most 15000), not at 40000: it groks at ~6.5k, "
                            "the cleanup may be cut short"] if scale == "cpu" else []) + ["3 seeds"]}


def progress_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    out = Outcome()
    rows = ctx.sweep("progress", "run", st["sweeps"]["run"])
    table = Table(["seed", "key frequencies", "neurons in key clusters", "final train / test loss",
                   "final restricted / excluded loss", "S_mem / S_gen", "phase ends (mem. / circuit / cleanup)"], [])
    for r in rows:
        run = r["dir"]
        res = analysis("analyses.fourier", "run_fourier", [str(run), "--workers", "1", "--no-progress"],
                       run / "analyses", "fourier.json")
        key, fin, ph = res["key_frequencies"], res["final"], res["phases"]
        ev = out.seed(r["seed"])
        ev.update(S_mem=ph["s_mem"], S_gen=ph["s_gen"], generalised=int(ph["s_gen"] is not None))
        table.rows.append([r["seed"], ", ".join(map(str, key)) or "none",
                           f"{res['clusters']['in_clusters']}/{res['clusters']['n_neurons']}",
                           f"{num(fin['train_loss'])} / {num(fin['test_loss'])}",
                           f"{num(fin['restricted_loss'])} / {num(fin['excluded_loss'])} (ln p = "
                           f"{math.log(res['p']):.3g})", f"{ph['s_mem']} / {ph['s_gen']}",
                           f"{ph['memorisation_end']} / {ph['circuit_formation_end']} / {ph['cleanup_end']}"])
        if r["seed"] == rows[0]["seed"]:
            for f, cap in (("fourier_progress.png", "progress measures over training (restricted and excluded loss, "
                            "Gini of the embedding's Fourier norms); the phase boundaries are the vertical lines"),
                           ("fourier_embedding.png", "the embedding's norm per Fourier frequency: a few key "
                            "frequencies stand out after grokking"),
                           ("fourier_key_norms.png", "the key frequencies' norms over training")):
                out.figure(ctx.copy_figure("progress", run / "analyses" / f), f"First seed: {cap}.")
    out.tables += [table, Table(["quantity", "Nanda et al. 2023 (published; not a seed document, not checked)"],
                                [[k, v] for k, v in NANDA_PUBLISHED.items()])]
    out.figure(save_figure(curves_figure([("nanda2023", [r["dir"] for r in rows])], "accuracy against step"),
                           ctx.figure("progress", "curves.png")),
               "Train (blue) and test (red) accuracy, one line per seed: grokking is the test curve reaching the 99% "
               "line long after the train curve.")
    return out


SECTION = SectionDef("progress",
                     "Nanda et al.'s setting: grokking and its progress measures",
                     PROGRESS_CHECKS, PROGRESS_UNTESTED, progress_settings, progress_run, figure="8")
