"""`python -m training.sweep`: a grid over seeds on a backend, an index, continuation (finished = reached the
configured steps), failed runs, draining on Ctrl-C at known points, bad input, and the Ray backend."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT
from training.errors import RunDirError
from training.runs.format import read_metrics
from training.runs.reader import Run
from training.runs.writer import RunLock
from training.sweeps.drive import sweep
from training.sweeps.index import merged, spec_dict
from training.sweeps.spec import INDEX, STOP_FILE, SWEEPS, SweepSpec, plan

TINY = {"n_bits": 10, "k": 2, "n_train": 60, "n_test": 60, "d_mlp": 16, "steps": 40, "eval_every": 10,
        "device": "cpu", "ckpt_floor": 3, "ckpt_max": 5}


def sweep_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "training.sweep", "--no-progress", *args], cwd=ROOT, env=env,
                          check=False, capture_output=True, text=True, timeout=600)


def tiny_flags(**over):
    return [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, **over}.items()]


def test_plan_names_runs_by_grid_point_and_seed():
    spec = SweepSpec("parity-blog", {"wd_after_memorisation": [0.1, 1.0], "label_noise": [0.0]}, [3, 4], TINY)
    runs = plan(spec, ["seed", "batch_seed"])
    assert [r.name for r in runs] == [f"wd_after_memorisation={w}_label_noise=0_seed={s}"
                                      for w in ("0.1", "1") for s in (3, 4)]
    r = runs[1]
    assert r.config.optim.wd_after_memorisation == 0.1 and r.config.train.seed == r.config.train.batch_seed == 4
    assert r.config.train.steps == 40 and r.config.task.task == "parity"


@pytest.mark.slow  # worker processes each import torch: ~20 s alone, more on a busy machine
def test_sweep_runs_every_point_in_parallel_and_continues(tmp_path):
    out = tmp_path / "sw"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    r = sweep_cli("--preset", "parity-blog", "--grid", "label_noise=0,0.2", "--seeds", "0", "1", *flags,
                  "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "label_noise=0.2" in r.stdout and "4/4 runs done" in r.stdout and "python -m analyses.sweep" in r.stdout
    index = json.loads((out / "sweep.json").read_text())
    assert [e["status"] for e in index["runs"]] == ["done"] * 4
    for entry in index["runs"]:
        run = Run(out / entry["dir"])  # every run is an ordinary run directory
        assert run.config.task.label_noise == entry["params"]["label_noise"] and run.config.train.seed == entry["seed"]
        assert run.summary["steps"] == 40 and entry["budget"] == 40 and "S_gen" in entry

    # again with one more seed: the finished runs are kept, a run killed before its end resumes from its state
    stamp = {e["dir"]: (out / e["dir"] / "metrics.jsonl").stat().st_mtime_ns for e in index["runs"]}
    cut = index["runs"][0]["dir"]
    (out / cut / "summary.json").unlink()
    spec = SweepSpec("parity-blog", {"label_noise": [0.0]}, [2], TINY)
    index2 = sweep(spec, out, workers=1, progress=False, log=lambda s: None)
    assert len(index2["runs"]) == 6 and all(e["status"] == "done" for e in index2["runs"])
    assert index2["spec"]["grid"]["label_noise"] == [0.0, 0.2] and index2["spec"]["seeds"] == [0, 1, 2]
    assert all((out / d / "metrics.jsonl").stat().st_mtime_ns == t for d, t in stamp.items() if d != cut)
    assert (out / cut / "summary.json").exists()
    assert json.loads((out / cut / "summary.json").read_text())["steps"] == 40

    with pytest.raises(RunDirError, match="different sweep"):
        sweep(SweepSpec("parity-blog", {"label_noise": [0.0]}, [0], {**TINY, "steps": 50}), out, progress=False)


def test_a_sweep_grows_by_the_union_of_values_and_seeds():
    old = {"preset": "parity-blog", "overrides": {"steps": 10}, "grid": {"lr": [0.1, 0.2]}, "seeds": [0, 1],
           "seed_fields": ["seed"]}
    new = merged(SweepSpec("parity-blog", {"lr": [0.15, 0.1]}, [3], {"steps": 10}), old, ["seed"])
    assert new.grid == {"lr": [0.1, 0.15, 0.2]} and new.seeds == [0, 1, 3]
    assert merged(SweepSpec("parity-blog", {"wd": [0.1]}, [0], {"steps": 10}), old, ["seed"]) is None
    assert merged(SweepSpec("parity-blog", {"lr": [0.1]}, [0], {"steps": 20}), old, ["seed"]) is None
    assert merged(SweepSpec("default", {"lr": [0.1]}, [0], {"steps": 10}), old, ["seed"]) is None


def test_named_sweeps_are_valid():
    from training.sweeps.spec import check_all

    for spec in SWEEPS.values():
        runs = plan(spec, ["seed", "batch_seed"])
        check_all(runs)
        points = math.prod(len(v) for v in spec.grid.values())
        assert len(runs) == len(spec.seeds) * points * max(len(spec.variants), 1)
        assert len({r.name for r in runs}) == len(runs)


@pytest.mark.parametrize("args, words", [
    (["--grid", "bogus=1,2"], "unknown config field"),
    (["--grid", "lr"], "NAME=V1"),
    (["--sweep", "h9"], "unknown sweep"),
    (["--sweep", "accel-nope"], "unknown sweep"),
    (["--sweep", "accel", "--methods", "adamw,nope"], "unknown method(s) nope"),
    (["--sweep", "accel", "--methods", ","], "at least one method"),
    (["--grid", "lr=0.1", "--methods", "adamw"], "has no methods"),
    (["--sweep", "accel", "--grid", "wd=0,1"], "which the grid sweeps"),
    (["--preset", "parity-blog"], "nothing to sweep"),
    (["--grid", "lr=0.1,0.2", "--lr", "0.3"], "both swept and fixed"),
    (["--grid", "lr=0.1,fast"], "expected float"),
    (["--grid", "label_noise=0.1,0.9", "--preset", "parity-blog"], "label-noise"),
    (["--grid", "lr=0.1", "--seed-fields", "seed,nope"], "--seed-fields"),
    (["--grid", "frac=0.3,nan"], "finite"),
    (["--grid", "lr=1e400"], "finite"),
    (["--grid", "frac=0.3", "--grid", "frac=0.4"], "given twice"),
    (["--grid", "frac=0.3,1.5"], "--frac must be in (0, 1)"),
    (["--grid", "task=nope"], "nope"),
    (["--grid", "lr=0.1", "--steps", "-5"], "--steps must be positive"),
    (["--grid", "lr=0.1", "--seeds", "-1"], "--seeds"),
    (["--grid", "lr=0.1", "--seeds", str(2**64)], "out of range"),
    (["--grid", "lr=0.1", "--workers", "0"], "--workers"),
    (["--grid", "lr=0.1", "--ste", "50"], "unrecognized arguments"),  # no prefix matching
    (["--grid", "lr=0.1", "--backend", "dask"], "invalid choice"),
    (["--grid", "lr=0.1", "--address", "auto"], "--address is for --backend ray"),
    (["--grid", "lr=0.1", "--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster reachable"),
    (["--grid", "lr=0.1", "--backend", "ray", "--address", "nowhere"], "auto or HOST:PORT"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, words):
    from training.sweep import main

    out = tmp_path / "sw"
    try:
        code = main([*args, "--out", str(out), "--no-progress"])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], lines
    assert not out.exists()


def test_bad_input_on_the_command_line_answers_before_torch_is_imported(tmp_path):
    r = sweep_cli("--grid", "frac=0.3,1.5", "--out", str(tmp_path / "sw"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    code = ("import sys; from training.sweep import main; main(['--grid', 'frac=0.3,1.5', '--out', 'nowhere']);"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "False" and "--frac must be in (0, 1)" in r.stderr
    assert not (tmp_path / "nowhere").exists()


def test_refuses_to_write_into_a_directory_that_is_not_a_sweep(tmp_path):
    (tmp_path / "precious.txt").write_text("keep")
    r = sweep_cli("--preset", "parity-blog", "--grid", "lr=0.1", "--out", str(tmp_path))
    assert r.returncode == 2 and "not a sweep directory" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_ray_not_installed_is_one_line_exit_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    from training.sweep import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "sw"
    assert main(["--preset", "parity-blog", "--grid", "lr=0.1", *tiny_flags(), "--backend", "ray",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ray is not installed" in err[0] and "pip install -e .[ray]" in err[0]
    assert not out.exists()


# --- resuming, failures, draining: the local backend with one worker process ---------------------------------


def new_sweep_dir(out, spec, seed_fields=("seed", "batch_seed")):
    """A sweep directory holding only its index, as a sweep killed before its first run would leave it."""
    out.mkdir()
    (out / INDEX).write_text(json.dumps({"spec": spec_dict(spec, list(seed_fields)), "runs": []}))


def test_rerun_skips_finished_runs_and_resumes_unfinished_ones(tmp_path):
    from training.loop import train

    spec = SweepSpec("parity-blog", {"label_noise": [0.0]}, [0, 1, 2], TINY)
    out = tmp_path / "sw"
    new_sweep_dir(out, spec)
    finished, extended, fresh = plan(spec, ["seed", "batch_seed"])
    train(finished.config, out / finished.name, progress=False, log=lambda s: None)
    # `extended`: trained to 20 steps, then its config asks for 40 (what `--resume --steps 40` leaves). It has a
    # summary.json, and an analysis wrote under analyses/: it is still not done, and must resume, not restart.
    short = out / extended.name
    train(extended.config.replace(steps=20), short, progress=False, log=lambda s: None)
    cfg = json.loads((short / "config.json").read_text())
    cfg["train"]["steps"] = 40
    (short / "config.json").write_text(json.dumps(cfg))
    (short / "analyses").mkdir()
    (short / "analyses" / "x.json").write_text("{}")
    assert (short / "summary.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in (out / finished.name).rglob("*") if p.is_file() and p.name != ".lock"}
    first_ckpt = short / "ckpt" / "step_0.safetensors"
    first_ckpt_mtime, rows_before = first_ckpt.stat().st_mtime_ns, read_metrics(short / "metrics.jsonl")

    index = sweep(spec, out, workers=1, progress=False, log=lambda s: None)

    assert [e["status"] for e in index["runs"]] == ["done"] * 3 and not index["interrupted"]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the finished run was not touched
    rows = read_metrics(short / "metrics.jsonl")
    assert rows[: len(rows_before)] == rows_before and [r["step"] for r in rows] == list(range(0, 41, 10))
    assert first_ckpt.stat().st_mtime_ns == first_ckpt_mtime  # resumed from step 20, not retrained from 0
    assert json.loads((short / "summary.json").read_text())["steps"] == 40
    assert (short / "analyses" / "x.json").exists()
    assert Run(out / fresh.name).summary["steps"] == 40


@pytest.mark.slow  # two sweeps, each starting a worker process
def test_a_failed_run_does_not_stop_the_others_and_is_listed(tmp_path, capsys):
    from training.sweep import main

    out = tmp_path / "sw"
    spec = SweepSpec("parity-blog", {"label_noise": [0.0, 0.2]}, [0], TINY)
    new_sweep_dir(out, spec)
    victim = plan(spec, ["seed", "batch_seed"])[0]
    (out / victim.name).mkdir()
    lock = RunLock(out / victim.name).acquire()  # another process is writing this run
    args = ["--preset", "parity-blog", "--grid", "label_noise=0,0.2", "--seeds", "0", *tiny_flags(),
            "--out", str(out), "--workers", "1", "--no-progress"]
    try:
        assert main(args) == 1
    finally:
        lock.release()
    text = capsys.readouterr().out
    assert f"1 failed:\n  {victim.name}: RunDirError: " in text and "being written by another process" in text
    entries = {e["name"]: e for e in json.loads((out / INDEX).read_text())["runs"]}
    assert entries[victim.name]["status"] == "failed" and "another process" in entries[victim.name]["error"]
    assert entries["label_noise=0.2_seed=0"]["status"] == "done"
    assert main(args) == 0  # again, with the lock gone: only the failed run is trained
    assert Run(out / victim.name).summary["steps"] == 40


LONG = {**TINY, "steps": 10**7}  # cannot finish: every drain below interrupts it at a known point


def signal_when(path_fn, ready, signals=(signal.SIGINT,), pid=None):
    """In a thread: wait until `ready(path_fn())` holds, then send `signals` to `pid` (this process)."""

    def watch():
        for _ in range(6000):  # gives up after ~10 min rather than hanging the suite; asserts then fail
            try:
                if ready(path_fn()):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        for s in signals:
            os.kill(pid or os.getpid(), s)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def metrics_past(step):
    return lambda path: any(r["step"] > step for r in read_metrics(path))


def drain_and_check(tmp_path, backend, workers):
    """Ctrl-C (twice) while the first run trains: it saves its state, no queued run starts; the same command
    then resumes it from that state."""
    # two shapes: the n_layers=2 runs can never share the first runs' ensemble, so they wait in the queue
    spec = SweepSpec("parity-blog", {"n_layers": [1, 2]}, [0, 1, 2], LONG)
    out = tmp_path / "sw"
    first = plan(spec, ["seed", "batch_seed"])[0]
    metrics = out / first.name / "metrics.jsonl"
    t = signal_when(lambda: metrics, metrics_past(10), (signal.SIGINT, signal.SIGINT))
    index = sweep(spec, out, backend=backend, workers=workers, progress=False, log=lambda s: None)
    t.join()
    status = {e["name"]: e["status"] for e in index["runs"]}
    assert index["interrupted"] and status[first.name] == "interrupted", status
    started = [n for n in status if (out / n).exists()]
    assert first.name in started and all(status[n] == "interrupted" for n in started)
    assert all(s == "pending" for n, s in status.items() if n not in started)  # no queued run started
    if workers == 1:  # the first chunk (one ensemble of the n_layers=1 runs, or fewer) was the only one in flight
        assert not any(n.startswith("n_layers=2") for n in started), started
    assert not (out / STOP_FILE).exists()
    saved = Run(out / first.name)
    step = max(r["step"] for r in saved.metrics)
    assert (out / first.name / "state" / "state.safetensors").exists() and not (out / first.name / "summary.json").exists()
    ckpt0 = (out / first.name / "ckpt" / "step_0.safetensors").stat().st_mtime_ns

    t = signal_when(lambda: metrics, metrics_past(step + 10))
    index = sweep(spec, out, backend=backend, workers=workers, progress=False, log=lambda s: None)
    t.join()
    assert index["interrupted"]
    steps = [r["step"] for r in read_metrics(metrics)]
    assert steps == sorted(set(steps)) and steps[-1] > step + 10  # continued, no step twice
    assert (out / first.name / "ckpt" / "step_0.safetensors").stat().st_mtime_ns == ckpt0  # resumed, not restarted


@pytest.mark.slow  # two sweeps, each starting a worker process that imports torch
def test_ctrl_c_drains_the_local_backend_and_the_rerun_resumes(tmp_path):
    drain_and_check(tmp_path, "local", workers=1)


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_exits_130_with_state_saved(tmp_path):
    out = tmp_path / "sw"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "training.sweep", "--no-progress", "--preset", "parity-blog",
                             "--grid", "n_layers=1,2", "--seeds", "0", *tiny_flags(steps=10**7), "--out",
                             str(out), "--workers", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = out / "n_layers=1_seed=0" / "metrics.jsonl"  # two shapes: two chunks, the second one queued
    try:
        t = signal_when(lambda: metrics, metrics_past(10), (signal.SIGINT, signal.SIGINT), pid=-proc.pid)  # group
        stdout, stderr = proc.communicate(timeout=600)
        t.join()
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted; run the same command again to continue" in stdout and "Traceback" not in stderr
    status = {e["name"]: e["status"] for e in json.loads((out / INDEX).read_text())["runs"]}
    assert status == {"n_layers=1_seed=0": "interrupted", "n_layers=2_seed=0": "pending"}
    assert (out / "n_layers=1_seed=0" / "state" / "state.safetensors").exists()
    assert not (out / "n_layers=2_seed=0").exists()


# --- the Ray backend, on a local Ray instance --------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)  # the workers import this checkout's training package
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.mark.slow
def test_ray_backend_runs_the_sweep_and_drains(tmp_path, local_ray):
    from training.sweeps.executor import RayBackend

    spec = SweepSpec("parity-blog", {"label_noise": [0.0, 0.2]}, [0, 1], TINY)
    out = tmp_path / "ray"
    index = sweep(spec, out, backend=RayBackend(None, 1, None), progress=False, log=lambda s: None)
    assert [e["status"] for e in index["runs"]] == ["done"] * 4
    for e in index["runs"]:
        run = Run(out / e["dir"])
        assert run.summary["steps"] == 40 and run.config.task.label_noise == e["params"]["label_noise"]
    assert local_ray.is_initialized()  # a Ray instance the caller started is left running

    drain_and_check(tmp_path / "drain", RayBackend(None, 1, 1), workers=1)


@pytest.mark.slow
def test_a_sweeps_runs_on_either_backend_are_bit_for_bit_the_runs_alone(tmp_path, local_ray):
    """The same runs through the local backend, the Ray backend (one torch thread per worker, as here) and alone:
    the same bits, whatever chunks and ensembles the sweep made of them (tests/training/bits.py)."""
    from tests.training.bits import assert_same_bits
    from training.loop import train
    from training.sweeps.executor import RayBackend

    spec = SweepSpec("default", {"frac": [0.3, 0.5]}, [0, 1], {"p": 23, "d_model": 32, "n_heads": 4, "d_head": 8,
                                                             "d_mlp": 64, "lr": 0.01, "steps": 300,
                                                             "eval_every": 25, "device": "cpu"})
    local = sweep(spec, tmp_path / "local", backend="local", workers=1, threads=1, progress=False,
                  log=lambda s: None)
    ray = sweep(spec, tmp_path / "ray", backend=RayBackend(None, 1, None), progress=False, log=lambda s: None)
    assert [e["status"] for e in local["runs"] + ray["runs"]] == ["done"] * 8
    for e in local["runs"]:
        assert_same_bits(tmp_path / "local" / e["dir"], tmp_path / "ray" / e["dir"])
        assert Run(tmp_path / "ray" / e["dir"]).summary["steps"] == 300
    last = local["runs"][-1]["dir"]  # frac 0.5, seed 1: it trained beside seed 0 (or alone, as the plan chose)
    train(Run(tmp_path / "local" / last).config, tmp_path / "alone", progress=False)
    assert_same_bits(tmp_path / "alone", tmp_path / "ray" / last)
    numerics = json.loads((tmp_path / "ray" / last / "config.json").read_text())["numerics"]
    assert numerics["threads"] == 1 and numerics["path"] == "exact"


# --- the chunk executor, in this process ---------------------------------------------------------------------


def chunk_item(tmp_path, name, **over):
    from training.presets import get_preset

    cfg = get_preset("parity-blog").replace(**{**TINY, **over})
    return {"name": name, "config": cfg.to_dict(), "dir": str(tmp_path / name), "resume": False,
            "preset": "parity-blog"}


def test_a_chunk_reports_each_run_and_a_failing_run_does_not_stop_the_next(tmp_path):
    import torch

    from training.sweeps.executor import execute_chunk

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA for the failing run")
    handler = signal.getsignal(signal.SIGINT)
    res = execute_chunk([chunk_item(tmp_path, "bad", device="cuda"), chunk_item(tmp_path, "good")],
                        str(tmp_path / STOP_FILE))
    assert res[0]["status"] == "failed" and res[0]["error"].startswith("ConfigError: --device cuda")
    assert res[1]["status"] == "done" and res[1]["summary"]["steps"] == 40 and Run(tmp_path / "good").summary
    assert signal.getsignal(signal.SIGINT) is handler  # the executor's own handlers are gone again


def test_a_chunk_that_starts_after_a_drain_creates_nothing(tmp_path):
    from training.sweeps.executor import execute_chunk

    (tmp_path / STOP_FILE).write_text("drain\n")
    res = execute_chunk([chunk_item(tmp_path, "a"), chunk_item(tmp_path, "b")], str(tmp_path / STOP_FILE))
    assert res == [{"status": "not_started"}] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [STOP_FILE]


def test_sweep_chunks_are_shape_compatible_ensembles_that_keep_every_worker_busy():
    from training.ensemble import shape_key
    from training.sweeps.spec import plan_chunks

    spec = SweepSpec("parity-blog", {"n_layers": [1, 2]}, [0, 1, 2, 3], TINY)
    configs = [r.config for r in plan(spec, ["seed", "batch_seed"])]
    chunks = plan_chunks(configs, workers=2, threads=1)
    assert sorted(i for c in chunks for i in c) == list(range(len(configs)))
    assert all(len({shape_key(configs[i]) for i in c}) == 1 for c in chunks)
    assert all(len(c) <= 4 for c in chunks) and len(chunks) >= 2
