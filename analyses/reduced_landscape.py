"""`python -m analyses.reduced_landscape (RUN_DIR | --preset NAME)`: Omnigrok's reduced landscape.

For each init scale alpha (default 10^linspace(-1, 1, 11)), the model is trained from its seeded init scaled by
alpha with the total norm held there (every parameter rescaled after every step), without weight decay, and the
best train and test loss are recorded: train loss against norm is "L"-shaped and test loss "U"-shaped when the
LU mechanism is at work. Prints w_c (the norm of lowest test loss), a diagnosis of the shapes and, for a run,
where the run's own weight norm went relative to w_c.

    python -m analyses.reduced_landscape --preset omnigrok-teacher    # into checkpoints/reduced-omnigrok-teacher/
    python -m analyses.reduced_landscape checkpoints/omnigrok-digits --steps 3000
    python -m analyses.reduced_landscape --preset omnigrok-digits --alphas 0.5,1,2,4,8 --set n_train=200

The task, model, optimiser (lr, betas, batch size, warmup) and seed come from the run's config or the preset;
`--set FIELD=VALUE` changes any config field. Writes reduced_landscape.json + .png into RUN_DIR/analyses/ (or
--out for a preset); `python -m analyses.landscape RUN_DIR` then draws it under the run's checkpoints too.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analyses.api import Result, as_run, options_from
from analyses.common import finite, require_run_dir, require_writable_dir, write_outputs
from analyses.landscape_plots import describe_trajectory, draw_norm_panel, draw_trajectory
from training.cli import Parser, main_entry, nonneg_float, nonneg_int, positive_float, positive_float_list, \
    positive_int, require
from training.config import FIELD_SECTION, ConfigError, RunConfig, parse_value, validate
from training.errors import RunDirError
from training.presets import get_preset

# torch and the training loop are imported where they are used: --help and bad flags answer at once.

NAME = "reduced_landscape"
MAX_ALPHAS = 1000


@dataclasses.dataclass(frozen=True)
class ReducedOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    preset: str | None = None  # sweep a preset's config instead of a run's
    alphas: tuple[float, ...] | None = None  # init scales (None: n_alphas from alpha_min to alpha_max, log-spaced)
    n_alphas: int = 11
    alpha_min: float = 0.1
    alpha_max: float = 10.0
    steps: int = 10_000  # optimiser steps per alpha (Omnigrok: 1e4)
    eval_every: int = 0  # evaluate every N steps (0: steps/200)
    wd: float = 0.0  # weight decay during the fixed-norm training
    device: str = "cpu"
    set: tuple[str, ...] = ()  # FIELD=VALUE config overrides
    progress: bool = True

    def __post_init__(self):
        require(self.alpha_min <= self.alpha_max, "need --alpha-min <= --alpha-max")
        n = len(self.alphas) if self.alphas else self.n_alphas
        require(n <= MAX_ALPHAS, f"at most {MAX_ALPHAS} alphas, got {n}")  # before np.geomspace allocates them

    def alpha_values(self) -> list[float]:
        """The alphas as given, else n_alphas on a log scale (the default is Omnigrok's 10^linspace(-1, 1, 11))."""
        if self.alphas:
            return list(self.alphas)
        return np.geomspace(self.alpha_min, self.alpha_max, self.n_alphas).tolist()


@dataclasses.dataclass
class ReducedLandscapeResult(Result):
    """reduced_landscape.json: interp.landscape.ReducedLandscape's fields, its diagnosis, the run's trajectory."""

    FILE = f"{NAME}.json"
    alphas: list[float]
    norms: list[float]
    best_train_loss: list[float | None]
    best_test_loss: list[float | None]
    final_train_loss: list[float | None]
    final_test_loss: list[float | None]
    best_train_acc: list[float | None] | None
    best_test_acc: list[float | None] | None
    final_train_acc: list[float | None] | None
    final_test_acc: list[float | None] | None
    eval_steps: list[int]
    train_curves: list[list[float | None]]
    test_curves: list[list[float | None]]
    steps: int
    wd: float
    lr: float
    optimizer: str
    extra: dict[str, Any]
    w_c: float
    diagnosis: dict[str, Any]
    trajectory: dict[str, Any] | None  # the run's weight norm against w_c (None for a preset)
    config: dict[str, Any]
    source: str  # the run directory, or "preset NAME"
    loss: str


def apply_sets(cfg: RunConfig, sets: list[str]) -> RunConfig:
    overrides = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set: expected FIELD=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in FIELD_SECTION:
            raise ConfigError(f"--set: unknown config field '{key}'")
        overrides[key] = parse_value(key, value.strip())
    cfg = cfg.replace(**overrides) if overrides else cfg
    validate(cfg)
    return cfg


def plot(res, diag: dict[str, Any], title: str, run, traj: dict[str, Any] | None):
    """The reduced landscape figure (a matplotlib Figure, not pyplot's: the caller writes it)."""
    import matplotlib
    from matplotlib.figure import Figure

    n_panels = 3 if run is not None else 2
    fig = Figure(figsize=(6 * n_panels, 4.8))
    axes = fig.subplots(1, n_panels)
    ax = axes[0]
    ax.plot(res.norms, res.best_train_loss, "o-", color="tab:blue", lw=2, label="train (best)")
    ax.plot(res.norms, res.best_test_loss, "s-", color="tab:orange", lw=2, label="test (best)")
    if run is not None:
        draw_trajectory(ax, run.metrics, cbar=False)
    ax.axvline(res.w_c, color="tab:green", ls="--", label=f"w_c = {res.w_c:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("total weight norm w (held fixed)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, title=f"train {diag['train_shape']}, test {diag['test_shape']}", title_fontsize=8)
    n1 = res.extra["norm_at_alpha_1"]
    ax.secondary_xaxis("top", functions=(lambda w: w / n1, lambda a: a * n1)).set_xlabel("init scale alpha")
    ax = axes[1]
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, len(res.alphas)))
    steps = np.maximum(res.eval_steps, 1)
    for a, c, tr, te in zip(res.alphas, colours, res.train_curves, res.test_curves):
        ax.plot(steps, te, color=c, lw=1.2, label=f"alpha {a:.3g}")
        ax.plot(steps, tr, color=c, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step (fixed-norm training)")
    ax.set_ylabel("test loss (solid), train loss (dotted)")
    ax.legend(fontsize=6, ncol=2)
    if run is not None and traj is not None:
        draw_norm_panel(axes[2], traj, run.summary, res.w_c)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.reduced_landscape", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="a run directory (or use --preset)")
    p.add_argument("--preset", default=None, help="sweep a preset's config instead of a run's")
    p.add_argument("--out", type=Path, default=None, help="output folder with --preset "
                                                          "(default: checkpoints/reduced-<preset>)")
    p.add_argument("--alphas", type=positive_float_list, default=None,
                   help="comma-separated init scales (default: --n-alphas from --alpha-min to --alpha-max)")
    p.add_argument("--n-alphas", type=positive_int, default=11)
    p.add_argument("--alpha-min", type=positive_float, default=0.1)
    p.add_argument("--alpha-max", type=positive_float, default=10.0)
    p.add_argument("--steps", type=positive_int, default=10_000, help="optimiser steps per alpha (Omnigrok: 1e4)")
    p.add_argument("--eval-every", type=nonneg_int, default=0, help="evaluate every N steps (0: steps/200)")
    p.add_argument("--wd", type=nonneg_float, default=0.0, help="weight decay during the fixed-norm training")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.reduced_landscape", make_parser, run_reduced, argv)


def config_from(run, options: ReducedOptions):
    """(config, run or None): the run's config or the preset's, with the overrides, checked (torch-free for a
    preset)."""
    require((run is None) != (options.preset is None), "give either RUN_DIR or --preset NAME")
    if run is not None:
        run = as_run(run, need_checkpoints=False)
        return apply_sets(run.config, list(options.set)), run
    return apply_sets(get_preset(options.preset), list(options.set)), None


def analyse(run=None, options: ReducedOptions = ReducedOptions()) -> ReducedLandscapeResult:
    """Omnigrok's reduced landscape of `run` (a path or a Run), or of `options.preset` when run is None: the
    model trained at fixed norm from its init scaled by each alpha, the best losses against the norm."""
    return _analyse(run, options)[0]


def _analyse(run, options: ReducedOptions):
    """(result, the interp.landscape.ReducedLandscape, the task data, the run or None)."""
    alphas = options.alpha_values()
    if options.preset is not None:  # a preset's config needs no torch to check
        config_from(run, options)
    from tqdm.auto import tqdm

    from interp.landscape import norm_trajectory, reduced_landscape
    from training.fixed_norm import train_fixed_norm
    from training.loop import pick_device
    from training.tasks.build import build_task

    cfg, run = config_from(run, options)
    device = pick_device(options.device)
    data = run.data if run is not None and not options.set else build_task(cfg.task)
    bar = None if not options.progress else (lambda it: tqdm(it, desc=f"{len(alphas)} alphas at fixed norm",
                                                             unit="step", dynamic_ncols=True))
    res = reduced_landscape(train_fixed_norm(cfg, data, alphas, steps=options.steps,
                                             eval_every=options.eval_every or None, wd=options.wd, device=device,
                                             progress=bar))
    if not finite([res.w_c]):
        raise RunDirError(f"no alpha reached a finite test loss (alphas {', '.join(f'{a:g}' for a in alphas)}); "
                          "nothing written")
    traj = norm_trajectory(run.metrics, res.w_c) if run is not None else None
    result = ReducedLandscapeResult(**res.to_dict(), diagnosis=res.diagnosis(), trajectory=traj,
                                    config=cfg.to_dict(), loss=data.loss,
                                    source=str(run.dir) if run is not None else f"preset {options.preset}")
    return result, res, data, run


def load(run) -> ReducedLandscapeResult:
    """The result `python -m analyses.reduced_landscape` wrote for `run` (a run directory, a Run or the file)."""
    return ReducedLandscapeResult.load(run)


def run_reduced(args: argparse.Namespace) -> int:
    """The command: flags -> options -> analysis -> reduced_landscape.json and .png, and a summary on stdout."""
    options = options_from(ReducedOptions, args, alphas=tuple(args.alphas) if args.alphas else None,
                           set=tuple(args.set), progress=not args.no_progress)
    require((args.run_dir is None) != (args.preset is None), "give either RUN_DIR or --preset NAME")
    require(args.out is None or args.preset is not None, "--out goes with --preset (a run's go to RUN_DIR/analyses)")
    out = None
    if args.run_dir is not None:  # everything checked before torch loads, nothing created
        require_run_dir(args.run_dir)
    else:
        out = args.out or Path("checkpoints") / f"reduced-{args.preset}"
    _, run = config_from(args.run_dir, options)
    if out is not None:
        require_writable_dir(out)
    result, res, data, run = _analyse(run, options)
    fig = plot(res, result.diagnosis, f"reduced landscape: {data.name}, {result.config['model']['model']} "
               f"({res.optimizer} lr {res.lr:g}, {res.steps} steps per alpha, norm fixed)", run, result.trajectory)
    written = write_outputs(run if run is not None else out, {result.FILE: result.to_dict(), f"{NAME}.png": fig})
    print_result(res, result.diagnosis, result.trajectory, result.source, data, run)
    print(f"wrote {written[0]} and {written[1]}")
    return 0


def print_result(res, diag: dict[str, Any], traj, source: str, data, run) -> None:
    print(f"reduced landscape of {source} ({data.name}; {res.steps} fixed-norm steps per alpha, "
          f"{res.optimizer} lr {res.lr:g}, wd {res.wd:g}; loss {data.loss})")
    acc = res.best_test_acc is not None
    print(f"  {'alpha':>7} {'norm':>9} {'train':>10} {'test':>10}" + (f" {'test acc':>8}" if acc else ""))
    for i, a in enumerate(res.alphas):
        line = f"  {a:7.3g} {res.norms[i]:9.4g} {res.best_train_loss[i]:10.3g} {res.best_test_loss[i]:10.3g}"
        print(line + (f" {res.best_test_acc[i]:8.3f}" if acc else ""))
    print(f"w_c = {res.w_c:.4g} (alpha {res.w_c / res.extra['norm_at_alpha_1']:.3g}); "
          f"lowest test loss {diag['test_min']:.3g}")
    print(f"diagnosis: {diag['text']}")
    if traj is not None:
        print(describe_trajectory(traj, run.summary))


if __name__ == "__main__":
    sys.exit(main())
