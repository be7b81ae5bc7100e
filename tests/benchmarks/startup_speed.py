"""What `python -m training.run` costs before and around its training loop, side by side in one run.

    python -m tests.benchmarks.startup_speed [--rounds 3] [--no-default]

Each row is a fresh process, the rows interleaved round by round, medians printed (wall seconds):

- `python -c pass`: the interpreter alone;
- the imports of the run's path (`training.run`, `training.loop`), and of torch and of transformer_lens alone;
- a 1-step run of the `default` preset, and the whole `default` run: the time to their first training step (the
  run reports it when GROKSCOPE_T0 is set, see `training.loop.say_first_step`) and the whole process.

The machine's load average is printed before and after: on a shared machine every figure moves with it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_STEP = re.compile(r"grokscope: first step ([0-9.]+) s after GROKSCOPE_T0")


def timed(argv: list[str], tree: Path) -> tuple[float, float | None]:
    """(whole-process wall seconds, seconds to the first training step or None) of one fresh process run in the
    checkout `tree`."""
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": str(tree), "GROKSCOPE_T0": repr(t0)}
    proc = subprocess.run([sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    m = FIRST_STEP.search(proc.stderr)
    return wall, float(m.group(1)) if m else None


def rows(out: Path, default: bool) -> dict[str, list[str]]:
    run = ["-m", "training.run", "--no-progress", "--overwrite", "--out"]
    found = {
        "interpreter (python -c pass)": ["-c", "pass"],
        "import training.run, training.loop": ["-c", "import training.run, training.loop"],
        "import torch": ["-c", "import torch"],
        "import torch, transformer_lens": ["-c", "import torch, transformer_lens"],
        "training.run --steps 1": run + [str(out / "one"), "--steps", "1"],
    }
    if default:
        found["training.run (default preset)"] = run + [str(out / "default")]
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-default", action="store_true", help="skip the whole default run (the slowest row)")
    ap.add_argument("--against", type=Path, default=None, metavar="DIR",
                    help="another checkout (e.g. of the main branch) timed the same way, interleaved row by row")
    args = ap.parse_args()
    trees = {"": ROOT} if args.against is None else {"this: ": ROOT, "other: ": args.against.resolve()}
    threads = os.environ.get("OMP_NUM_THREADS", "not set (training.run chooses)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs; "
          f"OMP_NUM_THREADS {threads}")
    with tempfile.TemporaryDirectory() as tmp:
        commands = {(label + name, tree): argv for name, argv in rows(Path(tmp), not args.no_default).items()
                    for label, tree in trees.items()}
        walls: dict[str, list[float]] = {k: [] for k, _ in commands}
        firsts: dict[str, list[float]] = {k: [] for k, _ in commands}
        for _ in range(args.rounds):
            for (name, tree), argv in commands.items():
                wall, first = timed(argv, tree)
                walls[name].append(wall)
                if first is not None:
                    firsts[name].append(first)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, tree in trees.items():
        if label:
            print(f"{label}{tree}")
    print(f"{'':47s} {'whole process':>14s} {'to first step':>14s}   (median of {args.rounds}, seconds)")
    for name in walls:
        first = f"{statistics.median(firsts[name]):14.2f}" if firsts[name] else f"{'':14s}"
        print(f"{name:47s} {statistics.median(walls[name]):14.2f} {first}")


if __name__ == "__main__":
    main()
