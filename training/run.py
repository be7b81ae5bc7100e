"""`python -m training.run`: train one run into a run directory.

    python -m training.run                                  # the default preset, groks in < 1 min on a CPU
    python -m training.run --preset nanda2023 --out checkpoints/nanda
    python -m training.run --p 97 --frac 0.5 --task "x/y"  # any config field is a flag
    python -m training.run --resume checkpoints/nanda       # continue an interrupted run
    python -m training.run --seeds 0-7 --out sweeps/default  # 8 init seeds as one ensemble: sweeps/default/seed=<s>/
    python -m training.run --resume sweeps/default          # continue all of them

Bad input exits with status 2 and one line on stderr, before anything is written; the flags are parsed and the
config validated (training.config.validate: ranges, the task's constraints, the memory estimate) before torch
is imported, so `--help` and every such error answer at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from training.cli import Parser, main_entry, positive_int
from training.config import FIELD_SECTION, SECTIONS, ConfigError, RunConfig, parse_value, validate
from training.constants import CONFIG, SEED_DIR
from training.memory import LIMIT_ENV, members_that_fit
from training.presets import PRESETS, get_preset
from training.threads import threads_for

DEFAULT_ROOT = Path("checkpoints")


def make_parser() -> Parser:
    p = Parser(prog="python -m training.run", description="Train a grokking run into a run directory.")
    p.add_argument("--preset", default=None, help=f"named config: {', '.join(PRESETS)} (default: default)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: checkpoints/<preset>, numbered if taken)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seeds", default=None, metavar="S", help="train these init seeds (0-7 or 0,1,5) as one ensemble "
                   "into <out>/seed=<s>/; --resume <out> continues them")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch threads, fixed (default: OMP_NUM_THREADS if set; else by load: each step at 1 thread or "
                   "one per core, whichever is faster now, where both give the same bits; a resumed run keeps its "
                   "own). Recorded in config.json")
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
    return get_preset(args.preset or "default").replace(**overrides), overrides


def check(cfg: RunConfig):
    """What is left to find wrong with a config that passed `validate` (the one check of a run, made before torch
    loads), found before the run directory is touched: the task and the model are built (which reads --data-path
    files, for instance)."""
    from training.models.base import plain_models
    from training.models.build import build_model
    from training.tasks.build import build_task

    data = build_task(cfg.task)
    with plain_models():
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
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
        fit = members_that_fit([cfg])
        if fit is not None and len(seeds) > fit:  # one ensemble: every member in memory at once
            raise ConfigError(f"--seeds: {len(seeds)} members do not fit in memory at once (about {fit} do, by the "
                              f"estimate; see {LIMIT_ENV}); train fewer seeds per command")
    ensemble = args.seeds is not None or (args.resume is not None and bool(seed_dirs(args.resume)))
    resumed = None if args.resume is None else (seed_dirs(args.resume) or [args.resume])[0]
    with threads_for(args.threads, resumed):  # before torch is imported: its thread pool starts with it
        return _main_seeds(args) if ensemble else _main(args)


def _main(args: argparse.Namespace) -> int:
    # after argument parsing: --help stays quick
    from training.cli import EXIT_DIVERGED
    from training.loop import pick_device, train
    from training.runs.format import read_config, set_steps
    from training.runs.resume import check_resume
    from training.runs.writer import RunLock, create_run_dir

    if args.resume is not None:
        run_dir = args.resume
        # the run continues as it was configured: any other flag would be silently ignored or change its shapes
        _, overrides = config_from_args(args)
        given = [flag for flag, on in (("--preset", args.preset is not None), ("--out", args.out is not None),
                                       ("--overwrite", args.overwrite)) if on]
        changed = sorted(set(overrides) - {"steps"})
        if given or changed:
            raise ConfigError(f"--resume keeps the run's config; cannot change {', '.join(changed + given)} "
                              "(only --steps, to extend it)")
        cfg, extras = read_config(run_dir)
        steps_changed = "steps" in overrides and overrides["steps"] != cfg.train.steps
        cfg = cfg.replace(steps=overrides.get("steps", cfg.train.steps))
        validate(cfg)
        data = check(cfg)
        pick_device(cfg.train.device)  # before the lock: nothing is written for a config that cannot run here
        lock = RunLock(run_dir).acquire()
        preset = extras.get("preset", "")
    else:
        cfg, _ = config_from_args(args)
        data = check(cfg)
        pick_device(cfg.train.device)
        run_dir = args.out if args.out is not None else free_dir(DEFAULT_ROOT, args.preset or "default")
        lock = create_run_dir(run_dir, overwrite=args.overwrite)
        preset = args.preset or "default"

    try:
        if args.resume is not None:
            check_resume(run_dir, cfg, data)  # everything checked before config.json may change
            if steps_changed:
                set_steps(run_dir, cfg.train.steps)
        t0 = time.perf_counter()
        summary = train(cfg, run_dir, resume=args.resume is not None, progress=not args.no_progress,
                        preset=preset, data=data)
    finally:
        lock.release()
    if summary.get("interrupted"):
        return 130
    if summary.get("diverged_at") is not None:
        print(f"training.run: diverged at step {summary['diverged_at']} (the loss is no longer finite); state, "
              f"last weights and summary saved in {run_dir}", file=sys.stderr)
        return EXIT_DIVERGED
    ratio = f" ({summary['gen_over_mem']}x)" if summary["gen_over_mem"] else ""
    fin = summary["final"]
    acc = (f"train acc {fin['train_acc']:.3f}, test acc {fin['test_acc']:.3f}" if fin["test_acc"] is not None
           else f"train loss {fin['train_loss']:.2e}, test loss {fin['test_loss']:.2e}")
    print(f"S_mem {summary['S_mem']}, S_gen {summary['S_gen']}{ratio}; {acc}; {summary['steps']} steps in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"run: {run_dir} ({summary['n_checkpoints']} checkpoints)   curves: {run_dir / 'curves.png'}")
    return 0


# --- several init seeds of one config as one ensemble ------------------------------------------------------------



def parse_seeds(text: str) -> list[int]:
    """"0-7" -> [0, ..., 7]; "0,1,5" -> [0, 1, 5]; "0-3,9" -> [0, 1, 2, 3, 9]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ConfigError(f"--seeds: expected seeds like 0-7 or 0,1,5, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds) or len(seeds) > 4096:
        raise ConfigError(f"--seeds: expected up to 4096 distinct seeds like 0-7 or 0,1,5, got '{text}'")
    return seeds


def seed_dirs(parent: Path) -> list[Path]:
    """The run directories `<parent>/seed=<s>/` of a seeds ensemble, by seed (none when parent is a run itself)."""
    if not Path(parent).is_dir() or (Path(parent) / CONFIG).exists():
        return []
    found = [p for p in Path(parent).glob(SEED_DIR.format("*"))
             if p.name[5:].isdigit() and (p / CONFIG).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _main_seeds(args: argparse.Namespace) -> int:
    """Several init seeds of one config as one ensemble (training.ensemble), each into <out>/seed=<s>/, an
    ordinary run directory; `--resume <out>` continues all of them."""
    from training.ensemble import train_ensemble
    from training.loop import pick_device
    from training.runs.format import read_config
    from training.runs.resume import check_resume
    from training.runs.writer import RunLock, create_run_dirs

    if args.resume is not None:
        _, overrides = config_from_args(args)
        if overrides or args.seeds is not None or args.out is not None or args.overwrite or args.preset is not None:
            raise ConfigError("--resume of a seeds directory keeps its runs' configs; give no other flag")
        dirs = seed_dirs(args.resume)
        cfgs, presets = zip(*((cfg, extras.get("preset", "")) for cfg, extras in map(read_config, dirs)))
        for c in cfgs:
            validate(c)
        datas = [check(c) for c in cfgs]
        pick_device(cfgs[0].train.device)
        locks = [RunLock(d).acquire() for d in dirs]
        preset = presets[0]
    else:
        base, _ = config_from_args(args)
        seeds = parse_seeds(args.seeds)
        cfgs, datas = [base.replace(seed=s) for s in seeds], [check(base)] * len(seeds)
        pick_device(base.train.device)
        parent = args.out if args.out is not None else free_dir(DEFAULT_ROOT, args.preset or "default")
        dirs, locks, preset = [parent / SEED_DIR.format(s) for s in seeds], [], args.preset or "default"
    try:
        if args.resume is not None:
            for d, c, data in zip(dirs, cfgs, datas):
                check_resume(d, c, data)
        else:  # every member checked before any is replaced
            locks += create_run_dirs(dirs, overwrite=args.overwrite)
        t0 = time.perf_counter()
        out = train_ensemble(list(cfgs), dirs, resume=args.resume is not None, progress=not args.no_progress,
                             preset=preset)
    finally:
        for lock in locks:
            lock.release()
    if any(s.get("interrupted") for s in out):
        print(f"continue with: python -m training.run --resume {dirs[0].parent}")
        return 130
    for d, s in zip(dirs, out):
        print(f"{d.name}: S_mem {s['S_mem']}, S_gen {s['S_gen']}; {s['steps']} steps"
              + (f"; diverged at step {s['diverged_at']}" if s.get("diverged_at") is not None else ""))
    print(f"{len(dirs)} runs in {time.perf_counter() - t0:.1f} s under {dirs[0].parent}")
    return 3 if any(s.get("diverged_at") is not None for s in out) else 0


if __name__ == "__main__":
    sys.exit(main())
