"""`python -m training.run` as a user runs it: bad input, resume after SIGKILL, Ctrl-C, one writer at a time."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, run_cli
from training.run import main

TINY = ["--p", "11", "--frac", "0.5", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32",
        "--steps", "40", "--eval-every", "10", "--device", "cpu"]


@pytest.mark.parametrize("args, words", [
    (["--task", "x**y"], "unknown task"),
    (["--bogus", "1"], "unrecognized arguments"),
    (["--task", "x/y", "--p", "12"], "prime"),
    (["--frac", "1.5"], "--frac"),
    (["--frac", "0"], "--frac"),
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--preset", "nope"], "unknown preset"),
    (["--lr", "fast"], "expected float"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert call_main(*TINY, "--out", str(out), *args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert not out.exists()


def call_main(*argv: str) -> int:
    """The CLI in-process (argparse errors exit through SystemExit)."""
    try:
        return main(["--no-progress", *argv])
    except SystemExit as e:
        return e.code


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    r = run_cli(*TINY, "--out", str(tmp_path / "run"), "--task", "x**y")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown task" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_missing_resume_directory(tmp_path, capsys):
    assert call_main("--resume", str(tmp_path / "nothing")) == 2
    err = capsys.readouterr().err
    assert "no run directory" in err and len(err.strip().splitlines()) == 1


def test_existing_output_is_never_clobbered(tmp_path, capsys):
    out = tmp_path / "run"
    assert call_main(*TINY, "--out", str(out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert call_main(*TINY, "--out", str(out), "--lr", "1e-2") == 2
    assert "already exists" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert call_main(*TINY, "--out", str(other), "--overwrite") == 2
    assert (other / "precious.txt").read_text() == "keep me"
    assert call_main(*TINY, "--out", str(out), "--overwrite", "--lr", "1e-2") == 0
    assert json.loads((out / "config.json").read_text())["optim"]["lr"] == 1e-2


def test_resume_may_extend_steps_but_not_change_the_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert call_main(*TINY, "--out", str(out)) == 0
    assert call_main("--resume", str(out), "--lr", "1") == 2
    assert "cannot change lr" in capsys.readouterr().err
    assert call_main("--resume", str(out), "--steps", "60") == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 60
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(range(0, 61, 10))


def test_success_prints_summary_and_paths(tmp_path, capsys):
    assert call_main(*TINY, "--out", str(tmp_path / "run")) == 0
    stdout = capsys.readouterr().out
    assert "S_mem" in stdout and "S_gen" in stdout and "curves.png" in stdout


def _metrics_without_time(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _start(args, out, env=()):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **dict(env)}
    return subprocess.Popen([sys.executable, "-m", "training.run", "--no-progress", *args, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


RESUMABLE = ["--p", "23", "--frac", "0.5", "--d-model", "32", "--n-heads", "4", "--d-head", "8", "--d-mlp", "64",
             "--steps", "300", "--eval-every", "10", "--device", "cpu", "--lr", "3e-3"]
MINIBATCH = ["--batch-size", "64", "--dropout", "0.1"]
KILL_AT = 150  # memorised by step 140, so the run is mid-transition


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """Uninterrupted runs to compare against, one per batch mode, made on first use."""
    made = {}

    def get(extra):
        key = tuple(extra)
        if key not in made:
            made[key] = tmp_path_factory.mktemp("ref") / "run"
            r = run_cli(*RESUMABLE, *extra, "--out", str(made[key]))
            assert r.returncode == 0, r.stderr
        return made[key]

    return get


def _state_step(run_dir):
    from training.runs.format import metadata

    path = run_dir / "state" / "state.safetensors"
    return json.loads(metadata(path)["state"])["step"] if path.exists() else None


@pytest.mark.slow
@pytest.mark.parametrize("extra, during",
                         [([], ""), (MINIBATCH, ""), ([], "metrics"), (MINIBATCH, "ckpt"), ([], "state")],
                         ids=["full-batch", "minibatch-dropout", "full-batch-mid-metrics-append",
                              "minibatch-dropout-mid-checkpoint-write", "full-batch-mid-state-write"])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, reference_runs, extra, during):
    """The loop SIGKILLs itself at step 150 (GROKSCOPE_KILL_AT_STEP), after that step's writes or in the middle of
    one (GROKSCOPE_KILL_DURING); --resume then ends bit-identical to a run never killed. No sleeps, no timing."""
    ref, cut = reference_runs(extra), tmp_path / "cut"
    proc = _start(RESUMABLE + extra, cut, {"GROKSCOPE_KILL_AT_STEP": str(KILL_AT), "GROKSCOPE_KILL_DURING": during})
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, stderr
    assert not (cut / "summary.json").exists()
    temps = [p for p in cut.rglob(".*.tmp*")]
    if during == "":
        assert _state_step(cut) == KILL_AT and _metrics_without_time(cut / "metrics.jsonl")[-1]["step"] == KILL_AT
    elif during == "metrics":  # half a row, no newline: the torn tail that resume drops
        assert not (cut / "metrics.jsonl").read_text().endswith("\n") and _state_step(cut) in (None, *range(KILL_AT))
    else:  # the temporary was written, the rename never happened
        assert [p.parent.name for p in temps] == ["ckpt" if during == "ckpt" else "state"]
        assert during != "state" or _state_step(cut) in (None, *range(KILL_AT))

    r = run_cli("--resume", str(cut))
    assert r.returncode == 0, r.stderr
    assert not list(cut.rglob(".*.tmp*"))  # stale temporaries removed when the run was opened again
    assert _metrics_without_time(cut / "metrics.jsonl") == _metrics_without_time(ref / "metrics.jsonl")
    a, b = load_file(ref / "ckpt" / "step_300.safetensors"), load_file(cut / "ckpt" / "step_300.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert sorted(os.listdir(ref / "ckpt")) == sorted(os.listdir(cut / "ckpt"))


def _wait_for_metrics_step(out, proc, step):
    """Until metrics.jsonl has a row at `step` or later; the run is far too long to finish first."""
    hang_guard = time.time() + 900  # not a speed check: only so that a hung process cannot hang the suite
    while time.time() < hang_guard:
        assert proc.poll() is None, proc.communicate()
        rows = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        if any(line.endswith("}") and json.loads(line)["step"] >= step for line in rows):
            return
        time.sleep(0.05)
    raise AssertionError(f"no metrics row at step {step} after 15 minutes: the run hangs")


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_cleanly_and_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "run"
    long_run = [*RESUMABLE, "--steps", "1000000"]  # the later --steps wins; a million steps: never done first
    proc = _start(long_run, out)
    try:
        _wait_for_metrics_step(out, proc, 20)
        r = run_cli("--resume", str(out))  # the first process still holds the run
        assert r.returncode == 2 and f"another process (pid {proc.pid})" in r.stderr
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in stderr and "interrupted at step" in stdout
    reached = _state_step(out)
    steps = (reached // 10 + 2) * 10
    r = run_cli("--resume", str(out), "--steps", str(steps))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == steps
    assert [r["step"] for r in _metrics_without_time(out / "metrics.jsonl")] == list(range(0, steps + 1, 10))
