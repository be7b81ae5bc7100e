"""The run's own figure: loss and accuracy against step (log-scaled), with S_mem and S_gen marked."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.safeio import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kw: Any) -> Figure:
    """A matplotlib Figure, imported here: a run pays for matplotlib only when it draws, after training. The Figure
    API draws without pyplot, so drawing never switches a notebook's backend."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def plot_curves(metrics: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str = "") -> None:
    steps = [max(r["step"], 1) for r in metrics]  # step 0 drawn at 1 on the log axis
    fig = new_figure(figsize=(11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split, colour in (("train", "tab:blue"), ("test", "tab:orange")):
        ax_loss.plot(steps, [r[f"{split}_loss"] for r in metrics], color=colour, label=split)
        if metrics and metrics[0].get(f"{split}_acc") is not None:
            ax_acc.plot(steps, [r[f"{split}_acc"] for r in metrics], color=colour, label=split)
    if any(0 < v < math.inf for line in ax_loss.lines for v in line.get_ydata()):  # a diverged run may have none
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("accuracy")
    if not ax_acc.lines:
        ax_acc.text(0.5, 0.5, "regression task: no accuracy", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set_ylim(-0.02, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        for key, style in (("S_mem", ":"), ("S_gen", "--"), ("diverged_at", "-.")):
            if summary.get(key) is not None:
                ax.axvline(max(summary[key], 1), color="grey", linestyle=style, label=key)
        if ax.get_legend_handles_labels()[0]:  # the accuracy panel is empty for regression tasks
            ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def render_png(fig: Figure, **savefig_kw: Any) -> bytes:
    """The figure as PNG bytes (so a caller can render every figure before it writes any file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, **savefig_kw)
    return buf.getvalue()


def save_figure(fig: Figure, path: Path, **savefig_kw: Any) -> Path:
    """The one way a figure is written, by the loop and by every analysis: rendered in memory, then written to a
    temporary name and renamed (its temporary is cleaned up like every other one), so a reader never sees half a
    PNG. `fig` is a `matplotlib.figure.Figure` (not pyplot's), so nothing is left open in pyplot's registry."""
    atomic_write_bytes(Path(path), render_png(fig, **savefig_kw))
    return Path(path)
