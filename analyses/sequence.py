"""`python -m analyses.sequence RUN_DIR`: a sequence-task run's per-target loss curves with each target's phase
change, and for the repeat task every head's induction scores at every checkpoint beside the loss drop.

    python -m analyses.sequence checkpoints/digits5-infinite
    python -m analyses.sequence checkpoints/repeat-inf
    python -m analyses.sequence checkpoints/repeat-inf --score stripe --threshold 0.3 --heads 1.0 1.3

Phase changes and scores are defined in `interp.sequence`. A head becomes an induction head at the first
checkpoint where its `--score` (default: Olsson et al.'s prefix matching) reaches `--threshold`; the scores come
from one seeded batch of [BOS] + R + R sequences, the same at every checkpoint.

Writes RUN_DIR/analyses/sequence.json, sequence_loss.png (and sequence_induction.png for the repeat task) and
prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analyses.api import BadInput, Result, as_run, optional, options_from
from analyses.common import check_checkpoints, require_run_dir, write_and_summarise
from training.cli import Parser, finite_float, main_entry, nonneg_int, positive_int, require

# torch and the probes are imported where they are used: --help and bad flags answer at once.

NAME = "sequence"
ONSET_SCORES = ("prefix_matching", "stripe", "induction_detect")
INDUCTION_TASKS = ("repeat_subseq",)  # the tasks whose solution is an induction circuit


@dataclasses.dataclass(frozen=True)
class SequenceOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    score: str = "prefix_matching"  # the score whose crossing of `threshold` makes a head an induction head
    threshold: float = 0.4
    heads: tuple[tuple[int, int], ...] | None = None  # (layer, head) to report (None: all)
    n_seqs: int = 64  # random [BOS] + R + R sequences scored
    half_len: int | None = None  # length of R (None: the task's repeat interval)
    seed: int = 0  # of the random sequences
    window: int = 5  # evaluations in the running median that smooths each loss curve
    min_drop: float = 1.25  # a loss must fall by at least this factor to count as a phase change
    every: int = 1  # score every k-th checkpoint (the last always)
    progress: bool = True

    def __post_init__(self):
        require(self.score in ONSET_SCORES, f"--score must be one of {', '.join(ONSET_SCORES)}, got {self.score}")
        require(0 < self.threshold <= 1, f"--threshold must be in (0, 1], got {self.threshold}")
        require(self.min_drop > 1, f"--min-drop must be a factor > 1, got {self.min_drop}")
        require(self.n_seqs <= 4096, f"--n-seqs must be <= 4096, got {self.n_seqs}")


@dataclasses.dataclass
class SequenceResult(Result):
    """sequence.json: per-target loss curves and phase changes; for the repeat task, the induction scores."""

    FILE = f"{NAME}.json"
    run: str
    task: str
    infinite: bool
    target_names: list[str]
    window: int
    min_drop: float
    curves: dict[str, Any]  # steps, per-target train/test loss and accuracy, and "overall"
    phase_change: dict[str, Any]  # {"train"|"test": {target or "all": phase change or None}}
    phase_change_order: list[str]  # targets by the step of their test-loss phase change
    induction: dict[str, Any] | None = optional()  # every head's scores per checkpoint (induction tasks only)


def head_arg(text: str) -> tuple[int, int]:
    """'1.3' or 'L1H3' -> (layer 1, head 3)."""
    m = re.fullmatch(r"\s*(?:[Ll](\d+)[Hh](\d+)|(\d+)\.(\d+))\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a head as LAYER.HEAD (e.g. 1.3) or L1H3, got '{text}'")
    a, b, c, d = m.groups()
    return (int(a), int(b)) if a is not None else (int(c), int(d))


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.sequence", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--score", choices=ONSET_SCORES, default="prefix_matching",
                   help="the score whose crossing of --threshold makes a head an induction head")
    p.add_argument("--threshold", type=finite_float, default=0.4, help="in (0, 1]")
    p.add_argument("--heads", type=head_arg, nargs="+", default=None, metavar="L.H",
                   help="the heads to report and plot (default: all)")
    p.add_argument("--n-seqs", type=positive_int, default=64, help="random [BOS] + R + R sequences scored")
    p.add_argument("--half-len", type=positive_int, default=None,
                   help="length of R (default: the task's repeat interval)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random sequences")
    p.add_argument("--window", type=positive_int, default=5,
                   help="evaluations in the running median that smooths each loss curve")
    p.add_argument("--min-drop", type=finite_float, default=1.25,
                   help="a loss must fall by at least this factor (> 1) to count as a phase change")
    p.add_argument("--every", type=positive_int, default=1, help="score every k-th checkpoint (the last always)")
    p.add_argument("--no-progress", action="store_true")
    return p


def describe_task(run) -> str:
    """'add mod 59', 'x*y in S5', 'repeat_subseq', ... for messages."""
    t = run.config.task
    kind = run.data.structure.get("kind")
    if kind == "modular":
        return f"{t.task} mod {t.p}"
    if kind == "group":
        return f"{t.task} in {t.group}"
    return t.task


def thin(steps: list[int], every: int) -> list[int]:
    return sorted(set(steps[::every]) | {steps[-1]}) if steps else []


def open_sequence_run(run, options: SequenceOptions):
    """(run, structure, curves, steps to score or []) with every input checked; nothing computed or written."""
    from interp import sequence as sq
    from training.constants import METRICS

    run = as_run(run, need_checkpoints=False)
    structure = run.data.structure
    if structure.get("kind") != "sequence":
        raise BadInput(f"analyses.sequence needs a sequence task; {run.dir} is {describe_task(run)}")
    curves = sq.per_target_curves(run.metrics, structure.get("target_names"))
    if not np.isfinite(curves.test_loss).any():
        raise BadInput(f"{run.dir / METRICS}: no per-target losses (test_loss_by_target) in its rows")
    if structure.get("task") not in INDUCTION_TASKS:
        if options.heads or options.half_len is not None:
            raise BadInput(f"--heads/--half-len: induction scores are computed for {', '.join(INDUCTION_TASKS)} "
                           f"only; {run.dir} is {structure.get('task')}")
        return run, structure, curves, []
    m = run.config.model
    bad = [f"{l}.{h}" for l, h in options.heads or [] if not (l < m.n_layers and h < m.n_heads)]
    if bad:
        raise BadInput(f"--heads: no head {', '.join(bad)} in a model of {m.n_layers} layer(s) x {m.n_heads} heads")
    try:
        sq.batch_for(structure, run.data.d_vocab, run.data.n_ctx, 1, options.half_len)
    except ValueError as e:
        raise BadInput(f"--half-len: {e}") from None
    steps = thin(run.steps, options.every)
    if not steps:
        raise BadInput(f"{run.dir / 'ckpt'}: no checkpoints to score")
    check_checkpoints(run, steps)  # corrupt or NaN (a diverged run): one line before any work
    return run, structure, curves, steps


def phase_changes(curves, window: int, min_drop: float) -> dict[str, Any]:
    """{"test"|"train": {target or "all": PhaseChange dict or None}}; `min_drop` a factor of loss."""
    from interp import sequence as sq

    out, decades = {}, math.log10(min_drop)
    for split in ("train", "test"):
        found = sq.phase_change_steps(curves.steps, getattr(curves, f"{split}_loss"), curves.names, window, decades)
        found["all"] = sq.phase_change(curves.steps, curves.overall[f"{split}_loss"], window, decades)
        out[split] = {k: v.to_dict() if v is not None else None for k, v in found.items()}
    return out


def induction(run, structure, steps: list[int], args: SequenceOptions, loss_drop) -> dict[str, Any]:
    """Every head's scores at every checkpoint of `steps`, the onsets and the final values."""
    from tqdm.auto import tqdm

    from interp import sequence as sq

    batch = sq.batch_for(structure, run.data.d_vocab, run.data.n_ctx, args.n_seqs, args.half_len, args.seed)
    models = tqdm(run.iter_models(steps), total=len(steps), desc="induction scores", disable=not args.progress)
    steps, scores = sq.scores_over_checkpoints(models, batch)
    n_layers, n_heads = scores[args.score].shape[1:]
    heads = args.heads or [(l, h) for l in range(n_layers) for h in range(n_heads)]
    onset = sq.induction_onset_steps(steps, scores[args.score], args.threshold)
    rise = sq.induction_rise_steps(steps, scores[args.score])
    names = [sq.head_name(l, h) for l, h in heads]
    return {
        "steps": steps, "score": args.score, "threshold": args.threshold, "half_len": batch.half_len,
        "n_seqs": args.n_seqs, "seed": args.seed, "heads": names, "loss_drop": loss_drop,
        "scores": {k: v.round(5).tolist() for k, v in scores.items()},
        "onset": {n: onset[l][h] for n, (l, h) in zip(names, heads)},
        "rise": {n: rise[l][h].to_dict() if rise[l][h] else None for n, (l, h) in zip(names, heads)},
        "final": {n: {k: float(v[-1, l, h]) for k, v in scores.items()} for n, (l, h) in zip(names, heads)},
    }


