"""Each preset's training step at one thread, at two, and at the count `training.run` chooses (training.threads),
idle and beside one busy process, side by side in one run.

    python -m tests.benchmarks.thread_speed [--presets default,parity-blog] [--rounds 3] [--budget 0.3]

Two fresh processes per condition: one in today's environment (OpenMP's default wait policy, whose idle threads
spin) times 1 and 2 threads; one in the environment training.run sets for the chosen count (OMP_WAIT_POLICY=PASSIVE
when it is above one) times 1 thread and the chosen count. Each time is the median over rounds of the mean step time
of a `Trainer` (K = 1, the preset's own batch) stepped for --budget seconds, thread counts interleaved. "Busy": one
spinning Python process started before and killed after. The ratios are to one thread in the same process. The
machine's load average is printed: other processes on a shared machine move every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def step_times(name: str, counts: list[int], rounds: int, budget: float) -> dict[int, float] | str:
    """Median seconds per step of preset `name` at each thread count (interleaved), or why it cannot be timed."""
    import torch

    from training.presets import get_preset
    from training.tasks.build import build_task
    from training.trainer import Trainer

    cfg = get_preset(name)
    try:
        trainer = Trainer([cfg], [build_task(cfg.task)], "cpu")
    except Exception as e:  # noqa: BLE001  (a task needing files that are not here: reported, not timed)
        return str(e).splitlines()[0]
    times: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(rounds):
        for n in counts:
            torch.set_num_threads(n)
            trainer.step()  # warm-up at this count
            t, steps = time.perf_counter(), 0
            while steps < 2 or time.perf_counter() - t < budget:
                trainer.step()
                steps += 1
            times[n].append((time.perf_counter() - t) / steps)
    return {n: statistics.median(v) for n, v in times.items()}


def chosen_count(name: str) -> int | str:
    """The count training.run chooses for preset `name`, or why it has none (a task needing files not here)."""
    from training.errors import ConfigError
    from training.presets import get_preset
    from training.threads import choose

    try:
        return choose(get_preset(name))
    except ConfigError as e:
        return str(e)


def child(kind: str, presets: list[str], rounds: int, budget: float) -> None:
    """One process's measurements, as JSON on stdout: kind "today" times 1 and 2 threads, "chosen" 1 and the
    chosen count."""
    out = {}
    for name in presets:
        chosen = chosen_count(name)
        if isinstance(chosen, str):
            out[name] = {"chosen": 0, "times": chosen}
            continue
        counts = [1, 2] if kind == "today" else sorted({1, chosen})
        got = step_times(name, counts, rounds, budget)
        out[name] = {"chosen": chosen, "times": got if isinstance(got, str) else {str(k): v for k, v in got.items()}}
    print(json.dumps(out))


def run_child(kind: str, args: argparse.Namespace, presets: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    if kind == "chosen" and any(isinstance(n, int) and n > 1 for n in map(chosen_count, presets)):
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # as training.threads sets it for a count above one
    cmd = [sys.executable, "-m", "tests.benchmarks.thread_speed", "--child", kind, "--presets", ",".join(presets),
           "--rounds", str(args.rounds), "--budget", str(args.budget)]
    r = subprocess.run(cmd, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{kind} child failed: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, presets: list[str], busy: bool) -> tuple[dict, dict, str]:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        today, chosen = run_child("today", args, presets), run_child("chosen", args, presets)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return today, chosen, load


def report(condition: str, today: dict, chosen: dict, load: str) -> None:
    print(f"\n{condition} (load average at the start: {load}); ms per step, ratios to 1 thread in the same process")
    print(f"{'preset':22s} {'chosen':>6s} {'1 thread':>9s} {'2 threads':>10s} {'2/1':>6s} {'1 thread':>9s} "
          f"{'chosen':>9s} {'chosen/1':>9s}")
    for name in today:
        a, b = today[name]["times"], chosen[name]["times"]
        if isinstance(a, str) or isinstance(b, str):
            print(f"{name:22s} not timed: {a if isinstance(a, str) else b}")
            continue
        n = chosen[name]["chosen"]
        print(f"{name:22s} {n:6d} {a['1'] * 1e3:9.2f} {a['2'] * 1e3:10.2f} {a['2'] / a['1']:6.2f} "
              f"{b['1'] * 1e3:9.2f} {b[str(n)] * 1e3:9.2f} {b[str(n)] / b['1']:9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=None, help="comma-separated presets (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.3, help="seconds of steps per measurement")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from training.presets import PRESETS

    presets = args.presets.split(",") if args.presets else list(PRESETS)
    if args.child:
        return child(args.child, presets, args.rounds, args.budget)
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.budget} s per thread count")
    for condition, busy in (("idle", False), ("one busy process", True)):
        report(condition, *measure(args, presets, busy))


if __name__ == "__main__":
    main()
