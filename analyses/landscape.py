"""`python -m analyses.landscape RUN_DIR`: train and test loss against weight norm, with the run's path over it.

For a few checkpoints (default: the first, those nearest S_mem and S_gen, and the last) every parameter (or a
`--group` of them) is rescaled to a grid of norms covering the range the run visited, and train/test loss and
accuracy are evaluated there: Omnigrok's landscape slice. The run's own (weight norm, loss) path from
metrics.jsonl is drawn over it, w_c (the norm of lowest test loss) is printed, and the curves' shapes are
diagnosed (L-shaped train loss and U-shaped test loss = the LU mechanism behind grokking).

If `python -m analyses.reduced_landscape RUN_DIR` has been run, its fixed-norm (reduced) landscape is drawn too,
and w_c is taken from it: it is the landscape Omnigrok's argument is about.

    python -m analyses.landscape checkpoints/omnigrok-teacher
    python -m analyses.landscape RUN_DIR --steps 0,2000,last --group "W_U|b_U" --n-norms 31

Writes RUN_DIR/analyses/landscape.json and landscape.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analyses.common import check_checkpoints, finite, open_run, require_run_dir, write_outputs
from training.cli import Parser, main_entry, positive_float, positive_int, regex, require
from training.errors import ConfigError, RunDirError
from training.safeio import read_json

# torch and matplotlib are imported where they are used: --help and bad flags answer at once.

NAME = "landscape"
REDUCED = "reduced_landscape.json"


# --- shared drawing (also used by analyses.reduced_landscape) --------------------------------------------------


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


def nearest(steps: list[int], target: int | None) -> int | None:
    return None if target is None or not steps else min(steps, key=lambda s: abs(s - target))


# --- the analysis ----------------------------------------------------------------------------------------------


def pick_steps(run, spec: str) -> list[int]:
    have = run.steps
    if not have:
        raise RunDirError(f"{run.dir}: no checkpoints")
    if spec == "all":
        return have
    if spec == "auto":
        s = run.summary
        chosen = [have[0], nearest(have, s.get("S_mem")), nearest(have, s.get("S_gen")), have[-1]]
        return sorted({c for c in chosen if c is not None})
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            step = have[-1] if part == "last" else have[0] if part == "first" else int(part)
        except ValueError:
            raise ConfigError(f"--steps: '{part}' is not a step, 'first', 'last', 'auto' or 'all'") from None
        if step not in have:
            raise ConfigError(f"--steps: no checkpoint at step {step} (nearest: {nearest(have, step)})")
        out.append(step)
    return sorted(set(out))


def analyse(run, steps: list[int], group: str | None, n_norms: int, span: float,
            progress: bool = True) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from interp.landscape import ReducedLandscape, diagnose, landscape_slice, norm_trajectory

    metrics = run.metrics
    data = run.data
    visited = [w for w in finite(r.get("weight_norm") for r in metrics) if w > 0]
    slices = []
    for step in tqdm(steps, desc="landscape slices", disable=not progress):
        model = run.model(step)
        if group is None and visited:
            norms = np.geomspace(min(visited) / span, max(visited) * span, n_norms)
            sl = landscape_slice(model, data, norms=norms, step=step)
        else:
            sl = landscape_slice(model, data, scales=np.geomspace(1 / span, span, n_norms), group=group, step=step)
        d = sl.to_dict()
        d["diagnosis"] = diagnose(sl.total_norms, sl.train_loss, sl.test_loss)
        slices.append(d)
    reduced_path = run.dir / "analyses" / REDUCED
    reduced = None
    if reduced_path.exists():
        raw = read_json(reduced_path, "reduced landscape")
        try:
            reduced = ReducedLandscape.from_dict(raw)
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # JSONDecodeError is a ValueError
            raise RunDirError(f"{reduced_path}: unreadable ({e})") from None
    if reduced is not None and not finite([reduced.w_c]):
        raise RunDirError(f"{reduced_path}: w_c is not a finite number; run analyses.reduced_landscape again")
    if reduced is not None:
        w_c, source, diag = reduced.w_c, "reduced landscape (fixed-norm training per alpha)", reduced.diagnosis()
    else:
        w_c, source, diag = slices[-1]["w_c"], f"slice through step {slices[-1]['step']}", slices[-1]["diagnosis"]
    if not finite([w_c]):
        raise RunDirError(f"{run.dir}: no finite test loss on the norm grid (try a smaller --span)")
    traj = norm_trajectory(metrics, w_c)
    return {"run": str(run.dir), "task": data.name, "loss": data.loss, "group": group or "all", "w_c": w_c,
            "w_c_source": source, "diagnosis": diag, "slices": slices, "trajectory": traj,
            "summary": {k: run.summary.get(k) for k in ("S_mem", "S_gen")},
            "reduced": reduced.to_dict() if reduced is not None else None}


def plot(result: dict[str, Any], metrics: list[dict[str, Any]], title: str):
    """The landscape figure (a matplotlib Figure, not pyplot's: the caller writes it)."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5))
    ax, ax_n = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
    colours = matplotlib.colormaps["plasma"](np.linspace(0.05, 0.85, max(len(result["slices"]), 1)))
    for sl, c in zip(result["slices"], colours):
        x = sl["total_norms"]
        ax.plot(x, sl["train_loss"], color=c, lw=1.5, label=f"slice @ step {sl['step']}: train")
        ax.plot(x, sl["test_loss"], color=c, lw=1.5, ls="--", label=f"slice @ step {sl['step']}: test")
    red = result.get("reduced")
    if red:
        ax.plot(red["norms"], red["best_train_loss"], "o-", color="tab:blue", lw=2.5, label="reduced: train (L)")
        ax.plot(red["norms"], red["best_test_loss"], "s-", color="tab:orange", lw=2.5, label="reduced: test (U)")
    draw_trajectory(ax, metrics)
    ax.axvline(result["w_c"], color="tab:green", ls="--", lw=1.2, label=f"w_c = {result['w_c']:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("total weight norm w" + ("" if result["group"] == "all" else f" (rescaling {result['group']})"))
    ax.set_ylabel(f"loss ({result['loss']})")
    ax.legend(fontsize=6.5, loc="best")
    ax.set_title(f"train (L) and test (U) loss against norm; w_c from the {result['w_c_source'].split(' (')[0]}",
                 fontsize=9)
    draw_norm_panel(ax_n, result["trajectory"], result["summary"], result["w_c"])
    ax_n.set_title("the run's weight norm against w_c", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


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


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.landscape", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--steps", default="auto", help="checkpoints: 'auto', 'all', or a list such as 0,2000,last")
    p.add_argument("--group", type=regex, default=None,
                   help="rescale only parameters matching this regex (default: all)")
    p.add_argument("--n-norms", type=positive_int, default=25, help="points on the norm grid")
    p.add_argument("--span", type=positive_float, default=6.0,
                   help="the grid reaches this factor beyond the norms the run visited (with --group: around the "
                        "checkpoint's group norm)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.landscape", make_parser, run_landscape, argv)


def run_landscape(args: argparse.Namespace) -> int:
    require(3 <= args.n_norms <= 10_000, f"need 3 <= --n-norms <= 10000, got {args.n_norms}")
    require(1 < args.span <= 1e6, f"need 1 < --span <= 1e6, got {args.span}")
    require_run_dir(args.run_dir)
    from interp.landscape import group_names

    run = open_run(args.run_dir)
    steps = pick_steps(run, args.steps)
    check_checkpoints(run, steps)  # missing, corrupt or NaN: one line before any work
    if args.group:  # a group matching no parameter is one line before any work
        try:
            group_names([n for n, _ in run.model(steps[0]).named_parameters()], args.group)
        except ValueError as e:
            raise ConfigError(f"--group: {e}") from None
    result = analyse(run, steps, args.group, args.n_norms, args.span, progress=not args.no_progress)
    written = write_outputs(run, {f"{NAME}.json": result,
                                  f"{NAME}.png": plot(result, run.metrics, f"{run.dir.name}: {result['task']}")})
    print(f"landscape of {run.dir} ({result['task']}, {len(steps)} checkpoint(s), rescaling {result['group']})")
    for sl in result["slices"]:
        d = sl["diagnosis"]
        print(f"  slice @ step {sl['step']:>6}: train {d['train_shape']}, test {d['test_shape']}, "
              f"min test loss {d['test_min']:.3g} at w = {sl['w_c']:.4g} (checkpoint norm {sl['base_norm']:.4g})")
    print(f"w_c = {result['w_c']:.4g}  (from the {result['w_c_source']})")
    print(describe_trajectory(result["trajectory"], result["summary"]))
    print(f"diagnosis: {result['diagnosis']['text']}")
    print(f"wrote {written[0]} and {written[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