def analyse(run, options: SequenceOptions = SequenceOptions()) -> SequenceResult:
    """Per-target loss curves and phase changes of a sequence-task run (a path or a Run), and for the repeat
    task every head's induction scores at every (`every`-th) checkpoint. Every input is checked first."""
    from interp.sequence import SCORES

    run, structure, curves, steps = open_sequence_run(run, options)
    changes = phase_changes(curves, options.window, options.min_drop)
    res = SequenceResult(
        run=str(run.dir), task=structure.get("task"), infinite=bool(structure.get("infinite")),
        target_names=curves.names, window=options.window, min_drop=options.min_drop,
        curves={"steps": curves.steps.tolist(),
                **{k: dict(zip(curves.names, getattr(curves, k).tolist()))
                   for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
                "overall": {k: v.tolist() for k, v in curves.overall.items()}},
        phase_change=changes,
        phase_change_order=sorted((n for n in curves.names if changes["test"][n]),
                                  key=lambda n: changes["test"][n]["step"]),
    )
    if steps:
        res.induction = induction(run, structure, steps, options, changes["test"]["all"])
        res.induction["score_names"] = list(SCORES)
    return res


def load(run) -> SequenceResult:
    """The result `python -m analyses.sequence` wrote for `run` (a run directory or a Run)."""
    return SequenceResult.load(run)


# --- figures --------------------------------------------------------------------------------------------------


def _colours(n: int):
    import matplotlib

    return matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(n, 1)))


