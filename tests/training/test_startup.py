"""What `python -m training.run` imports before its first training step, and the thread count it chooses.

Structural, never timed: which modules are in sys.modules when training starts (a fresh interpreter that stops the
run there), and the torch thread count it has then (`training.threads`; training by load:
tests/training/test_threads.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli
from training import threads
from training.errors import ConfigError

HEAVY = ("transformer_lens", "matplotlib", "plotly", "sklearn", "scipy", "ray", "networkx", "torch._dynamo", "sympy")

# Runs training.run in a fresh interpreter and stops it where its first step would start (training.loop._train),
# printing the heavy modules imported by then and torch's thread count; training.loop (and torch) are imported where
# the run imports them. `preload` is imported first (the fixture where the check must fail).
PROBE = """
import json, sys
import training.run as run
{preload}
def stop(*args, **kwargs):
    import torch
    heavy = sorted(m for m in {heavy!r} if m in sys.modules)
    print(json.dumps({{"heavy": heavy, "threads": torch.get_num_threads(),
                      "deterministic": torch.are_deterministic_algorithms_enabled()}}), file=sys.__stdout__, flush=True)
    raise SystemExit(0)
def stopping(body):
    def wrapped(args):
        import training.loop
        training.loop._train = stop
        return body(args)
    return wrapped
run._main, run._main_seeds = stopping(run._main), stopping(run._main_seeds)
run.main(sys.argv[1:])
"""


def imported_before_training(*args: str, preload: str = "", env: dict | None = None) -> dict:
    code = PROBE.format(heavy=HEAVY, preload=preload)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    r = subprocess.run([sys.executable, "-c", code, "--no-progress", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={k: v for k, v in full_env.items() if v is not None})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("extra", [[], ["--seeds", "0-1"]], ids=["alone", "seeds"])
def test_no_heavy_module_is_imported_before_the_first_step(tmp_path, extra):
    got = imported_before_training("--steps", "1", "--out", str(tmp_path / "run"), *extra,
                                   env={"OMP_NUM_THREADS": "1"})
    assert got["heavy"] == []
    assert got["deterministic"]  # set without torch.use_deterministic_algorithms' import of TorchDynamo


def test_the_check_sees_a_heavy_module_imported_before_training(tmp_path):
    got = imported_before_training("--steps", "1", "--out", str(tmp_path / "run"), preload="import matplotlib.figure",
                                   env={"OMP_NUM_THREADS": "1"})
    assert got["heavy"] == ["matplotlib"]


def test_the_check_sees_torchdynamo_imported_before_training(tmp_path):
    got = imported_before_training("--steps", "1", "--out", str(tmp_path / "run"),
                                   preload="import torch; torch.use_deterministic_algorithms(True)",
                                   env={"OMP_NUM_THREADS": "1"})
    assert "torch._dynamo" in got["heavy"]


def test_the_curves_are_still_drawn_after_training(tmp_path):
    r = run_cli("--p", "11", "--steps", "3", "--eval-every", "1", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_explicit_choice_wins_and_is_recorded(tmp_path):
    got = imported_before_training("--preset", "nanda2023", "--steps", "1", "--out", str(tmp_path / "a"),
                                   env={"OMP_NUM_THREADS": "1"})
    assert got["threads"] == 1
    got = imported_before_training("--steps", "1", "--threads", "2", "--out", str(tmp_path / "b"),
                                   env={"OMP_NUM_THREADS": "1"})
    assert got["threads"] == 2  # --threads over OMP_NUM_THREADS
    r = run_cli("--p", "11", "--steps", "1", "--threads", "2", "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "c" / "config.json").read_text())["numerics"]["threads"] == 2


def test_without_a_choice_a_run_starts_by_load_on_a_thread_per_core_or_on_one_where_the_bits_differ(tmp_path):
    got = imported_before_training("--p", "11", "--steps", "1", "--out", str(tmp_path / "a"),
                                   env={"OMP_NUM_THREADS": None})
    by_load = "threads_by_load" in json.loads((tmp_path / "a" / "config.json").read_text())["numerics"]
    assert got["threads"] == (threads.cores() if by_load else 1)


def test_a_resumed_run_keeps_its_recorded_count(tmp_path):
    run = tmp_path / "run"
    r = run_cli("--p", "11", "--steps", "2", "--threads", "2", "--out", str(run))
    assert r.returncode == 0, r.stderr
    got = imported_before_training("--resume", str(run), "--steps", "4", env={"OMP_NUM_THREADS": None})
    assert got["threads"] == 2


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_bad_omp_num_threads_is_one_line(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        threads.explicit(None)


def test_a_bad_omp_num_threads_stops_the_run_in_one_line_before_anything_is_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "two"}
    r = subprocess.run([sys.executable, "-m", "training.run", "--steps", "1", "--out", str(tmp_path / "run")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "OMP_NUM_THREADS='two'" in r.stderr
    assert not (tmp_path / "run").exists()


