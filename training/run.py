"""`python -m training.run`: train one run into a run directory.

    python -m training.run                                  # the default preset, groks in < 1 min on a CPU
    python -m training.run --preset nanda2023 --out checkpoints/nanda
    python -m training.run --p 97 --frac 0.5 --task "x/y"  # any config field is a flag
    python -m training.run --resume checkpoints/nanda       # continue an interrupted run

Bad input exits with status 2 and one line on stderr, before anything is written; the flags are parsed and the
config validated (training.config.validate: ranges, the task's constraints, the memory estimate) before torch
is imported, so `--help` and every such error answer at once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from training.cli import Parser, main_entry
from training.config import FIELD_SECTION, SECTIONS, ConfigError, RunConfig, parse_value, validate
from training.errors import RunDirError
from training.presets import PRESETS, get_preset

DEFAULT_ROOT = Path("checkpoints")


def make_parser() -> Parser:
    p = Parser(prog="python -m training.run", description="Train a grokking run into a run directory.")
    p.add_argument("--preset", default="default", help=f"named config: {', '.join(PRESETS)}")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: checkpoints/<preset>, numbered if taken)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    defaults = get_preset("default")
    for section, sub in SECTIONS.items():
        group = p.add_argument_group(f"{section} config (defaults shown are the 'default' preset's)")
        doc = {}
        for line in (sub.__doc__ or "").splitlines():  # "name: text" lines of the dataclass docstring
            if ":" in line and line.strip().split(":")[0].replace(", ", ",").split(",")[0] in FIELD_SECTION:
                names, text = line.strip().split(":", 1)
                for n in names.split(","):
                    doc[n.strip()] = text.strip()
        for name, sec in FIELD_SECTION.items():
            if sec == section:
                text = f"{doc.get(name, '')} (default: {getattr(getattr(defaults, section), name)})"
                group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="V",
                                   help=text.replace("%", "%%"))  # argparse expands % in help
    return p


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, dict]:
    overrides = {name: parse_value(name, getattr(args, name)) for name in FIELD_SECTION if getattr(args, name) is not None}
    return get_preset(args.preset).replace(**overrides), overrides


def check(cfg: RunConfig):
    """Everything that can be wrong with a config, found before the run directory is touched: `validate` first
    (no torch), then the task and the model are built (which reads --data-path files, for instance)."""
    validate(cfg)
    from training.models import build_model
    from training.tasks import build_task

    data = build_task(cfg.task)
    build_model(cfg.model, data)
    return data


def free_dir(root: Path, name: str) -> Path:
    path, n = root / name, 2
    while path.exists():
        path, n = root / f"{name}-{n}", n + 1
    return path


def main(argv: list[str] | None = None) -> int:
    return main_entry("training.run", make_parser, _checked_main, argv)


def _checked_main(args: argparse.Namespace) -> int:
    """Every flag value parsed, and a new run's config validated, before `_main` imports torch."""
    cfg, _ = config_from_args(args)
    if args.resume is None:
        validate(cfg)
    return _main(args)


def _main(args: argparse.Namespace) -> int:
    from training.loop import train  # after argument parsing: --help stays quick
    from training.rundir import CONFIG, RunLock, is_run_dir

    if args.resume is not None:
        run_dir = args.resume
        if not run_dir.is_dir() or not is_run_dir(run_dir):
            raise RunDirError(f"--resume {run_dir}: no run directory there (no {CONFIG})")
        import json

        raw = json.loads((run_dir / CONFIG).read_text())
        preset, versions = raw.pop("preset", ""), raw.pop("versions", {})
        cfg = RunConfig.from_dict(raw)
        _, overrides = config_from_args(args)
        extra = set(overrides) - {"steps"}
        if extra:
            raise ConfigError(f"--resume keeps the run's config; cannot change {', '.join(sorted(extra))}")
        if "steps" in overrides:
            cfg = cfg.replace(steps=overrides["steps"])
        data = check(cfg)
        lock = RunLock(run_dir).acquire()
        if "steps" in overrides:
            from training.rundir import atomic_write_json

            atomic_write_json(run_dir / CONFIG, {**cfg.to_dict(), "preset": preset, "versions": versions})
    else:
        cfg, _ = config_from_args(args)
        data = check(cfg)
        run_dir = args.out if args.out is not None else free_dir(DEFAULT_ROOT, args.preset)
        if run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()):
            if not args.overwrite:
                raise RunDirError(f"{run_dir} already exists; pass --resume {run_dir} to continue it or --overwrite "
                                  "to replace it")
            if not is_run_dir(run_dir):
                raise RunDirError(f"{run_dir} is not a run directory; refusing to overwrite it")
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
        if args.overwrite:
            for p in run_dir.iterdir():
                if p.name != ".lock":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        preset = args.preset

    try:
        t0 = time.perf_counter()
        summary = train(cfg, run_dir, resume=args.resume is not None, progress=not args.no_progress,
                        preset=preset, data=data)
    finally:
        lock.release()
    if summary.get("interrupted"):
        return 130
    ratio = f" ({summary['gen_over_mem']}x)" if summary["gen_over_mem"] else ""
    fin = summary["final"]
    acc = (f"train acc {fin['train_acc']:.3f}, test acc {fin['test_acc']:.3f}" if fin["test_acc"] is not None
           else f"train loss {fin['train_loss']:.2e}, test loss {fin['test_loss']:.2e}")
    print(f"S_mem {summary['S_mem']}, S_gen {summary['S_gen']}{ratio}; {acc}; {summary['steps']} steps in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"run: {run_dir} ({summary['n_checkpoints']} checkpoints)   curves: {run_dir / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
