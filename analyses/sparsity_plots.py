"""Figures and the printed summary of `python -m analyses.sparsity`: sparsity and faithfulness over training,
weight KDEs, t-SNE panels."""

from __future__ import annotations

from typing import Any

import numpy as np


def _mark(ax, res: dict[str, Any]) -> None:
    for key, style, label in (("S_mem", ":", "S_mem"), ("switch_step", "-.", "wd/lr switch"), ("S_gen", "--", "S_gen")):
        if res.get(key) is not None:
            ax.axvline(res[key], color="grey", linestyle=style, label=label)


def plot_progress(res: dict[str, Any]):
    """Effective sparsity, faithfulness, spectral norms and neuron norms against step."""
    from matplotlib.figure import Figure

    steps = np.array(res["steps"])
    fig = Figure(figsize=(8, 11))
    axes = fig.subplots(4, 1, sharex=True)
    ax = axes[0]
    ax.plot(steps, res["effective_sparsity"], color="tab:purple", marker=".", label="effective sparsity")
    ax.set_yscale("log")
    ax.set_ylabel(f"neurons (of {res['d_mlp']})")
    ax.set_title(f"{res['run']}: {res['task']}, {res['layer']}")
    ax = axes[1]
    ax.plot(steps, res["train_acc"], color="tab:blue", label="train acc")
    ax.plot(steps, res["test_acc"], color="tab:orange", label="test acc")
    ax.plot(steps, res["faithfulness"], color="tab:purple", label="faithfulness (test)")
    ax.plot(steps, res["random_faithfulness"], color="tab:purple", alpha=0.4, linestyle=":",
            label="random subnetwork")
    ax.plot(steps, res["final_circuit_faithfulness"], color="tab:green",
            label=f"final {res['final_circuit_size']}-neuron circuit (Merrill et al.)")
    ax.plot(steps, res["final_circuit_random_faithfulness"], color="tab:green", alpha=0.4, linestyle=":",
            label="one random set of that size")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy / agreement")
    ax = axes[2]
    for name, vals in res["interface_spectral_norms"].items():
        ax.plot(steps, vals, label=name)
    ax.set_ylabel("spectral norm")
    ax = axes[3]
    norms = np.array(res["neuron_norms"])
    top = np.argsort(-norms[-1])[: max(res["effective_sparsity"][-1], 1)]
    rest = np.setdiff1d(np.arange(norms.shape[1]), top)
    for j in top:
        ax.plot(steps, norms[:, j], color="tab:red", linewidth=0.8)
    ax.plot([], [], color="tab:red", label=f"final top {len(top)} neurons")
    if len(rest):
        ax.fill_between(steps, np.percentile(norms[:, rest], 5, axis=1), np.percentile(norms[:, rest], 95, axis=1),
                        color="grey", alpha=0.3, label="other neurons (5-95%)")
        ax.plot(steps, np.median(norms[:, rest], axis=1), color="grey")
    ax.set_ylabel("incoming-weight norm")
    ax.set_xlabel("step")
    for ax in axes:
        _mark(ax, res)
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def plot_kde(res: dict[str, Any]):
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    grid = np.array(res["kde"]["grid"])
    dens = res["kde"]["density"]
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(dens)))
    for c, (step, d) in zip(colours, dens.items()):
        ax.plot(grid, d, color=c, label=f"step {step}")
    ax.set_yscale("log")
    top = max(max(d) for d in dens.values())
    ax.set_ylim(top * 1e-4, top * 2)
    ax.set_xlabel(f"{res['layer']}.W_in entry")
    ax.set_ylabel("density (KDE)")
    ax.set_title(f"{res['run']}: hidden-layer weights")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_tsne(res: dict[str, Any]):
    import matplotlib
    from matplotlib.figure import Figure

    panels = res["tsne"]
    fig = Figure(figsize=(3.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    names = res["class_names"]
    for ax, (step, p) in zip(axes[0], panels.items()):
        xy, cls = np.array(p["xy"]), np.array(p["classes"])
        if names:
            for c, name in enumerate(names):
                sel = cls == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=matplotlib.colormaps["tab10"](c % 10), label=name)
        else:
            ax.scatter(xy[:, 0], xy[:, 1], s=5, c=cls, cmap="hsv")
        i = res["steps"].index(int(step))
        ax.set_title(f"step {step}\ntest acc {res['test_acc'][i]:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if names:
        axes[0][-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"t-SNE of {res['hook']}" + (" coloured by the relevant bits" if names else " coloured by label"),
                 fontsize=10)
    fig.tight_layout()
    return fig


def describe(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    lines = [f"{res['run']}: {res['task']}, {res['d_mlp']} hidden units ({res['layer']}), {len(res['steps'])} checkpoints; "
             f"S_mem {res['S_mem']}, S_gen {res['S_gen']}"
             + (f", wd/lr switch at {res['switch_step']}" if res.get("switch_step") is not None else "")]
    before, after = h["effective_sparsity_mem"], h["effective_sparsity_last"]
    if before is not None:
        lines.append(f"effective sparsity {before} -> {after} neurons between steps {h['mem_step']} and "
                     f"{h['last_step']}" + (f" ({h['effective_sparsity_gen']} at S_gen, step {h['gen_step']})"
                                             if h["gen_step"] is not None else "; never generalised"))
    else:
        lines.append(f"never memorised; effective sparsity {h['effective_sparsity_init']} -> {after} neurons")
    if "effective_sparsity_after_gen_min" in h:
        lines.append(f"after S_gen: effective sparsity min {h['effective_sparsity_after_gen_min']}, median "
                     f"{h['effective_sparsity_after_gen_median']:g}, max {h['effective_sparsity_after_gen_max']} "
                     "neurons over the checkpoints since")
    lines.append(f"faithfulness of the {after}-neuron subnetwork at step {h['last_step']}: {h['faithfulness_last']:.3f}"
                 f" (random {after}-neuron subnetworks: {h['random_faithfulness_last']:.3f})")
    if h["mem_step"] is not None:
        lines.append(f"the final {res['final_circuit_size']}-neuron circuit followed back (Merrill et al.): faithfulness "
                     f"{h['final_circuit_faithfulness_mem']:.3f} at S_mem, "
                     + (f"{h['final_circuit_faithfulness_gen']:.3f} at S_gen; " if h["gen_step"] is not None else "")
                     + f"one random set of its size {h['final_circuit_random_faithfulness_mem']:.3f} at S_mem")
    if "spectral_norm_name" in h:
        lines.append(f"spectral norm of {h['spectral_norm_name']}: {h['spectral_norm_init']:.2f} at init, "
                     + (f"{h['spectral_norm_mem']:.2f} at S_mem, " if h["spectral_norm_mem"] is not None else "")
                     + (f"{h['spectral_norm_gen']:.2f} at S_gen, " if h["spectral_norm_gen"] is not None else "")
                     + f"{h['spectral_norm_last']:.2f} at the end (min {h['spectral_norm_min']:.2f} at step "
                     f"{h['spectral_norm_min_step']}, max {h['spectral_norm_peak']:.2f} at step "
                     f"{h['spectral_norm_peak_step']})")
    return lines
