"""A sweep's driver and its resources: a plan too large to hold is refused at once, a chunk never holds more
members than fit in memory, a sweep index that is not UTF-8 is one line, and when the driver dies (even by
SIGKILL) its workers stop too, on the local backend and on a Ray instance it started (docs/reliability.md)."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.training.test_sweep import LONG, TINY, tiny_flags
from training.runs.format import read_metrics
from training.sweep import main
from training.sweeps.spec import SweepSpec, plan


def test_a_sweep_too_large_to_plan_is_refused_before_anything_is_built(tmp_path):
    """100001 seeds used to grow the driver to ~24 GB (one chunk of 100001 members) until the kernel killed it."""
    out = tmp_path / "sw"
    seeds = [str(s) for s in range(100001)]
    r = subprocess.run([sys.executable, "-m", "training.sweep", "--grid", "p=23", "--seeds", *seeds, "--workers", "1",
                        "--steps", "10", "--no-progress", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "100001 runs" in lines[0]
    assert not out.exists()


def test_a_chunk_never_holds_more_members_than_fit_in_memory(monkeypatch):
    import training.ensemble
    from training.memory import estimate
    from training.sweeps.spec import plan_chunks
    from training.registry import task_shape

    configs = [r.config for r in plan(SweepSpec("parity-blog", {}, list(range(40)), TINY), ["seed", "batch_seed"])]
    member = sum(estimate(configs[0], task_shape(configs[0].task)).values())
    monkeypatch.setenv("GROKSCOPE_MEMORY_LIMIT", str(int(3.5 * member)))
    asked = []

    def record(configs, max_members, threads):  # the ensemble planner, minus its timing: what was it allowed?
        asked.append(max_members)
        return [[i] for i in range(len(configs))]

    monkeypatch.setattr(training.ensemble, "plan_chunks", record)
    plan_chunks(configs, workers=1, threads=1)
    assert asked == [3]
    monkeypatch.setenv("GROKSCOPE_MEMORY_LIMIT", "none")  # where it must not bind: (runs to go / workers) as before
    plan_chunks(configs, workers=4, threads=1)
    assert asked[-1] == 10


def test_a_sweep_index_that_is_not_utf8_is_one_line(tmp_path, capsys):
    (tmp_path / "sweep.json").write_bytes(b'{"spec": "\xff"}')
    assert main(["--preset", "parity-blog", "--grid", "lr=0.1", *tiny_flags(), "--out", str(tmp_path),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.json" in err[0] and "UTF-8" in err[0], err
    assert os.listdir(tmp_path) == ["sweep.json"]


# --- when the driver dies, its workers stop ----------------------------------------------------------------------


def kill_driver_once_training(tmp_path, backend: str):
    """Start a sweep of two never-ending runs in a driver process, SIGKILL the driver once both train, and return
    the processes it had started (workers, Ray's, the resource tracker), their command lines and the run
    directories."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "sw"
    spec = SweepSpec("parity-blog", {"n_layers": [1]}, [0, 1], LONG)
    runs = [out / r.name for r in plan(spec, ["seed", "batch_seed"])]
    argv = ["--preset", "parity-blog", "--grid", "n_layers=1", "--seeds", "0", "1", *tiny_flags(steps=10**7),
            "--workers", "2", "--backend", backend, "--no-progress", "--out", str(out)]
    driver = subprocess.Popen([sys.executable, "-m", "training.sweep", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 300
        while not all(read_metrics(r / "metrics.jsonl")[-1:] and read_metrics(r / "metrics.jsonl")[-1]["step"] >= 20
                      for r in runs):
            assert driver.poll() is None and time.monotonic() < deadline, "the sweep did not start training"
            time.sleep(0.2)
        started = psutil.Process(driver.pid).children(recursive=True)
        commands = [command(psutil, p) for p in started]
    finally:
        driver.kill()
        driver.wait()
    return psutil, started, commands, runs


def command(psutil, p) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # gone, or a zombie by now
        return ""


def assert_all_stop(psutil, started, within: float):
    assert started
    gone, alive = psutil.wait_procs(started, timeout=within)
    for p in alive:  # never leave them behind, even when the assertion fails
        p.kill()
    assert not alive, [command(psutil, p) for p in alive]


@pytest.mark.slow  # two worker processes import torch
def test_local_workers_stop_and_save_their_state_when_the_driver_is_killed(tmp_path):
    psutil, started, _, runs = kill_driver_once_training(tmp_path, "local")
    assert_all_stop(psutil, started, within=60)
    for r in runs:  # each drained as on Ctrl-C: its state saved at the step it reached, resumable
        assert (r / "state" / "state.safetensors").is_file() and not (r / ".drain").exists()


@pytest.mark.slow  # starts a Ray instance
def test_a_ray_instance_the_driver_started_stops_when_the_driver_is_killed(tmp_path):
    pytest.importorskip("ray")
    psutil, started, commands, _ = kill_driver_once_training(tmp_path, "ray")
    assert any("raylet" in c for c in commands) and any("DashboardAgent" in c for c in commands), commands
    assert_all_stop(psutil, started, within=60)
