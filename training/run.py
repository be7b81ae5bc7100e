"""`python -m training.run`: train one run into a run directory.

    python -m training.run                                  # the default preset, groks in < 1 min on a CPU
    python -m training.run --preset nanda2023 --out checkpoints/nanda
    python -m training.run --p 97 --frac 0.5 --task "x/y"  # any config field is a flag
    python -m training.run --resume checkpoints/nanda       # continue an interrupted run
    python -m training.run --seeds 0-7 --out sweeps/default  # 8 init seeds as one ensemble: sweeps/default/seed=<s>/
    python -m training.run --resume sweeps/default          # continue all of them

Bad input exits with status 2 and one line on stderr, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from training.config import FIELD_SECTION, SECTIONS, ConfigError, RunConfig, parse_value, validate
from training.models import build_model
from training.presets import PRESETS, get_preset
from training.ensemble import seed_dirs
from training.rundir import CONFIG, RunDirError, RunLock, is_run_dir
from training.tasks import build_task

DEFAULT_ROOT = Path("checkpoints")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage block too)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def make_parser() -> Parser:
    p = Parser(prog="python -m training.run", description="Train a grokking run into a run directory.",
               )
    p.add_argument("--preset", default="default", help=f"named config: {', '.join(PRESETS)}")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: checkpoints/<preset>, numbered if taken)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seeds", default=None, metavar="S", help="train these init seeds (0-7 or 0,1,5) as one ensemble "
                   "into <out>/seed=<s>/; --resume <out> continues them")
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
    """Everything that can be wrong with a config, found before the run directory is touched."""
    validate(cfg)
    data = build_task(cfg.task)
    build_model(cfg.model, data)
    return data


def free_dir(root: Path, name: str) -> Path:
    path, n = root / name, 2
    while path.exists():
        path, n = root / f"{name}-{n}", n + 1
    return path


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return _main(args)
    except (ConfigError, RunDirError) as e:
        print(f"training.run: error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from training.loop import train  # after argument parsing: --help stays quick

    if args.seeds is not None or (args.resume is not None and not is_run_dir(args.resume)
                                  and args.resume.is_dir() and seed_dirs(args.resume)):
        return _main_seeds(args)
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


def _main_seeds(args: argparse.Namespace) -> int:
    """Several init seeds of one config as one ensemble, each into <out>/seed=<s>/ (training.ensemble)."""
    from training.ensemble import SEED_DIR, parse_seeds, train_ensemble

    if args.resume is not None:
        if args.seeds is not None:
            raise ConfigError("--resume of a seeds directory takes its seeds from there; drop --seeds")
        dirs = seed_dirs(args.resume)
        raws = [json.loads((d / CONFIG).read_text()) for d in dirs]
        preset = raws[0].get("preset", "")
        cfgs = [RunConfig.from_dict({k: v for k, v in r.items() if k not in ("preset", "versions")}) for r in raws]
        if any(getattr(args, name) is not None for name in FIELD_SECTION):
            raise ConfigError("--resume keeps the runs' configs; cannot change them")
        for c in cfgs:
            check(c)
    else:
        seeds = parse_seeds(args.seeds)
        base, _ = config_from_args(args)
        cfgs = [base.replace(seed=s) for s in seeds]
        check(base)
        parent = args.out if args.out is not None else free_dir(DEFAULT_ROOT, args.preset)
        dirs = [parent / SEED_DIR.format(s) for s in seeds]
        taken = [d for d in dirs if d.exists() and any(p.name != ".lock" for p in d.iterdir())]
        if taken and not args.overwrite:
            raise RunDirError(f"{taken[0]} already exists; pass --resume {parent} to continue or --overwrite")
        preset = args.preset
    locks = []
    try:
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            locks.append(RunLock(d).acquire())
            if args.resume is None and args.overwrite:
                for p in d.iterdir():
                    if p.name != ".lock":
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
        t0 = time.perf_counter()
        out = train_ensemble(cfgs, dirs, resume=args.resume is not None, progress=not args.no_progress,
                             preset=preset)
    finally:
        for lock in locks:
            lock.release()
    if any(s.get("interrupted") for s in out):
        print(f"continue with: python -m training.run --resume {dirs[0].parent}")
        return 130
    for d, s in zip(dirs, out):
        print(f"{d.name}: S_mem {s['S_mem']}, S_gen {s['S_gen']}; {s['steps']} steps")
    print(f"{len(dirs)} runs in {time.perf_counter() - t0:.1f} s under {dirs[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
