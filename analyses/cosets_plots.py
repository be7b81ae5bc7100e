"""Figures and the printed summary of `python -m analyses.cosets`: rows coloured by the best cosets, the scores
over training, the irreducible representations."""

from __future__ import annotations

import numpy as np


def _principal(X: np.ndarray, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rows on their top k principal components [n, k] and the variance share of each. Label-free on purpose:
    a plane chosen to separate the cosets would show clusters in pure noise as well."""
    Xc = X - X.mean(0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    k = min(k, len(S))
    Y = np.zeros((len(X), 4))
    Y[:, :k] = U[:, :k] * S[:k]
    share = np.zeros(4)
    share[:k] = S[:k] ** 2 / max((S**2).sum(), 1e-300)
    return Y, share


def plot_rows(fits, G, title: str):
    import matplotlib
    from matplotlib.figure import Figure

    from interp.cosets import coset_partitions

    names = list(fits)
    fig = Figure(figsize=(10, 4.6 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False)
    for row, name in enumerate(names):
        fit, _, X = fits[name]
        p = coset_partitions(G)[fit.best]
        Y, share = _principal(X)
        cmap = matplotlib.colormaps.get_cmap("tab20" if p.n_cosets <= 20 else "hsv")
        colours = cmap((p.labels % 20) / 20 if p.n_cosets <= 20 else p.labels / p.n_cosets)
        verdict = "" if fit.structure else "  (no significant structure)"
        for ax, (i, j) in zip(axes[row], ((0, 1), (2, 3))):
            ax.scatter(Y[:, i], Y[:, j], c=colours, s=22, edgecolors="k", linewidths=0.3)
            ax.set_title(f"{name} rows, PC{i + 1} ({100 * share[i]:.0f}%) / PC{j + 1} ({100 * share[j]:.0f}%)",
                         fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"colour: {p.describe()}\norder {p.subgroup.order}, {p.n_cosets} cosets, "
                                f"ARI {fit.ari[fit.best]:.2f}, score {fit.score[fit.best]:.2f}{verdict}", fontsize=9)
    fig.suptitle(f"{title}: rows coloured by the best coset partition", fontsize=11)
    return fig


def plot_scores(result, title: str):
    from matplotlib.figure import Figure

    steps = np.array(result["steps"])
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for name, m in result["matrices"].items():
        t = m["timeline"]
        line, = ax.plot(steps, t["ari"], lw=2, label=f"{name}: {m['best']['side']} cosets of {m['best']['subgroup']}")
        ax.plot(steps, t["score"], lw=1, ls="--", color=line.get_color())
        ax.plot(steps, t["null_ari"], lw=0.6, ls=":", color=line.get_color())
        ax.plot(steps, t["top_ari"], lw=0.7, alpha=0.5, color=line.get_color())
        if m["from_step"] is not None:
            ax.axvline(m["from_step"], color=line.get_color(), lw=0.8, alpha=0.6)
    ax.axhline(result["settings"]["min_ari"], color="grey", lw=0.6, ls="--")
    acc = result["test_acc"]
    if any(a is not None for a in acc):
        ax2 = ax.twinx()
        ax2.plot(steps, [np.nan if a is None else a for a in acc], color="k", lw=0.8, alpha=0.5)
        ax2.set_ylabel("test accuracy (grey)")
        ax2.set_ylim(-0.02, 1.02)
    ax.set_xscale("symlog", linthresh=max(steps[1] if len(steps) > 1 else 1, 1))
    ax.set_xlim(0, steps[-1] * 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("ARI with the clustering (solid), variance score (dashed)")
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.02)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{title}: the last checkpoint's best cosets over training\n(thin: best candidate at each step; "
                 "dotted: shuffle null)", fontsize=10)
    return fig


def plot_irreps(result, title: str):
    from matplotlib.figure import Figure

    ir = result["irreps"]
    names = [n for n in ir["irreps"] if n != "trivial"]
    labels = {n: ir["irreps"][n]["label"] for n in names}
    steps = np.array(result["steps"])
    tl = ir["timeline"]
    fig = Figure(figsize=(19, 4.8))
    a1, a3, a2 = fig.subplots(1, 3)
    for n in names:
        a1.plot(steps, tl["char_explained"][n], lw=2 if n in ir["key"] else 1, label=labels[n])
    a1.plot(steps, tl["key_char_explained"], "k--", lw=1, label="ours: key irreps together")
    a1.plot(steps, tl["chughtai_logits_explained"], "k:", lw=1,
            label="Chughtai et al.: percent logits explained")
    a1.set_ylabel("logit variance explained by chi(f(a,b) c^-1)")
    for n in names:  # the same colours in the same order as the left panel
        a3.plot(steps, tl["ablation_loss"][n], lw=2 if n in ir["key"] else 1, label=labels[n])
    a3.plot(steps, tl["loss"], "k-", lw=1, label="full logits")
    a3.set_yscale("log")
    a3.set_ylabel("loss (all pairs) after removing the irrep from the logits")
    for ax in (a1, a3):
        ax.set_xscale("symlog", linthresh=max(steps[1] if len(steps) > 1 else 1, 1))
        ax.set_xlim(0, steps[-1] * 1.05)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    groups = {"logits": {n: ir["irreps"][n]["variance_share"] for n in names}}
    for m, rec in result["matrices"].items():
        if rec["irrep_shares"]:
            groups[f"{m} rows"] = {n: rec["irrep_shares"][n] for n in names}
    groups["random"] = {n: ir["random_shares"][n] for n in names}
    width = 0.8 / len(groups)
    x = np.arange(len(names))
    for i, (label, shares) in enumerate(groups.items()):
        a2.bar(x + i * width, [shares[n] for n in names], width, label=label,
               color="lightgrey" if label == "random" else None)
    a2.set_xticks(x + 0.4 - width / 2)
    a2.set_xticklabels([labels[n] for n in names], fontsize=7, rotation=20)
    a2.set_ylabel("share of variance in the isotypic component")
    a2.legend(fontsize=8)
    a2.set_title("last checkpoint", fontsize=10)
    key = " + ".join(labels[n] for n in ir["key"]) or "none"
    key_c = " + ".join(labels[n] for n in ir["key_chughtai"]) or "none"
    fig.suptitle(f"{title}: irreducible representations (key, ours: {key}; Chughtai et al.'s rule: {key_c})",
                 fontsize=11)
    fig.tight_layout()
    return fig


def summary_lines(result) -> list[str]:
    lines = []
    for name, m in result["matrices"].items():
        b = m["best"]
        side = "cosets" if b["side"] == "both" else f"{b['side']} cosets"
        what = (f"{side} of {b['subgroup']} (order {b['order']}, {b['n_cosets']} cosets, "
                f"class of {b['class_size']} conjugate{'s' if b['class_size'] > 1 else ''})")
        numbers = f"ARI {b['ari']:.2f}, score {b['score']:.2f}, p {m['p_value']:.2g}"
        if m["structure"]:
            since = f", from step {m['from_step']}" if m["from_step"] is not None else ""
            lines.append(f"{name} rows: {what}, {numbers}{since}")
        else:
            lines.append(f"{name} rows: no coset clusters (best: {what}, {numbers})")
        if "asked" in m:
            a = m["asked"]["best_conjugate"]
            lines.append(f"    {m['asked']['given']} = {m['asked']['subgroup']} and conjugates: best {a['side']} cosets of {a['subgroup']}, "
                         f"ARI {a['ari']:.2f}, score {a['score']:.2f} (best ARI over all steps "
                         f"{m['asked']['best_ari_over_steps']:.2f})")
    if "key" in result["irreps"]:
        lines += irrep_lines(result["irreps"])
    return lines


def irrep_lines(ir) -> list[str]:
    """Our key irreps, Chughtai et al.'s, and what removing each irrep from the logits costs."""
    per = ir["irreps"]

    def names(key):
        return " + ".join(per[n]["label"] for n in key) or "none"

    rl = (f"; loss {ir['loss']:.3g} -> {ir['restricted_loss']:.3g} restricted to them, "
          f"{ir['excluded_loss']:.3g} without them" if ir["key"] else "")
    ablated = sorted((n for n in per if n != "trivial"), key=lambda n: -per[n]["ablation_loss"])
    return [f"logits, key irreps (ours: character term >= {100 * ir['key_threshold']:g}% of the logit variance): "
            f"{names(ir['key'])}; their characters chi(f(a,b) c^-1) explain {100 * ir['key_char_explained']:.1f}% "
            f"of the logit variance{rl}",
            f"logits, key irreps (Chughtai et al.: similarity > {ir['key_chughtai_threshold']:g}): "
            f"{names(ir['key_chughtai'])}; their percent logits explained (every non-trivial irrep): "
            f"{100 * ir['chughtai_logits_explained']:.1f}%",
            f"logits, loss {ir['loss']:.3g} after removing one irrep: "
            + ", ".join(f"{per[n]['label']} {per[n]['ablation_loss']:.3g}" for n in ablated)]
