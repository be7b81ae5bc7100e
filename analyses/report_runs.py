"""The report's sections that probe runs over their checkpoints (analyses.report): S5 cosets (fig. 5) and Nanda's
progress measures (fig. 8). The probes are the existing analyses' own functions (`analyses.cosets.run_cosets`,
`analyses.fourier.analyse`), called in-process on each run directory; their JSON under RUN_DIR/analyses/ is reused
while the run and the options are unchanged. Pre-registered checks (analyses.report_checks).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from analyses.report_checks import GROK_RATIO, CheckDef, Rule, Untested, num, ratio
from analyses.report_common import SMOKE_CKPT, Ctx, Outcome, Table, analysis, curves_figure, save_figure, single

S5_SUBGROUP = "(0 3)(1 4); (1 2)(3 4)"  # seed 000's subgroup of S5 (a dihedral group of order 10)

# --- fig. 5: S5 cosets ---------------------------------------------------------------------------------------

Q_COS = ("clusters of permutations, and each cluster is a coset of the subgroup ⟨(0, 3)(1, 4), (1, 2)(3, 4)⟩ or one "
         "of its conjugates.")


def _cosets(model: str):
    def rule(ev):
        m = ev["models"].get(model)
        if not m or m["S_gen"] is None:
            return None, f"{model}: no run, or it did not generalise"
        return m["structure"] and m["conjugate"], f"{model}: {m['side']} cosets of {m['subgroup']} (order " \
            f"{m['order']}, ARI {m['ari']:.2f}, {'significant' if m['structure'] else 'not significant'}; " \
            f"{'conjugate' if m['conjugate'] else 'not conjugate'} to the given subgroup, whose best conjugate " \
            f"has ARI {m['asked_ari']:.2f})"
    return rule


COSET_CHECKS = [CheckDef(f"cosets.{m}", "000", Q_COS, (
    Rule("the run generalised, and W_U's best coset partition is significant (analyses.cosets: ARI >= 0.5, shuffle "
         "test p < 0.05) with a subgroup conjugate to the given one", _cosets(m)),),
    tested_on=f"the {m}" + (" (the seed's model is not stated)" if m == "transformer" else " (Chughtai et al.'s)"))
    for m in ("transformer", "mlp")]
COSET_UNTESTED: list[Untested] = []
# No CPU-sized S5 transformer preset that groks in minutes has been tuned yet, so at smoke and cpu scale the
# transformer's check has no run and cannot hold.
COSET_PRESETS = {"smoke": {"mlp": "s5-cpu"}, "cpu": {"mlp": "s5-cpu"},
                 "gpu": {"mlp": "chughtai-s5", "transformer": "power2022-s5"}}


def cosets_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    if scale == "smoke":
        return {"sweeps": {m: single(p, [0], {"steps": 40, "eval_every": 20, **SMOKE_CKPT})
                           for m, p in COSET_PRESETS[scale].items()},
                "argv": ["--every", "2", "--n-null", "9", "--timeline-null", "0"],
                "deviations": ["toy budget: 40 steps, one seed"]}
    every = "2" if scale == "cpu" else "4"
    dev = ["the seed's model and budget are not stated; ours: Chughtai et al.'s MLP narrowed to 64-wide embeddings, "
           "60% of the pairs, 5000 steps", "no transformer (no CPU-sized S5 transformer preset tuned yet)", "3 seeds"] \
        if scale == "cpu" else ["3 seeds"]
    return {"sweeps": {m: single(p, [0, 1, 2], {}) for m, p in COSET_PRESETS[scale].items()},
            "argv": ["--every", every], "deviations": dev}


def coset_evidence(res: dict[str, Any]) -> dict[str, Any]:
    wu = res["matrices"]["W_U"]
    b, asked = wu["best"], wu["asked"]["best_conjugate"]
    return {"S_gen": res["S_gen"], "structure": bool(wu["structure"]), "subgroup": b["subgroup"], "side": b["side"],
            "order": b["order"], "ari": b["ari"], "partition": b["partition"], "from_step": wu["from_step"],
            "conjugate": b["conj_class"] == asked["conj_class"], "asked_ari": asked["ari"]}


def cosets_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    out = Outcome()
    table = Table(["model", "seed", "rows", "best cosets", "order", "ARI", "p", "from step",
                   "conjugate to <(0 3)(1 4), (1 2)(3 4)>", "its best conjugate's ARI (final / over steps)"], [])
    for model, spec in st["sweeps"].items():
        for r in ctx.sweep("cosets", model, spec):
            run = r["dir"]
            res = analysis("analyses.cosets", "run_cosets", [str(run), *st["argv"], "--subgroup", S5_SUBGROUP,
                                                             "--no-progress"], run / "analyses", "cosets.json")
            ev = out.seed(r["seed"])
            ev.setdefault("models", {})[model] = e = coset_evidence(res)
            ev["generalised"] += e["S_gen"] is not None
            for name, m in res["matrices"].items():
                b, a = m["best"], m["asked"]
                table.rows.append([model, r["seed"], name, f"{b['side']} of {b['subgroup']}" +
                                   ("" if m["structure"] else " (not significant)"), b["order"], b["ari"],
                                   m["p_value"], m["from_step"], b["conj_class"] == a["best_conjugate"]["conj_class"],
                                   f"{a['best_conjugate']['ari']:.2f} / {a['best_ari_over_steps']:.2f}"])
            if r["seed"] == min(spec.seeds):
                _coset_figures(ctx, out, model, run, res, e)
    out.tables.append(table)
    return out


def _coset_figures(ctx: Ctx, out: Outcome, model: str, run: Path, res: dict[str, Any], e: dict[str, Any]) -> None:
    out.figure(ctx.copy_figure(f"cosets_{model}", run / "analyses" / "cosets_rows.png"),
               f"{model}, first seed: rows of each weight matrix on their top principal components, coloured by the "
               "best coset partition; clusters of one colour are cosets.")
    out.figure(save_figure(_tsne_figure(run, e), ctx.figure("cosets", f"{model}_tsne.png")),
               f"{model}, first seed: t-SNE of the 120 rows of W_U, coloured by W_U's best coset partition "
               f"({e['side']} cosets of {e['subgroup']}), as the seed showed it. One colour per cluster means the "
               "output layer groups permutations by those cosets.")
    if "irreps" in res and "skipped" not in res["irreps"]:
        from analyses.cosets import plot_irreps

        fig = plot_irreps(res, f"{model}, seed 0")
        _stack(fig)
        out.figure(save_figure(fig, ctx.figure("cosets", f"{model}_irreps.png")),
                   f"{model}, first seed, stacked: logit variance explained per irreducible representation over "
                   "training (top), the loss after removing each from the logits (middle), and the irreps' share of "
                   "variance at the last checkpoint (bottom; grey: random rows). The key irreps are drawn thick.")


def _stack(fig) -> None:
    """analyses.cosets' three side-by-side irreps panels, stacked so that their legends are readable at page width."""
    axes = [ax for ax in fig.axes if ax.get_subplotspec() is not None][:3]
    gs = fig.add_gridspec(len(axes), 1)
    for i, ax in enumerate(axes):
        ax.set_subplotspec(gs[i])
    fig.set_size_inches(10, 4.2 * len(axes))
    fig.suptitle("\n".join(textwrap.wrap(fig.get_suptitle(), 120)), fontsize=9)
    fig.tight_layout()


def _tsne_figure(run: Path, e: dict[str, Any]):
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    from analyses.common import finite_weights
    from analyses.cosets import open_group_run
    from interp.cosets import coset_partitions, group_rows
    from training.models import build_model

    r, data, G = open_group_run(run)
    model = build_model(r.config.model, data, seed=r.config.train.seed)
    model.load_state_dict(finite_weights(r, r.steps[-1]))
    X = group_rows(model, G.order)["W_U"]
    labels = coset_partitions(G)[e["partition"]].labels
    Y = TSNE(n_components=2, perplexity=min(30, len(X) - 1) / 2, init="pca", random_state=0).fit_transform(X)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    cmap = "tab20" if labels.max() < 20 else "nipy_spectral"
    ax.scatter(Y[:, 0], Y[:, 1], c=labels, cmap=cmap, s=22)
    ax.set_title(f"W_U rows (t-SNE), coloured by {e['side']} cosets of {e['subgroup']} (ARI {e['ari']:.2f})",
                 fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


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
