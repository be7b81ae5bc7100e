"""The panels of `python -m analyses.explore`'s run page, one builder per analysis result.

A panel is a dict the page's script reads (analyses.explore_page):

- `traces`, `layout`: a plotly figure as it looks at the first checkpoint;
- `dyn`: per moving trace, its `frames` (the trace's data at each step the analysis has) and `at` (for each of the
  page's checkpoints, the frame shown: the analysis' last step at or before it, so a panel whose analysis used
  every k-th checkpoint stays put in between);
- `cursor`: a vertical line at the chosen step (curves over steps);
- `readout`: per checkpoint, one line of the numbers the panel shows then.

Only what the panels draw is kept, rounded to the digits a plot can show; per-example quantities are
downsampled (the neuron grid, the t-SNE points).
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

DIGITS = 4  # significant digits kept for plotted values
GRID_MAX = 64  # operand values per axis of the neuron-activation grid (strided above this)


def sig(x: Any, digits: int = DIGITS) -> Any:
    """`x` (a number or nested lists) rounded to `digits` significant digits; NaN/inf as None."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [sig(v, digits) for v in x]
    if x is None or isinstance(x, bool):
        return x
    x = float(x)
    return None if not math.isfinite(x) else float(f"{x:.{digits}g}")


def rounded(a: np.ndarray, digits: int) -> list:
    """`a` as nested lists, rounded to `digits` significant digits of its largest magnitude (one np.round: the
    heatmap's colours cannot show more)."""
    top = float(np.abs(a).max()) if a.size else 0.0
    if not math.isfinite(top):
        return sig(a.tolist(), digits)
    decimals = digits - 1 - (math.floor(math.log10(top)) if top > 0 else 0)
    return np.round(a, decimals).tolist()


def at_map(page_steps: list[int], steps: list[int]) -> list[int]:
    """For each page step, the index of the last of `steps` at or before it (the first one before any)."""
    return [max(bisect.bisect_right(steps, s) - 1, 0) for s in page_steps]


def panel(pid: str, title: str, traces: list[dict], layout: dict | None = None, dyn: list[dict] | None = None,
          cursor: bool = False, readout: list[str] | None = None) -> dict[str, Any]:
    return {"id": pid, "title": title, "traces": traces, "layout": layout or {}, "dyn": dyn or [],
            "cursor": cursor, "readout": readout}


def moving(trace: int, frames: list[dict], at: list[int]) -> dict[str, Any]:
    return {"trace": trace, "frames": frames, "at": at}


def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def readout(at: list[int], text) -> list[str]:
    """Per page checkpoint: `text(i)` of the frame shown there."""
    return [text(i) for i in at]


def line(x, y, name: str, **kw) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "x": list(x), "y": sig(y), "name": name, **kw}


# --- training curves (every run) -------------------------------------------------------------------------------


def marks(summary: dict[str, Any], phases: dict[str, Any] | None) -> list[tuple[str, int]]:
    """The steps marked on every curve: S_mem, S_gen and, when the Fourier analysis found them, the phase ends."""
    out = [("S_mem", summary.get("S_mem")), ("S_gen", summary.get("S_gen"))]
    if phases:
        out += [("memorisation ends", phases.get("memorisation_end")),
                ("circuit formation ends", phases.get("circuit_formation_end")),
                ("cleanup ends", phases.get("cleanup_end"))]
    return [(n, s) for n, s in out if isinstance(s, int)]


def mark_shapes(steps_marked: list[tuple[str, int]]) -> tuple[list[dict], list[dict]]:
    colours = {"S_mem": "#d62728", "S_gen": "#2ca02c"}
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": s, "x1": s, "y0": 0, "y1": 1,
               "line": {"color": colours.get(n, "#888"), "dash": "dot", "width": 1}} for n, s in steps_marked]
    notes = [{"x": math.log10(max(s, 1)), "xref": "x", "yref": "paper", "y": 1 - 0.07 * k, "text": n,
              "showarrow": False, "font": {"size": 10, "color": colours.get(n, "#555")}, "xanchor": "left"}
             for k, (n, s) in enumerate(steps_marked)]
    return shapes, notes


