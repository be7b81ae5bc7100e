"""`python -m training.sweep`: a grid of configs over several seeds, on local worker processes or on Ray.

    python -m training.sweep --sweep frac --out checkpoints/frac                  # a named sweep (SWEEPS below)
    python -m training.sweep --preset parity-blog --grid wd_after_memorisation=0.01,0.1,1 \\
        --seeds 0 1 2 --steps 4000 --stop-after-gen 0 --out checkpoints/wd       # any grid; config flags as in training.run
    python -m training.sweep --sweep frac --backend ray --address auto             # on a running Ray cluster

A sweep may also name *variants* (methods): a label and the flat config overrides that make it, e.g.
`perp-adamw = {perp_grad: true, wd: 0}`; every variant runs at every grid point and seed, its overrides applied
over the sweep's fixed fields (a variant that sets `wd` wins over `--wd`). `--methods A,B` keeps some of them.

Every run is a normal run directory under the sweep directory, named after its method, grid point and seed
(`wd_after_memorisation=0.1_seed=2/`, `method=perp-adamw_frac=0.3_seed=0/`), so every analysis works on it. `sweep.json` indexes them: the spec (preset,
overrides, grid, variants, seeds) and one entry per run (its method, if any, in "method" and in "params") with its status and headline numbers, rewritten as runs finish.

Running the command again on the same --out continues the sweep: runs that reached their configured steps
(`rundir.run_finished`) are kept, interrupted ones resumed from their saved state; it may add grid values or seeds
(they join those already there). Ctrl-C (or SIGTERM) drains: no queued run starts, running runs save their resume
state, the index is written, exit 130; a second Ctrl-C changes nothing. A run that fails does not stop the others;
failed runs are listed at the end with their reason and the exit status is 1.

The runs are grouped into *chunks* (`plan_chunks`), each trained by one worker (`training.sweeps.executor`).
A seed s sets every field in --seed-fields (default: the init seed and the minibatch seed) to s.
Each worker runs on --threads torch threads (default 1: on a small CPU, one thread per process beats several
processes fighting over cores).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
import sys
import time
from typing import Any

from training.cli import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, MAX_INT, Parser, main_entry, nonneg_int,
                          positive_int, require)
from training.config import FIELD_SECTION, ConfigError, parse_value
from training.presets import PRESETS, get_preset
from training.sweeps.drive import sweep
from training.sweeps.spec import INDEX, SWEEPS, SweepSpec, check_variants, fmt


# --- command line --------------------------------------------------------------------------------------------


def parse_field_value(name: str, text: str, flag: str) -> Any:
    """A config field's value from the command line: its type, and a finite number that fits 64 bits."""
    v = parse_value(name, text.strip())
    if isinstance(v, float) and not math.isfinite(v) or isinstance(v, int) and abs(v) > MAX_INT:
        raise ConfigError(f"{flag}: {name} must be a finite number, got '{text.strip()}'")
    return v


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects NAME=V1,V2,..., got '{item}'")
        name, values = item.split("=", 1)
        name = name.strip().lstrip("-").replace("-", "_")
        if name not in FIELD_SECTION:
            raise ConfigError(f"--grid: unknown config field '{name}'")
        if name in grid:
            raise ConfigError(f"--grid {name} given twice")
        vals: list[Any] = []
        for text in (v for v in values.split(",") if v.strip()):
            v = parse_field_value(name, text, "--grid")
            if v not in vals:  # a value twice would name two runs alike
                vals.append(v)
        if not vals:
            raise ConfigError(f"--grid {name}: no values")
        grid[name] = vals
    return grid


