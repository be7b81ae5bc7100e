"""The report's S5 cosets section (fig. 5 of analyses.report): which subgroup's cosets the rows of the output layer
W_U cluster by, for a transformer and Chughtai et al.'s MLP, 3 seeds each. The probe is `analyses.cosets.run_cosets`,
called in-process on each run directory (its JSON under RUN_DIR/analyses/ is reused while the run and the options
are unchanged); per seed a t-SNE of W_U's rows (sklearn), as the seed document showed them, coloured by the best
coset partition and scored against the cosets of the seed's subgroup. Pre-registered checks
(analyses.report.checks).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from analyses.report.checks import CheckDef, Rule, Untested, num
from analyses.report.common import Ctx, Outcome, SMOKE_CKPT, SectionDef, Table, analysis, save_figure, single

S5_SUBGROUP = "(0 3)(1 4); (1 2)(3 4)"  # seed 000's subgroup of S5 (a dihedral group of order 10)
MODELS = ("transformer", "mlp")
TSNE_MIN_ARI = 0.5  # the same bar analyses.cosets puts on a partition in the full row space

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


def _tsne(model: str):
    def rule(ev):
        m = ev["models"].get(model)
        if not m or m["S_gen"] is None:
            return None, f"{model}: no run, or it did not generalise"
        return m["tsne_ari"] >= TSNE_MIN_ARI, f"{model}: t-SNE clusters against {m['tsne_match']}: ARI " \
            f"{m['tsne_ari']:.2f}"
    return rule


def _tested_on(m: str) -> str:
    return {"transformer": "a 1-layer transformer of width 64 (Power et al.'s has 2 layers of 128; the seed does not "
                           "name its model)",
            "mlp": "Chughtai et al.'s MLP (the seed does not name its model)"}[m]


COSET_CHECKS = [
    *[CheckDef(f"cosets.{m}", "000", Q_COS, (
        Rule("the run generalised, and W_U's best coset partition is significant (analyses.cosets: ARI >= 0.5, "
             "shuffle test p < 0.05) with a subgroup conjugate to the given one", _cosets(m)),),
        tested_on=_tested_on(m)) for m in MODELS],
    *[CheckDef(f"cosets.{m}.tsne", "000", Q_COS, (
        Rule(f"the run generalised, and in a 2-D t-SNE of W_U's 120 rows (sklearn, perplexity 30) a Ward clustering "
             f"into 12 clusters (the given subgroup's number of cosets) agrees with the left or right cosets of the "
             f"given subgroup or one of its conjugates, the best of those 12 partitions: ARI >= {TSNE_MIN_ARI:g}",
             _tsne(m)),), tested_on=_tested_on(m)) for m in MODELS],
]
COSET_UNTESTED: list[Untested] = []
COSET_PRESETS = {"smoke": {"mlp": "s5-cpu", "transformer": "s5-transformer-cpu"},
                 "cpu": {"mlp": "s5-cpu", "transformer": "s5-transformer-cpu"},
                 "gpu": {"mlp": "chughtai-s5", "transformer": "power2022-s5"}}


def cosets_settings(scale: str, data_path: str = "") -> dict[str, Any]:
    if scale == "smoke":
        return {"sweeps": {m: single(p, [0], {"steps": 40, "eval_every": 20, **SMOKE_CKPT})
                           for m, p in COSET_PRESETS[scale].items()},
                "argv": ["--every", "2", "--n-null", "9", "--timeline-null", "0"],
                "deviations": ["toy budget: 40 steps, one seed"]}
    every = "2" if scale == "cpu" else "4"
    dev = ["the seed's model and budget are not stated; ours: Chughtai et al.'s MLP narrowed to 64-wide embeddings, "
           "60% of the pairs, full batch, 5000 steps; and a transformer cut from Power et al.'s to 1 layer of width 64 "
           "(theirs: 2 layers of 128), 60% of the pairs (theirs: 50%), AdamW lr 3e-3 wd 1 with batches of 2048 (theirs: "
           "lr 1e-3, 512), stopped 500 steps after generalising (at most 12000 steps, theirs 1e5)", "3 seeds"] \
        if scale == "cpu" else ["3 seeds"]
    return {"sweeps": {m: single(p, [0, 1, 2], {}) for m, p in COSET_PRESETS[scale].items()},
            "argv": ["--every", every], "deviations": dev}


def coset_evidence(res: dict[str, Any]) -> dict[str, Any]:
    wu = res["matrices"]["W_U"]
    b, asked = wu["best"], wu["asked"]["best_conjugate"]
    return {"S_gen": res["S_gen"], "structure": bool(wu["structure"]), "subgroup": b["subgroup"], "side": b["side"],
            "order": b["order"], "ari": b["ari"], "partition": b["partition"], "from_step": wu["from_step"],
            "conj_class": b["conj_class"], "class_size": b["class_size"], "p": wu["p_value"],
            "conjugate": b["conj_class"] == asked["conj_class"], "asked_ari": asked["ari"],
            "asked_class": asked["conj_class"]}


def wu_rows(run: Path):
    """(the rows of W_U at the run's last checkpoint [|G|, d], the group)."""
    from analyses.common import finite_weights
    from analyses.cosets import open_group_run
    from interp.cosets import group_rows
    from training.models.build import build_model

    r, data, G = open_group_run(run)
    model = build_model(r.config.model, data, seed=r.config.train.seed)
    model.load_state_dict(finite_weights(r, r.steps[-1]))
    return group_rows(model, G.order)["W_U"], G


def tsne_view(run: Path, asked_class: int) -> dict[str, Any]:
    X, G = wu_rows(run)
    return {**tsne_agreement(X, G, asked_class), "G": G}


def tsne_agreement(X, G, asked_class: int) -> dict[str, Any]:
    """The t-SNE of the rows X [|G|, d], and how well a Ward clustering of it into as many clusters as the given
    subgroup has cosets matches the cosets (either side) of that subgroup's conjugates: the best such partition and
    its ARI."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.manifold import TSNE
    from sklearn.metrics import adjusted_rand_score

    from interp.cosets import coset_partitions

    Y = TSNE(n_components=2, perplexity=30, init="pca", random_state=0).fit_transform(X)
    parts = [(i, p) for i, p in enumerate(coset_partitions(G)) if p.subgroup.conj_class == asked_class]
    found = AgglomerativeClustering(n_clusters=parts[0][1].n_cosets, linkage="ward").fit_predict(Y)
    ari, i, text = max(((float(adjusted_rand_score(p.labels, found)), i, p.describe()) for i, p in parts),
                       key=lambda t: t[0])
    return {"Y": Y, "tsne_ari": ari, "tsne_partition": i, "tsne_match": text}


def cosets_run(ctx: Ctx, st: dict[str, Any]) -> Outcome:
    out = Outcome()
    rows = Table(["model", "seed", "rows", "best cosets", "order", "ARI", "p", "from step",
                  "conjugate to <(0 3)(1 4), (1 2)(3 4)>", "its best conjugate's ARI (final / over steps)"], [],
                 "Every weight matrix's best coset partition")
    wu = Table(["model", "seed", "S_mem / S_gen", "W_U's best cosets", "order", "its subgroup's conjugacy class",
                "ARI (p)", "conjugate to <(0 3)(1 4), (1 2)(3 4)> (dihedral, order 10)",
                "t-SNE: best cosets of that class, ARI"], [], "Per seed: W_U's best coset partition")
    for model, spec in st["sweeps"].items():
        views = []
        for r in ctx.sweep("cosets", model, spec):
            run = r["dir"]
            res = analysis("analyses.cosets", "run_cosets", [str(run), *st["argv"], "--subgroup", S5_SUBGROUP,
                                                             "--no-progress"], run / "analyses", "cosets.json")
            ev = out.seed(r["seed"])
            e = coset_evidence(res)
            view = tsne_view(run, e["asked_class"])
            e.update({k: view[k] for k in ("tsne_ari", "tsne_partition", "tsne_match")})
            ev.setdefault("models", {})[model] = e
            ev["generalised"] += e["S_gen"] is not None
            views.append((r["seed"], e, view))
            _matrix_rows(rows, model, r["seed"], res)
            wu.rows.append([model, r["seed"], f"{num(r.get('S_mem'), '.0f')} / {num(e['S_gen'], '.0f')}",
                            f"{e['side']} of {e['subgroup']}" + ("" if e["structure"] else " (not significant)"),
                            e["order"], f"class {e['conj_class']} ({e['class_size']} conjugates of order {e['order']})",
                            f"{e['ari']:.2f} ({e['p']:.2g})", "yes" if e["conjugate"] else "no",
                            f"{e['tsne_match']}: {e['tsne_ari']:.2f}"])
            if r["seed"] == min(spec.seeds):
                _first_seed_figures(ctx, out, model, run, res)
        if views:
            out.figure(save_figure(_tsne_figure(model, views), ctx.figure("cosets", f"{model}_tsne.png")),
                       f"{model}, one panel per seed: t-SNE of the 120 rows of W_U, coloured by that seed's best W_U "
                       "coset partition, as the seed document showed them. One colour per tight cluster means the "
                       "output layer groups permutations by those cosets; the title gives the partition and how well "
                       "the t-SNE's clusters match the cosets of <(0 3)(1 4), (1 2)(3 4)> or a conjugate (ARI).")
    out.tables += [wu, rows]
    return out


def _matrix_rows(table: Table, model: str, seed: int, res: dict[str, Any]) -> None:
    for name, m in res["matrices"].items():
        b, a = m["best"], m["asked"]
        table.rows.append([model, seed, name, f"{b['side']} of {b['subgroup']}" +
                           ("" if m["structure"] else " (not significant)"), b["order"], b["ari"], m["p_value"],
                           m["from_step"], b["conj_class"] == a["best_conjugate"]["conj_class"],
                           f"{a['best_conjugate']['ari']:.2f} / {a['best_ari_over_steps']:.2f}"])


def _first_seed_figures(ctx: Ctx, out: Outcome, model: str, run: Path, res: dict[str, Any]) -> None:
    out.figure(ctx.copy_figure(f"cosets_{model}", run / "analyses" / "cosets_rows.png"),
               f"{model}, first seed: rows of each weight matrix on their top principal components, coloured by the "
               "best coset partition; clusters of one colour are cosets.")
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


def _tsne_figure(model: str, views: list[tuple[int, dict[str, Any], dict[str, Any]]]):
    from matplotlib.figure import Figure

    from interp.cosets import coset_partitions

    fig = Figure(figsize=(4.4 * len(views), 4.8))
    for ax, (seed, e, v) in zip(fig.subplots(1, len(views), squeeze=False)[0], views):
        labels = coset_partitions(v["G"])[e["partition"]].labels
        ax.scatter(v["Y"][:, 0], v["Y"][:, 1], c=labels, cmap="tab20" if labels.max() < 20 else "nipy_spectral",
                   s=20, edgecolors="k", linewidths=0.2)
        ax.set_title("\n".join(textwrap.wrap(
            f"seed {seed}: colour = {e['side']} cosets of {e['subgroup']} (ARI {e['ari']:.2f}); t-SNE clusters vs "
            f"{e['tsne_match']}: ARI {e['tsne_ari']:.2f}", 52)), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{model}: W_U rows (t-SNE)", fontsize=10)
    fig.tight_layout()
    return fig


SECTION = SectionDef("cosets",
                     "S5: which subgroup's cosets the output embedding clusters by",
                     COSET_CHECKS, COSET_UNTESTED, cosets_settings, cosets_run, figure="5")
