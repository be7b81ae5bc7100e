"""The run page's panels for groups, parity, sequence tasks and the loss landscape (analyses.explore); the
panel format and the modular-arithmetic panels are in analyses.explore_panels."""

from __future__ import annotations

from typing import Any

import numpy as np

from analyses.explore_panels import at_map, fmt, line, moving, panel, readout, sig

TSNE_MAX = 500  # points of a t-SNE panel kept on the page
TSNE_STEPS = 8  # analysed steps of a group run whose rows get a t-SNE (one t-SNE takes ~1 s for S5)
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]


def colours(labels) -> list[str]:
    """One colour per coset or class (plotly.js's colour scales would stretch over the labels' numbers)."""
    return [PALETTE[int(k) % len(PALETTE)] for k in labels]


def steps_panel(pid: str, title: str, steps: list[int], series: dict[str, list], page_steps: list[int],
                ytype: str = "linear") -> dict:
    """Quantities over steps with the cursor, and their values at the chosen step as the readout."""
    at = at_map(page_steps, steps)
    return panel(pid, title, [line(steps, v, k) for k, v in series.items()],
                 {"xaxis": {"type": "log", "title": "step"}, "yaxis": {"type": ytype}}, cursor=True,
                 readout=readout(at, lambda i: f"step {steps[i]}: " + ", ".join(
                     f"{k} {fmt(sig(v[i]))}" for k, v in series.items())))


# --- groups (analyses.cosets) ---------------------------------------------------------------------------------


def cosets_panels(page_steps: list[int], run, r) -> list[dict]:
    steps = r.steps
    m = r.matrices.get("W_U") or next(iter(r.matrices.values()))
    tl = m["timeline"]
    out = [steps_panel("coset_score", "Coset score of W_U's rows (ARI with the best partition)", steps,
                       {"final best": tl["ari"], "best at that step": tl["top_ari"]}, page_steps)]
    out[0]["readout"] = [f"{t}; best: {tl['top_label'][i]}"
                         for t, i in zip(out[0]["readout"], at_map(page_steps, steps))]
    out += rows_panels(page_steps, run, r)
    ir = r.irreps.get("timeline") if isinstance(r.irreps, dict) else None
    if ir:
        names = list(ir["char_explained"])
        at = at_map(page_steps, steps)
        frames = [{"y": [sig([ir["char_explained"][n][i] for n in names])]} for i in range(len(steps))]
        out.append(panel("irreps", "Per-irrep logit similarity (share of logit variance of chi(a b c^-1))",
                         [{"type": "bar", "x": names, "y": frames[0]["y"][0], "name": "similarity"}], {},
                         [moving(0, frames, at)], readout=readout(at, lambda i: f"step {steps[i]}: " +
                                                                 ", ".join(f"{n} {fmt(frames[i]['y'][0][k])}"
                                                                           for k, n in enumerate(names)))))
    return out


def rows_panels(page_steps: list[int], run, r) -> list[dict]:
    """Per weight matrix the analysis scored (W_U, W_E or one per operand): its rows on their first two principal
    components at each analysed step, and their t-SNE at up to TSNE_STEPS of them, coloured by the coset partition
    that fits that matrix best at that step."""
    from interp.cosets import coset_partitions, group_rows
    from interp.sparsity import tsne
    from training.tasks.groups import get_group

    parts = coset_partitions(get_group(r.group))
    rows = {step: group_rows(run.model(step), r.order) for step in r.steps}
    picks = sorted({r.steps[int(k)] for k in np.linspace(0, len(r.steps) - 1, min(TSNE_STEPS, len(r.steps)))})
    out = []
    for name, m in r.matrices.items():
        top = dict(zip(r.steps, m["timeline"]["top"]))
        for how, steps in (("pca", r.steps), ("tsne", picks)):
            frames = []
            for step in steps:
                X = rows[step][name] - rows[step][name].mean(0)
                xy = X @ np.linalg.svd(X, full_matrices=False)[2][:2].T if how == "pca" else tsne(X, seed=0)
                frames.append({"x": [sig(xy[:, 0])], "y": [sig(xy[:, 1])],
                               "marker.color": [colours(parts[top[step]].labels)]})
            at = at_map(page_steps, steps)
            trace = {"type": "scatter", "mode": "markers", "x": frames[0]["x"][0], "y": frames[0]["y"][0],
                     "marker": {"color": frames[0]["marker.color"][0], "size": 7}, "text": list(range(r.order)),
                     "name": f"{name} rows"}
            title = (f"{name}'s rows ({'PCA' if how == 'pca' else 't-SNE at the nearest of a few steps'}), "
                     "coloured by the best coset partition then")
            out.append(panel(f"rows_{how}_{name}", title, [trace], {}, [moving(0, frames, at)],
                             readout=readout(at, lambda i, steps=steps, top=top: f"step {steps[i]}: "
                                             f"{parts[top[steps[i]]].describe()}")))
    return out


# --- parity (analyses.sparsity) -------------------------------------------------------------------------------