def make_parser() -> Parser:
    p = Parser(prog="python -m training.sweep", description="Run a grid of configs over several seeds.",
               epilog="Named sweeps: " + "; ".join(f"{k} = {v.doc}" for k, v in SWEEPS.items()))
    p.add_argument("--sweep", default=None, help=f"a named sweep: {', '.join(SWEEPS)}")
    p.add_argument("--preset", default=None, help=f"base config: {', '.join(PRESETS)} (default: the sweep's, or 'default')")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a config field and its values (repeat for a product grid)")
    p.add_argument("--seeds", type=nonneg_int, nargs="+", default=None, help="seeds (default: the sweep's, or 0 1 2)")
    p.add_argument("--methods", default=None, metavar="A,B,...",
                   help="only these of the sweep's methods (variants), e.g. adamw,grokfast-ema")
    p.add_argument("--seed-fields", default="seed,batch_seed", help="config fields a seed sets")
    p.add_argument("--out", type=Path, default=None, help="sweep directory (default: checkpoints/sweep-<name>)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local worker processes, or Ray (pip install -e .[ray]; shared filesystem)")
    p.add_argument("--address", default=None, help="Ray: auto or HOST:PORT of a running cluster (default: start "
                   "a local Ray instance)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="chunks trained at once (default: 2 local; Ray: the cluster's CPUs / --threads)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker")
    p.add_argument("--no-progress", action="store_true")
    for name in FIELD_SECTION:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="V", help=argparse.SUPPRESS)
    return p


def pick_methods(variants: dict[str, dict[str, Any]], text: str | None) -> dict[str, dict[str, Any]]:
    if text is None:
        return variants
    require(bool(variants), "--methods: this sweep has no methods (variants); name one with --sweep")
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in variants]
    require(not bad, f"--methods: unknown method(s) {', '.join(bad)} (choose from {', '.join(variants)})")
    require(bool(names), "--methods: give at least one method")
    return {m: variants[m] for m in variants if m in names}


def spec_from_args(args) -> tuple[SweepSpec, str]:
    require(args.sweep is None or args.sweep in SWEEPS,
            f"unknown sweep '{args.sweep}' (choose from {', '.join(SWEEPS)})")
    base = SWEEPS[args.sweep] if args.sweep else SweepSpec(args.preset or "default", {})
    preset = args.preset or base.preset
    get_preset(preset)
    grid = {**base.grid, **parse_grid(args.grid)}
    variants = pick_methods(base.variants, args.methods)
    require(bool(grid) or bool(variants), "nothing to sweep: give --sweep NAME or --grid NAME=V1,V2,...")
    overrides = {**base.overrides, **{n: parse_field_value(n, getattr(args, n), f"--{n.replace('_', '-')}")
                                      for n in FIELD_SECTION if getattr(args, n) is not None}}
    clash = set(overrides) & set(grid)
    require(not clash, f"{', '.join(sorted(clash))} is both swept and fixed")
    seeds = args.seeds if args.seeds is not None else base.seeds
    require(bool(seeds), "--seeds: need at least one seed")
    name = args.sweep or "-".join(grid)
    spec = SweepSpec(preset, grid, sorted(set(seeds)), overrides, base.doc, variants)
    check_variants(spec)
    return spec, name


def body(args) -> int:
    spec, name = spec_from_args(args)
    seed_fields = [f.strip() for f in args.seed_fields.split(",") if f.strip()]
    bad = [f for f in seed_fields if f not in FIELD_SECTION]
    require(not bad, f"--seed-fields: unknown config field(s) {', '.join(bad)}")
    require(args.address is None or args.backend == "ray", "--address is for --backend ray")
    out = args.out if args.out is not None else Path("checkpoints") / f"sweep-{name}"
    t0 = time.perf_counter()
    index = sweep(spec, out, backend=args.backend, workers=args.workers, threads=args.threads, address=args.address,
                  seed_fields=tuple(seed_fields), progress=not args.no_progress)
    print(table(index))
    runs = index["runs"]
    n_done = sum(r["status"] == "done" for r in runs)
    print(f"{n_done}/{len(runs)} runs done in {time.perf_counter() - t0:.0f} s: {out / INDEX}")
    failed = [r for r in runs if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} failed:\n" + "\n".join(f"  {r['name']}: {r.get('error', '?')}" for r in failed))
    if index.get("interrupted"):
        print("interrupted; run the same command again to continue")
        return EXIT_INTERRUPTED
    if failed:
        return EXIT_FAILED
    print(f"analyse: python -m analyses.sweep {out}")
    return EXIT_OK


def _median(v: list[int]) -> str:
    import statistics

    return f"{statistics.median(v):.0f}" if v else "-"


def table(index: dict[str, Any]) -> str:
    """Per grid point (and method): runs done, how many generalised, median S_mem and S_gen (analyses.sweep
    says more)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in index["runs"]:
        groups.setdefault(", ".join(f"{k}={fmt(v)}" for k, v in r["params"].items()), []).append(r)
    lines = [f"{'grid point':<36} {'done':>5} {'gen':>5} {'S_mem':>8} {'S_gen':>8}"]
    for point, rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        gen = [r["S_gen"] for r in done if r.get("S_gen") is not None]
        mem = [r["S_mem"] for r in done if r.get("S_mem") is not None]
        lines.append(f"{point:<36} {len(done):>2}/{len(rs):<2} {len(gen):>5} {_median(mem):>8} {_median(gen):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return main_entry("training.sweep", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