def plot_loss(res: dict[str, Any]):
    """Train and test loss per target (log y), each target's phase change marked on its curve."""
    from matplotlib.figure import Figure

    c = res["curves"]
    steps = np.array(c["steps"])
    names = res["target_names"]
    fig = Figure(figsize=(12, 4.5))
    for ax, split in zip(fig.subplots(1, 2, sharey=True), ("train", "test")):
        for colour, name in zip(_colours(len(names)), names):
            y = np.array(c[f"{split}_loss"][name], dtype=float)
            ax.plot(steps, y, color=colour, linewidth=1, label=name)
            pc = res["phase_change"][split][name]
            if pc:
                ax.plot([pc["step"]], [y[list(steps).index(pc["step"])]], "o", color=colour, markersize=5,
                        markeredgecolor="black")
        ax.plot(steps, c["overall"][f"{split}_loss"], color="black", linestyle="--", linewidth=1, label="all")
        overall = res["phase_change"][split]["all"]
        if overall:
            ax.axvline(overall["step"], color="grey", linestyle=":", label=f"phase change (all) {overall['step']}")
        if np.nanmin(np.array([c[f"{split}_loss"][n] for n in names], dtype=float) if names else [1]) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{split} loss per target" + (" (fresh data)" if res["infinite"] else ""))
        if len(names) <= 12:
            ax.legend(fontsize=7, ncol=2)
        else:
            ax.legend(ax.lines[:1] + ax.lines[-2:], [names[0], "all", "phase change (all)"], fontsize=7,
                      title=f"{len(names)} targets, {names[0]} dark .. {names[-1]} light", title_fontsize=7)
    fig.axes[0].set_ylabel("loss")
    fig.suptitle(f"{res['run']}: {res['task']}, dots = each target's phase change")
    fig.tight_layout()
    return fig