def sparsity_panels(page_steps: list[int], r) -> list[dict]:
    out = [steps_panel("sparsity", "Effective sparsity (neurons in the circuit)", r.steps,
                       {"effective sparsity": r.effective_sparsity}, page_steps),
           steps_panel("faithfulness", "Faithfulness of the circuit (vs random subnetworks)", r.steps,
                       {"faithfulness": r.faithfulness, "random": r.random_faithfulness}, page_steps)]
    kde_steps = sorted(int(s) for s in r.kde.get("density", {}))
    if kde_steps:
        dens = [sig(r.kde["density"][str(s)]) for s in kde_steps]
        at = at_map(page_steps, kde_steps)
        out.append(panel("kde", "Weight KDE of the probed layer (at the nearest analysed step before)",
                         [line(sig(r.kde["grid"]), dens[0], "density")], {"xaxis": {"title": "weight"}},
                         [moving(0, [{"y": [d]} for d in dens], at)],
                         readout=readout(at, lambda i: f"KDE of step {kde_steps[i]}")))
    tsne_steps = sorted(int(s) for s in r.tsne)
    if tsne_steps:
        frames = []
        for s in tsne_steps:
            t = r.tsne[str(s)]
            xy, cls = np.asarray(t["xy"]), list(t["classes"])
            keep = np.linspace(0, len(xy) - 1, min(len(xy), TSNE_MAX)).astype(int)  # downsampled, evenly
            frames.append({"x": [sig(xy[keep, 0])], "y": [sig(xy[keep, 1])],
                           "marker.color": [colours(cls[k] for k in keep)]})
        at = at_map(page_steps, tsne_steps)
        f0 = frames[0]
        out.append(panel("tsne", "t-SNE of the hidden representations, coloured by class",
                         [{"type": "scatter", "mode": "markers", "x": f0["x"][0], "y": f0["y"][0], "name": "inputs",
                           "marker": {"color": f0["marker.color"][0], "size": 4}}], {},
                         [moving(0, frames, at)],
                         readout=readout(at, lambda i: f"t-SNE of step {tsne_steps[i]}")))
    return out


# --- sequence tasks (analyses.sequence) -----------------------------------------------------------------------


def sequence_panels(page_steps: list[int], r) -> list[dict]:
    cv = r.curves
    series = {n: cv["test_loss"][n] for n in r.target_names}
    out = [steps_panel("targets", "Test loss per target", cv["steps"], series, page_steps, "log")]
    ind = r.induction
    if ind:
        sc = np.asarray(ind["scores"][ind["score"]])  # [steps, layers, heads]
        heads = {f"L{lh // sc.shape[2]}H{lh % sc.shape[2]}": sc.reshape(len(sc), -1)[:, lh].tolist()
                 for lh in range(sc.shape[1] * sc.shape[2])}
        out.append(steps_panel("induction", f"Induction-head score ({ind['score']}) per head", ind["steps"], heads,
                               page_steps))
    return out


# --- loss landscape (analyses.landscape) ----------------------------------------------------------------------


def landscape_panel(page_steps: list[int], r, metrics: list[dict[str, Any]]) -> dict:
    """The slice through the chosen step's weights (loss against weight norm), with the run's path through the
    (norm, loss) plane; the chosen step's point on the path moves."""
    sl = sorted(r.slices, key=lambda s: s["step"])
    steps = [s["step"] for s in sl]
    at = at_map(page_steps, steps)
    path = [m for m in metrics if m.get("weight_norm") is not None and m.get("test_loss") is not None]
    frames = [{"x": [sig(s["total_norms"]), sig(s["total_norms"])], "y": [sig(s["train_loss"]), sig(s["test_loss"])]}
              for s in sl]
    traces = [line(frames[0]["x"][0], frames[0]["y"][0], "slice: train"),
              line(frames[0]["x"][1], frames[0]["y"][1], "slice: test"),
              {**line([m["weight_norm"] for m in path], [m["test_loss"] for m in path], "run's path (test)"),
               "mode": "lines+markers", "marker": {"size": 3}}]
    here = {"type": "scatter", "mode": "markers", "marker": {"size": 12, "color": "black"}, "name": "chosen step",
            "x": [sig(sl[0]["base_norm"])], "y": [None]}
    base = [_base_loss(s) for s in sl]
    hf = [{"x": [[sig(s["base_norm"])]], "y": [[b]]} for s, b in zip(sl, base)]
    dyn = [{"trace": [0, 1], "frames": frames, "at": at}, moving(3, hf, at)]
    return panel("landscape", f"Loss against weight norm (w_c = {fmt(sig(r.w_c))})", traces + [here],
                 {"xaxis": {"type": "log", "title": "total weight norm"}, "yaxis": {"type": "log"}}, dyn,
                 readout=readout(at, lambda i: f"slice through step {steps[i]}: norm "
                                 f"{fmt(sig(sl[i]['base_norm']))}, test loss {fmt(base[i])}"))


def _base_loss(s: dict[str, Any]) -> float | None:
    """The test loss at the slice's own weights (scale 1: the grid point nearest the base norm)."""
    norms = np.asarray(s["total_norms"], dtype=float)
    return sig(s["test_loss"][int(np.argmin(np.abs(np.log(norms / s["base_norm"]))))])