def curves(page_steps: list[int], metrics: list[dict], summary: dict, phases: dict | None) -> list[dict]:
    """Loss (log-log) and accuracy (log steps) with S_mem, S_gen and the phase ends marked."""
    rows = [r for r in metrics if isinstance(r.get("step"), int)]
    steps = [r["step"] for r in rows]
    at = at_map(page_steps, steps)
    shapes, notes = mark_shapes(marks(summary, phases))
    out = []
    for pid, title, keys, ytype in (("loss", "Loss", ("train_loss", "test_loss"), "log"),
                                    ("accuracy", "Accuracy", ("train_acc", "test_acc"), "linear")):
        keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
        if not keys:
            continue
        traces = [line(steps, [r.get(k) for r in rows], k.replace("_", " ")) for k in keys]
        text = lambda i, keys=keys: f"step {steps[i]}: " + ", ".join(  # noqa: E731
            f"{k.replace('_', ' ')} {fmt(sig(rows[i].get(k)))}" for k in keys)
        out.append(panel(pid, title, traces, {"xaxis": {"type": "log", "title": "step"},
                                              "yaxis": {"type": ytype}, "shapes": shapes, "annotations": notes},
                         cursor=True, readout=readout(at, text)))
    return out


# --- modular arithmetic (analyses.fourier) --------------------------------------------------------------------


def fourier_panels(page_steps: list[int], r, neuron: dict | None) -> list[dict]:
    c = r.checkpoints
    steps, key = c["step"], r.key_frequencies
    at = at_map(page_steps, steps)
    norms = c["embed_norms_by_freq"]
    freqs = list(range(1, len(norms[0]) + 1))
    colour = ["#d62728" if k in key else "#1f77b4" for k in freqs]
    out = [panel("fourier_norms", "W_E's Fourier norms per frequency (key frequencies in red)",
                 [{"type": "bar", "x": freqs, "y": sig(norms[0]), "marker": {"color": colour}, "name": "norm"}],
                 {"xaxis": {"title": "frequency"}}, [moving(0, [{"y": [sig(n)]} for n in norms], at)],
                 readout=readout(at, lambda i: f"step {steps[i]}: strongest frequencies " + ", ".join(
                     str(freqs[j]) for j in np.argsort(norms[i])[::-1][:5])))]
    sizes = c["cluster_sizes_key"]
    if key:
        out.append(panel("clusters", f"Neurons in each key frequency's cluster ({r.min_cluster_size} make a cluster)",
                         [{"type": "bar", "x": [f"freq {k}" for k in key], "y": [sizes[str(k)][0] for k in key],
                           "name": "neurons"}], {"xaxis": {"title": "key frequency"}},  # non-numeric x: restyling
                         # y makes plotly.js guess the axis type again, and a category axis of numbers turns linear
                         [moving(0, [{"y": [[sizes[str(k)][i] for k in key]]} for i in range(len(steps))], at)],
                         readout=readout(at, lambda i: f"step {steps[i]}: " + ", ".join(
                             f"{k}: {sizes[str(k)][i]}" for k in key) + f"; {c['in_clusters'][i]} in clusters")))
    losses = ("train_loss", "test_loss", "restricted_loss", "excluded_loss")
    out.append(panel("ablations", "Restricted and excluded loss (key frequencies kept / removed)",
                     [line(steps, c[k], k.replace("_", " ")) for k in losses],
                     {"xaxis": {"type": "log", "title": "step"}, "yaxis": {"type": "log"}}, cursor=True,
                     readout=readout(at, lambda i: f"step {steps[i]}: " + ", ".join(
                         f"{k.replace('_', ' ')} {fmt(sig(c[k][i]))}" for k in losses))))
    if c.get("attention_from_eq") is not None:
        att = c["attention_from_eq"]
        pos = ["a", "b", "="][: len(att[0])]
        out.append(panel("attention", "Attention from '=' (first layer, mean over heads)",
                         [{"type": "bar", "x": pos, "y": sig(att[0]), "name": "attention"}],
                         {"yaxis": {"range": [0, 1]}}, [moving(0, [{"y": [sig(a)]} for a in att], at)],
                         readout=readout(at, lambda i: f"step {steps[i]}: " + ", ".join(
                             f"{p} {fmt(sig(v))}" for p, v in zip(pos, att[i])))))
    if neuron is not None:
        out.append(neuron_panel(page_steps, neuron))
    return out


