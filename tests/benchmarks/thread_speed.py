"""Each preset's training step at one thread, at two (torch's default: one per core, spinning), and by load (what
`training.run` does: training.threads' governor picks one or two step by step), idle and beside one busy process.

    python -m tests.benchmarks.thread_speed [--presets default,parity-blog] [--rounds 3] [--budget 2]

One fresh process per condition, in the environment training.run sets for a run by load (OMP_NUM_THREADS = the
cores, OpenMP's default wait policy). For each preset a `Trainer` (K = 1, the preset's own batch) steps for --budget
seconds (at least 10 steps) at 1 thread, then at 2, then by load (a fresh governor each round, so its start and its
probes are counted; the sums a second thread would split kept on one, as in a run by load), rounds interleaved;
each figure is the median over rounds of the mean step time. "same bits" is `same_bits`' verdict: where it is
"no", training.run trains on one thread and the by-load column is one thread's.
"Busy": one spinning Python process started before and killed after. The machine's load average is printed: other
processes move every figure.
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
MODES = ("1", "2", "load")


def step_times(name: str, rounds: int, budget: float) -> dict | str:
    """Median seconds per step of preset `name` at 1 and 2 threads and by load, and the bit check's verdict; or why
    it cannot be timed."""
    import torch

    from training.presets import get_preset
    from training.tasks.build import build_task
    from training.threads import Governor, same_bits, stepping_by_load
    from training.trainer import Trainer

    cfg = get_preset(name)
    try:
        data = build_task(cfg.task)
    except Exception as e:  # noqa: BLE001  (a task needing files that are not here: reported, not timed)
        return str(e).splitlines()[0]
    with stepping_by_load(2):
        same = same_bits(lambda: Trainer([cfg], [data], "cpu"), 2)
    trainer = Trainer([cfg], [data], "cpu")
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            gov = Governor(2, torch.set_num_threads) if mode == "load" and same else None
            torch.set_num_threads(1 if mode == "load" else int(mode))
            with stepping_by_load(2 if mode == "load" else 0):
                times[mode].append(timed_steps(trainer, gov, budget))
    return {"same": same, **{m: statistics.median(v) for m, v in times.items()}}


def timed_steps(trainer, gov, budget: float) -> float:
    """Seconds per step over at least 10 steps and `budget` seconds, after one warm-up step; `gov` (by load) sets
    each step's count."""
    trainer.step()  # warm-up at this count
    t, steps = time.perf_counter(), 0
    while steps < 10 or time.perf_counter() - t < budget:
        steps += 1
        if gov is not None:
            gov.next()
            s = time.perf_counter()
            trainer.step()
            gov.timed(time.perf_counter() - s)
        else:
            trainer.step()
    return (time.perf_counter() - t) / steps


def child(presets: list[str], rounds: int, budget: float) -> None:
    print(json.dumps({name: step_times(name, rounds, budget) for name in presets}))


def measure(args: argparse.Namespace, presets: list[str], busy: bool) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        cmd = [sys.executable, "-m", "tests.benchmarks.thread_speed", "--child", "--presets", ",".join(presets),
               "--rounds", str(args.rounds), "--budget", str(args.budget)]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if r.returncode != 0:
        raise SystemExit(f"child failed: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), load


def report(rows: dict[str, tuple[dict, str]]) -> None:
    print("ms per step; load/1 and load/2: by load against 1 and 2 threads in the same process")
    for condition, (got, load) in rows.items():
        print(f"\n{condition} (load average at the start: {load})")
        print(f"{'preset':22s} {'same bits':>9s} {'1 thread':>9s} {'2 threads':>10s} {'by load':>9s} {'load/1':>7s} "
              f"{'load/2':>7s}")
        for name, t in got.items():
            if isinstance(t, str):
                print(f"{name:22s} not timed: {t}")
                continue
            print(f"{name:22s} {'yes' if t['same'] else 'no':>9s} {t['1'] * 1e3:9.2f} {t['2'] * 1e3:10.2f} "
                  f"{t['load'] * 1e3:9.2f} {t['load'] / t['1']:7.2f} {t['load'] / t['2']:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=None, help="comma-separated presets (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of steps per measurement")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from training.presets import PRESETS

    presets = args.presets.split(",") if args.presets else list(PRESETS)
    if args.child:
        return child(presets, args.rounds, args.budget)
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.budget} s of steps per mode")
    report({condition: measure(args, presets, busy) for condition, busy in (("idle", False),
                                                                            ("one busy process", True))})


if __name__ == "__main__":
    main()
