"""Drawing and describing a run's weight-norm path against w_c: shared by analyses.landscape and
analyses.reduced_landscape."""

from __future__ import annotations

from typing import Any

import numpy as np

from analyses.common import finite


def draw_trajectory(ax, metrics: list[dict[str, Any]], cbar: bool = True) -> None:
    """The run's (weight norm, train/test loss) path, coloured by step on a log scale."""
    import matplotlib.colors

    rows = [r for r in metrics if finite([r.get("weight_norm")])]
    if not rows:
        return
    w = np.array([r["weight_norm"] for r in rows])
    steps = np.maximum(np.array([r["step"] for r in rows]), 1)
    norm = matplotlib.colors.LogNorm(vmin=steps.min(), vmax=max(steps.max(), 2))
    for key, marker in (("train_loss", "o"), ("test_loss", "s")):
        y = np.array([r.get(key) if finite([r.get(key)]) else np.nan for r in rows], dtype=float)
        ax.plot(w, y, color="grey", lw=0.6, alpha=0.6, zorder=2)
        sc = ax.scatter(w, y, c=steps, cmap="viridis", norm=norm, s=10, marker=marker, zorder=3,
                        label="the run: o train, s test (colour: step)" if key == "train_loss" else None)
    if cbar:
        ax.figure.colorbar(sc, ax=ax, label="step of the run")


def draw_norm_panel(ax, traj: dict[str, Any], summary: dict[str, Any], w_c: float) -> None:
    steps = np.maximum(np.array(traj["steps"]), 1)
    ax.plot(steps, traj["weight_norm"], color="tab:purple", label="weight norm")
    ax.axhline(w_c, color="tab:green", ls="--", label=f"w_c = {w_c:.3g}")
    for key, style in (("S_mem", ":"), ("S_gen", "-.")):
        if summary.get(key):
            ax.axvline(max(summary[key], 1), color="grey", ls=style, label=f"{key} = {summary[key]}")
    if traj.get("step_at_wc") is not None:
        ax.axvline(max(traj["step_at_wc"], 1), color="tab:green", ls=":", label=f"reaches w_c: {traj['step_at_wc']}")
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("total weight norm")
    ax.legend(fontsize=7)


def describe_trajectory(traj: dict[str, Any], summary: dict[str, Any]) -> str:
    if not traj["steps"]:
        return "trajectory: no weight norms in metrics.jsonl"
    s = (f"trajectory: norm {traj['weight_norm'][0]:.4g} at step {traj['steps'][0]} ({traj['start_ratio']:.3g} x w_c)"
         f" -> {traj['weight_norm'][-1]:.4g} at step {traj['steps'][-1]} ({traj['end_ratio']:.3g} x w_c); ")
    s += (f"within 10% of w_c from step {traj['step_at_wc']}" if traj["step_at_wc"] is not None
          else "never within 10% of w_c")
    if summary.get("S_gen") is not None:
        s += f"; S_gen {summary['S_gen']}"
    return s
