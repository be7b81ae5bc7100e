"""Record what the `default` preset trains in a few steps, to pin that a refactor leaves its numbers alone.

    python -m tests.training.make_fixture            # rewrites tests/training/fixtures/default_30steps.json

It runs `python -m training.run --preset default --steps 30 --eval-every 5` at one torch thread and stores every metrics row
(less its wall-clock fields) and one sha256 per checkpoint over its tensors (names, dtypes, shapes and bytes).
Bit-identity holds only for the same code on one machine at one thread count, so the fixture also records torch's
version, its CPU capability (AVX2, AVX512, ...) and the thread count; tests/training/test_default_fixture.py
skips, saying why, wherever those differ. Rerun this command when a change is meant to alter the default
preset's numbers (and say so in the commit), never to make a failing comparison pass by accident.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("fixtures") / "default_30steps.json"
STEPS, EVAL_EVERY, THREADS = 30, 5, 1
TIMING_KEYS = ("wall", "time", "elapsed")  # metrics fields that measure the clock, not the training


def cpu_vendor() -> str:
    """The CPU's maker as the kernel names it (GenuineIntel, AuthenticAMD): MKL takes other kernels on each, so two
    machines with the same torch capability (AVX512) still round differently."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "unknown")
    except OSError:
        return "unknown"


def platform(threads: int = THREADS) -> dict[str, object]:
    """What bit-identity depends on besides the code: torch's build and kernels, the CPU's maker, the thread count."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_vendor": cpu_vendor(), "threads": threads}


def tensors_sha256(path: Path) -> str:
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    for name, array in sorted(load_file(str(path)).items()):
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def measure() -> dict[str, object]:
    """Train the default preset for STEPS steps in a fresh process and return what the fixture holds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        proc = subprocess.run([sys.executable, "-m", "training.run", "--preset", "default", "--steps", str(STEPS),
                               "--eval-every", str(EVAL_EVERY),
                               "--device", "cpu", "--no-progress", "--out", str(run)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"training.run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        rows = [{k: v for k, v in r.items() if not any(t in k for t in TIMING_KEYS)} for r in rows]
        ckpts = {p.name: tensors_sha256(p) for p in sorted((run / "ckpt").glob("*.safetensors"))}
    return {"metrics": rows, "checkpoints": ckpts}


def main() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    fixture = {"command": "python -m tests.training.make_fixture", "preset": "default", "steps": STEPS,
               "eval_every": EVAL_EVERY,
               "platform": platform(), **measure()}
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)}: {len(fixture['metrics'])} metrics rows, "
          f"{len(fixture['checkpoints'])} checkpoints")


if __name__ == "__main__":
    main()
