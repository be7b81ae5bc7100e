"""Figures of `python -m analyses.fourier`: embedding Fourier norms, neuron clusters, progress measures."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure  # the Figure API: no pyplot state, no backend switched

from interp import fourier
from interp.grid import grid_activations
from interp.modular import ModularStructure

PHASE_COLOURS = ("#f4e3c1", "#d8ead3", "#d5e1f2")  # memorisation, circuit formation, cleanup


def draw_all(run, s: ModularStructure, result: dict[str, Any], ref_probe: fourier.FourierProbes,
             model: torch.nn.Module, ref_weights: dict[str, torch.Tensor]) -> dict[str, Figure]:
    """The four figures by file name; the caller writes them (analyses.common.write_outputs)."""
    title = f"{run.dir.name}: {s.op} mod {s.p}, over {'Z_%d' % s.n}"
    spectra = fourier.neuron_spectra(grid_activations(model, [ref_weights], s).acts, s)[0].numpy()
    return {"fourier_embedding.png": embedding_figure(result, title),
            "fourier_clusters.png": clusters_figure(result, spectra, title),
            "fourier_progress.png": progress_figure(run.metrics, result, title),
            "fourier_key_norms.png": key_norms_figure(result, title)}


def _component_bars(ax, norms: list[float], names: list[str], key: list[int], label: str) -> None:
    freqs = [0 if nm == "const" else int(nm.split()[1]) for nm in names]
    colours = ["tab:red" if f in key else "tab:gray" for f in freqs]
    ax.bar(np.arange(len(norms)), norms, color=colours, width=1.0)
    ticks = [i for i, nm in enumerate(names) if nm == "const" or (freqs[i] in key and nm.startswith("cos"))]
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=60, fontsize=7)
    ax.set_ylabel("norm")
    ax.set_title(label, fontsize=10)


def embedding_figure(result: dict[str, Any], title: str) -> Figure:
    f, key = result["final"], result["key_frequencies"]
    fig = Figure(figsize=(11, 6))
    axes = fig.subplots(2, 1)
    _component_bars(axes[0], f["embed_fourier_norms"], f["basis"], key, "W_E in the Fourier basis (norm per component)")
    _component_bars(axes[1], f["unembed_fourier_norms"], f["basis"], key,
                    "W_L = W_U^T W_out in the Fourier basis (over the output), norm per component")
    fig.suptitle(f"{title}, step {result['ref_step']}; key frequencies {key or 'none'} in red")
    fig.tight_layout()
    return fig


def clusters_figure(result: dict[str, Any], spectra: np.ndarray, title: str) -> Figure:
    c, key = result["clusters"], result["key_frequencies"]
    fig = Figure(figsize=(13, 4.5))
    gs = fig.add_gridspec(1, 3, width_ratios=[1.4, 1, 1.2])
    ax = fig.add_subplot(gs[0])
    freq, share = np.array(c["neuron_freq"]), np.array(c["neuron_share"], dtype=float)
    order = np.lexsort((-share, np.where(share >= result["threshold"], freq, 10**6)))
    im = ax.imshow(spectra[:, order], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1,
                   extent=(-0.5, len(order) - 0.5, spectra.shape[0] + 0.5, 0.5))
    ax.set_xlabel("neuron (sorted by cluster)")
    ax.set_ylabel("frequency k")
    ax.set_title("share of each neuron's variance in the k block", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)

    ax = fig.add_subplot(gs[1])
    sizes = {int(k): v for k, v in c["sizes"].items()}
    ks = sorted(sizes)
    ax.bar([str(k) for k in ks], [sizes[k] for k in ks], color=["tab:red" if k in key else "tab:gray" for k in ks])
    ax.bar(["none"], [c["n_neurons"] - c["in_clusters"]], color="lightgray")
    ax.set_xlabel("frequency")
    ax.set_ylabel("neurons")
    ax.set_title(f"clusters (share >= {result['threshold']}): {c['in_clusters']}/{c['n_neurons']} neurons",
                 fontsize=10)
    ax.tick_params(axis="x", labelsize=7, rotation=60)

    ax = fig.add_subplot(gs[2])
    ck = result["checkpoints"]
    for k, v in ck["cluster_sizes_key"].items():
        ax.plot(ck["step"], v, label=f"k={k}")
    ax.plot(ck["step"], ck["in_clusters"], color="black", label="all clusters")
    ax.set_xlabel("step")
    ax.set_ylabel("neurons")
    ax.set_title("cluster sizes during training", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{title}, step {result['ref_step']}")
    fig.tight_layout()
    return fig


def _phase_spans(ax, ph: dict[str, Any], last: int) -> None:
    bounds = [0, ph["memorisation_end"], ph["circuit_formation_end"], ph["cleanup_end"]]
    names = ("memorisation", "circuit formation", "cleanup")
    for i in range(3):
        a, b = bounds[i], bounds[i + 1]
        if a is None or b is None:
            break
        ax.axvspan(a, b, color=PHASE_COLOURS[i], alpha=0.6, lw=0, label=names[i])
    for b in bounds[1:]:
        if b is not None:
            ax.axvline(b, color="gray", ls="--", lw=0.8)


def progress_figure(metrics: list[dict[str, Any]], result: dict[str, Any], title: str) -> Figure:
    ck, ph = result["checkpoints"], result["phases"]
    steps = ck["step"]
    last = steps[-1] if steps else 1
    fig = Figure(figsize=(12, 7.5))
    axes = fig.subplots(2, 2, sharex=True)
    ax = axes[0, 0]
    ms = [r["step"] for r in metrics]
    ax.plot(ms, [r["train_loss"] for r in metrics], color="tab:blue", label="train")
    ax.plot(ms, [r["test_loss"] for r in metrics], color="tab:orange", label="test")
    ax.plot(steps, _nan(ck["restricted_loss"]), color="tab:green", marker=".", ms=3, label="restricted (test)")
    ax.plot(steps, _nan(ck["excluded_loss"]), color="tab:purple", marker=".", ms=3, label="excluded (train)")
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.set_title(f"losses; key frequencies {result['key_frequencies']}", fontsize=10)
    ax = axes[0, 1]
    ax.plot(steps, ck["gini_embed"], label="W_E")
    ax.plot(steps, ck["gini_unembed"], label="W_L")
    ax.set_ylabel("Gini of Fourier norms")
    ax.set_title("sparsity in the Fourier basis", fontsize=10)
    ax = axes[1, 0]
    ax.plot(ms, [r["weight_norm"] for r in metrics], color="black", label="weight norm")
    ax.set_ylabel("sqrt(sum of squared weights)")
    ax.set_title("total weight norm", fontsize=10)
    ax = axes[1, 1]
    ax.plot(steps, ck["logit_periodicity"], label="logit variance explained by key cos(w(a+b-c))")
    n = result["clusters"]["n_neurons"]
    ax.plot(steps, np.array(ck["in_clusters"]) / n, label="share of neurons in clusters")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("circuit", fontsize=10)
    for ax in axes.flat:
        _phase_spans(ax, ph, last)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(f"{title}; phases: {ph['memorisation_end']} / {ph['circuit_formation_end']} / {ph['cleanup_end']}")
    fig.tight_layout()
    return fig


def key_norms_figure(result: dict[str, Any], title: str) -> Figure:
    """Norm of W_E's Fourier components per frequency over training: each key frequency, and the mean and
    maximum of the others (the demo's key-frequency embedding norms over training)."""
    ck, key = result["checkpoints"], result["key_frequencies"]
    steps, norms = np.array(ck["step"]), _nan_2d(ck["embed_norms_by_freq"])  # [T, n // 2]
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for k in key:
        ax.plot(steps, norms[:, k - 1], label=f"k = {k}")
    others = [k - 1 for k in range(1, norms.shape[1] + 1) if k not in key]
    if others:
        ax.plot(steps, norms[:, others].mean(1), color="gray", label="other frequencies, mean")
        ax.plot(steps, norms[:, others].max(1), color="gray", linestyle=":", label="other frequencies, max")
    ax.set_xscale("symlog", linthresh=max(1, int(steps[1]) if len(steps) > 1 else 1))
    ax.set_xlabel("step")
    ax.set_ylabel("norm of W_E's cos_k, sin_k components")
    _phase_spans(ax, result["phases"], int(steps[-1]) if len(steps) else 1)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{title}: key-frequency embedding norms", fontsize=10)
    fig.tight_layout()
    return fig


def _nan_2d(rows: list) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)


def _nan(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)