def plot_induction(res: dict[str, Any]):
    """Each head's onset score, copying and previous-token scores against step, above the test loss."""
    import matplotlib
    from matplotlib.figure import Figure

    ind = res["induction"]
    steps = np.array(ind["steps"])
    panels = [ind["score"], "copying", "previous_token"]
    fig = Figure(figsize=(8, 11))
    axes = fig.subplots(len(panels) + 1, 1, sharex=True)
    heads = [tuple(int(x) for x in re.findall(r"\d+", n)) for n in ind["heads"]]
    colours = matplotlib.colormaps["tab10"](np.arange(len(heads)) % 10)
    drop = ind["loss_drop"]
    for ax, name in zip(axes, panels):
        values = np.array(ind["scores"][name])
        for colour, label, (l, h) in zip(colours, ind["heads"], heads):
            ax.plot(steps, values[:, l, h], color=colour, label=label, linestyle="-" if l else ":")
            marks = (ind["onset"][label], "o"), ((ind["rise"][label] or {}).get("step"), "x")
            for at, marker in marks if name == ind["score"] else ():
                if at is not None:
                    ax.plot([at], [values[list(steps).index(at), l, h]], marker, color=colour, markeredgecolor="black")
        if name == ind["score"]:
            ax.axhline(ind["threshold"], color="black", linewidth=0.8, linestyle="--", label="threshold")
        ax.set_ylabel(name.replace("_", " "))
    c = res["curves"]
    axes[-1].plot(c["steps"], c["overall"]["test_loss"], color="black", label="test loss")
    axes[-1].set_yscale("log")
    axes[-1].set_ylabel("loss")
    axes[-1].set_xlabel("step")
    for ax in axes:
        if drop:
            ax.axvline(drop["step"], color="grey", linestyle=":", label=f"loss phase change {drop['step']}")
    axes[0].legend(fontsize=7, ncol=2)
    axes[-1].legend(fontsize=7)
    axes[0].set_title(f"{res['run']}: induction scores on [BOS] + R + R (len(R) = {ind['half_len']}); "
                      "o: onset (threshold), x: halfway rise", fontsize=9)
    fig.tight_layout()
    return fig


# --- summary --------------------------------------------------------------------------------------------------


def _pc(pc: dict[str, Any] | None) -> str:
    if pc is None:
        return "none"
    return f"step {pc['step']} ({pc['plateau']:.3g} -> {pc['final']:.3g}, from {pc['start']} to {pc['end']})"


def describe(res: dict[str, Any]) -> list[str]:
    names, pcs = res["target_names"], res["phase_change"]["test"]
    lines = [f"{res['run']}: {res['task']} ({'infinite' if res['infinite'] else 'finite'} data), {len(names)} "
             f"target(s), {len(res['curves']['steps'])} evaluations",
             f"phase change of the test loss (all targets): {_pc(pcs['all'])}; train loss: "
             f"{_pc(res['phase_change']['train']['all'])}"]
    order = res["phase_change_order"]
    if len(names) <= 8:
        lines += [f"  {n}: {_pc(pcs[n])}" for n in names]
    elif order:
        at = [pcs[n]["step"] for n in order]
        lines.append(f"per target: {len(order)} of {len(names)} change; first {order[0]} at {at[0]}, median "
                     f"{int(np.median(at))}, last {order[-1]} at {at[-1]}")
    if order and len(names) > 1:
        lines.append(f"order of the test-loss phase changes: {', '.join(order[:12])}{' ...' if len(order) > 12 else ''}")
    ind = res.get("induction")
    if ind:
        became = sorted((s, n) for n, s in ind["onset"].items() if s is not None)
        drop = ind["loss_drop"]
        lines.append(f"induction heads ({ind['score']} >= {ind['threshold']:g}, {len(ind['steps'])} checkpoints): "
                     + (", ".join(f"{n} at step {s}" for s, n in became) or "none")
                     + f"; test-loss phase change at {drop['step'] if drop else 'none'}")
        rises = sorted((r["step"], n, r) for n, r in ind["rise"].items() if r is not None)
        lines.append(f"{ind['score']} rises (halfway between its levels): " + (", ".join(
            f"{n} at {s} ({r['plateau']:.2f} -> {r['final']:.2f})" for s, n, r in rises) or "none"))
        top = sorted(ind["final"].items(), key=lambda kv: -kv[1][ind["score"]])[:4]
        lines.append("final scores: " + "; ".join(
            f"{n} prefix {v['prefix_matching']:.2f} stripe {v['stripe']:.2f} copying {v['copying']:.2f} "
            f"prev-token {v['previous_token']:.2f}" for n, v in top))
    return lines


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.sequence", make_parser, run_sequence, argv)


def run_sequence(args: argparse.Namespace) -> int:
    """The command: flags -> options -> analysis -> sequence.json and the figures, and a summary on stdout."""
    options = options_from(SequenceOptions, args, heads=tuple(args.heads) if args.heads else None,
                           progress=not args.no_progress)
    require_run_dir(args.run_dir)
    run = as_run(args.run_dir, need_checkpoints=False)
    res = analyse(run, options).to_dict()
    files = {SequenceResult.FILE: res, f"{NAME}_loss.png": plot_loss(res)}
    if "induction" in res:
        files[f"{NAME}_induction.png"] = plot_induction(res)
    return write_and_summarise(run, files, describe(res))


if __name__ == "__main__":
    sys.exit(main())
