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
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analyses.api import Result, as_run, options_from
from analyses.common import check_checkpoints, finite, require_run_dir, write_outputs
from analyses.landscape_plots import describe_trajectory, draw_norm_panel, draw_trajectory
from analyses.reduced_landscape import ReducedLandscapeResult
from training.cli import Parser, main_entry, positive_float, positive_int, regex, require
from training.errors import ConfigError, RunDirError
from training.safeio import read_json

# torch and matplotlib are imported where they are used: --help and bad flags answer at once.

NAME = "landscape"


@dataclasses.dataclass(frozen=True)
class LandscapeOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    steps: str = "auto"  # checkpoints: 'auto', 'all', or a list such as 0,2000,last
    group: str | None = None  # rescale only the parameters matching this regex (None: all)
    n_norms: int = 25  # points on the norm grid
    span: float = 6.0  # the grid reaches this factor beyond the norms the run visited
    progress: bool = True

    def __post_init__(self):
        require(3 <= self.n_norms <= 10_000, f"need 3 <= --n-norms <= 10000, got {self.n_norms}")
        require(1 < self.span <= 1e6, f"need 1 < --span <= 1e6, got {self.span}")


@dataclasses.dataclass
class LandscapeResult(Result):
    """landscape.json: a landscape slice per checkpoint, w_c and the run's norm trajectory against it."""

    FILE = f"{NAME}.json"
    run: str
    task: str
    loss: str
    group: str  # the regex rescaled, or "all"
    w_c: float  # the norm of lowest test loss (from the reduced landscape when there is one)
    w_c_source: str
    diagnosis: dict[str, Any]  # the shapes of the train (L) and test (U) curves
    slices: list[dict[str, Any]]  # one per checkpoint (interp.landscape.LandscapeSlice + its diagnosis)
    trajectory: dict[str, Any]
    summary: dict[str, Any]  # S_mem and S_gen
    reduced: dict[str, Any] | None  # the reduced landscape the run's analyses/ held


def pick_steps(run, spec: str) -> list[int]:
    have = run.steps
    if not have:
        raise RunDirError(f"{run.dir}: no checkpoints")
    if spec == "all":
        return have
    if spec == "auto":
        s = run.summary
        chosen = [have[0], *(run.nearest_step(s[k]) for k in ("S_mem", "S_gen") if s.get(k) is not None), have[-1]]
        return sorted(set(chosen))
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            step = have[-1] if part == "last" else have[0] if part == "first" else int(part)
        except ValueError:
            raise ConfigError(f"--steps: '{part}' is not a step, 'first', 'last', 'auto' or 'all'") from None
        if step not in have:
            raise ConfigError(f"--steps: no checkpoint at step {step} (nearest: {run.nearest_step(step)})")
        out.append(step)
    return sorted(set(out))


def analyse(run, options: LandscapeOptions = LandscapeOptions()) -> LandscapeResult:
    """Omnigrok's landscape slices of `run` (a path or a Run) at the chosen checkpoints, w_c and the run's path.
    Every input is checked first (the checkpoints, --group), so a bad one is one line before any work."""
    from interp.landscape import group_names

    run = as_run(run)
    steps = pick_steps(run, options.steps)
    check_checkpoints(run, steps)  # missing, corrupt or NaN: one line before any work
    if options.group:  # a group matching no parameter is one line before any work
        try:
            group_names([n for n, _ in run.model(steps[0]).named_parameters()], options.group)
        except ValueError as e:
            raise ConfigError(f"--group: {e}") from None
    return _slices(run, steps, options.group, options.n_norms, options.span, options.progress)


def load(run) -> LandscapeResult:
    """The result `python -m analyses.landscape` wrote for `run` (a run directory or a Run)."""
    return LandscapeResult.load(run)


def _slices(run, steps: list[int], group: str | None, n_norms: int, span: float,
            progress: bool = True) -> LandscapeResult:
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
    reduced_path = run.dir / "analyses" / ReducedLandscapeResult.FILE
    reduced = None
    if reduced_path.exists():
        raw = read_json(reduced_path, "reduced landscape")
        try:
            # leniently: only the landscape's own fields, as files written by earlier versions have them
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
    return LandscapeResult(run=str(run.dir), task=data.name, loss=data.loss, group=group or "all", w_c=w_c,
                           w_c_source=source, diagnosis=diag, slices=slices, trajectory=traj,
                           summary={k: run.summary.get(k) for k in ("S_mem", "S_gen")},
                           reduced=reduced.to_dict() if reduced is not None else None)


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
    """The command: flags -> options -> analysis -> landscape.json and .png, and a summary on stdout."""
    options = options_from(LandscapeOptions, args, progress=not args.no_progress)
    require_run_dir(args.run_dir)
    run = as_run(args.run_dir)
    res = analyse(run, options)
    result = res.to_dict()
    written = write_outputs(run, {LandscapeResult.FILE: result,
                                  f"{NAME}.png": plot(result, run.metrics, f"{run.dir.name}: {res.task}")})
    print(f"landscape of {run.dir} ({res.task}, {len(res.slices)} checkpoint(s), rescaling {res.group})")
    for sl in res.slices:
        d = sl["diagnosis"]
        print(f"  slice @ step {sl['step']:>6}: train {d['train_shape']}, test {d['test_shape']}, "
              f"min test loss {d['test_min']:.3g} at w = {sl['w_c']:.4g} (checkpoint norm {sl['base_norm']:.4g})")
    print(f"w_c = {res.w_c:.4g}  (from the {res.w_c_source})")
    print(describe_trajectory(res.trajectory, res.summary))
    print(f"diagnosis: {res.diagnosis['text']}")
    print(f"wrote {written[0]} and {written[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