def neuron_panel(page_steps: list[int], nd: dict) -> dict:
    steps, z = nd["steps"], nd["z"]
    at = at_map(page_steps, steps)
    return panel("neuron", f"Neuron {nd['neuron']}'s activation on the (a, b) grid (frequency {nd['freq']})",
                 [{"type": "heatmap", "x": nd["b"], "y": nd["a"], "z": z[0], "colorscale": "RdBu", "zmid": 0}],
                 {"xaxis": {"title": "b"}, "yaxis": {"title": "a"}},
                 [moving(0, [{"z": [g]} for g in z], at)],
                 readout=readout(at, lambda i: f"step {steps[i]}: activation range "
                                 f"[{fmt(nd['lo'][i])}, {fmt(nd['hi'][i])}]"))


def neuron_grid(run, r) -> dict | None:
    """The activation of one neuron (the strongest-share neuron of the largest key-frequency cluster at the
    reference step; without key frequencies, the neuron most concentrated on one frequency) on the operand grid
    (strided to <= GRID_MAX per axis), at every checkpoint the Fourier analysis probed (`neuron_acts`)."""
    from interp.modular import modular_structure

    cl = r.clusters
    if r.key_frequencies:
        freq = max(r.key_frequencies, key=lambda k: cl["key_sizes"][str(k)])
        members = [j for j, f in enumerate(cl["neuron_freq"]) if f == freq]
    else:  # no cluster yet (not grokked): the neuron most concentrated on one frequency
        members = list(range(len(cl["neuron_share"])))
    neuron = max(members, key=lambda j: cl["neuron_share"][j] or 0) if members else 0
    freq = cl["neuron_freq"][neuron]
    s = modular_structure(run.data)
    stride = max(1, math.ceil(s.n / GRID_MAX))
    ticks = list(range(0, s.n, stride))
    wanted = [st for st in r.checkpoints["step"] if st in set(run.steps)]  # a checkpoint since removed: no frame
    steps, z, lo, hi = [], [], [], []
    for step, acts in neuron_acts(run, s, neuron, wanted, ticks):
        steps.append(step)
        z.append(rounded(acts, 3))
        lo.append(sig(float(acts.min()), 3))
        hi.append(sig(float(acts.max()), 3))
    if not steps:
        return None
    return {"neuron": neuron, "freq": freq, "steps": steps, "z": z, "lo": lo, "hi": hi, "a": ticks, "b": ticks}


def neuron_acts(run, s, neuron: int, steps: list[int], ticks: list[int], chunk: int = 16):
    """(step, [len(ticks), len(ticks)] activations of `neuron`) per checkpoint. The one-layer transformer goes the
    probes' batched way (interp.grid) with the MLP cut down to that neuron, 16 checkpoints at a time; any other
    model runs its own forward on the strided grid."""
    import torch

    from interp.grid import FAST_VIEWS, grid_activations, is_fast, stacked_views
    from training.models.build import build_model

    model = build_model(run.config.model, run.data, seed=run.config.train.seed)
    idx = torch.tensor(ticks)
    if not is_fast(model):
        tokens = s.tokens[(idx[:, None] * s.n + idx[None, :]).reshape(-1)]
        for step, m in run.iter_models(steps):
            yield step, m.neuron_activations(tokens)[:, neuron].reshape(len(ticks), len(ticks)).double().numpy()
        return
    # the neuron's column of the MLP, and one logit (the logits are not wanted; one keeps their shapes valid)
    cut = {"W_in": lambda w: w[..., neuron : neuron + 1], "b_in": lambda w: w[..., neuron : neuron + 1],
           "W_out": lambda w: w[:, :, neuron : neuron + 1], "W_U": lambda w: w[..., :1]}
    for k in range(0, len(steps), chunk):
        part = steps[k : k + chunk]
        states = [run.weights(st) for st in part]
        W = {n: cut.get(n, lambda w: w)(v) for n, v in stacked_views(model, states, FAST_VIEWS).items()}
        acts = grid_activations(model, states, s, stacked=W).acts[..., 0].reshape(len(part), s.n, s.n)
        yield from zip(part, acts[:, idx][:, :, idx].double().numpy())
