"""Run directories holding what the project did not write: symbolic links, FIFOs, devices, resume counters that
make no sense, strangers' folders among an ensemble's members, paths that are not UTF-8. Nothing is written
through a link, nothing is deleted before every check has passed, nothing blocks, and each case is one line and
exit status 2 (docs/reliability.md cites these tests)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.conftest import ROOT, tiny_config
from tests.training.test_rundir import TINY, call_main, files, one_line, run_copy, trained  # noqa: F401  (fixtures)
from training.loop import train
from training.errors import RunDirError
from training.runs.reader import Run


def victim(tmp_path):
    """A user's file that a link in a run directory points to."""
    path = tmp_path / "precious.txt"
    path.write_bytes(b"the user's own bytes\n" * 4)
    return path


# --- links ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["resume", "resume-bad-split", "overwrite"])
def test_a_symlinked_lock_is_refused_and_what_it_points_to_is_untouched(run_copy, tmp_path, capsys, how):
    target = victim(tmp_path)
    before_target, before = target.read_bytes(), files(run_copy)
    (run_copy / ".lock").unlink()
    (run_copy / ".lock").symlink_to(target)
    if how == "resume-bad-split":  # refused anyway (exit 2): the lock must not have been written first
        split = json.loads((run_copy / "split.json").read_text())
        (run_copy / "split.json").write_text(json.dumps({**split, "sha256": "0" * 64}))
        before = files(run_copy)
    argv = ["--resume", str(run_copy)] if how.startswith("resume") else [*TINY, "--out", str(run_copy), "--overwrite"]
    assert call_main(*argv) == 2
    assert "symbolic link" in one_line(capsys)
    assert target.read_bytes() == before_target and files(run_copy) == before
    assert (run_copy / ".lock").is_symlink()


@pytest.mark.parametrize("part", ["ckpt", "state", "metrics.jsonl", "summary.json"])
def test_a_run_whose_parts_are_links_is_refused_and_nothing_is_written_through_them(run_copy, tmp_path, capsys,
                                                                                   part):
    """`ckpt/` linked to another run's: --resume would write this run's checkpoints into the other run."""
    other = shutil.copytree(run_copy, tmp_path / "other")
    shutil.rmtree(run_copy / part) if (run_copy / part).is_dir() else (run_copy / part).unlink()
    (run_copy / part).symlink_to(other / part)
    before_other = files(other)
    assert call_main("--resume", str(run_copy), "--steps", "60") == 2
    line = one_line(capsys)
    assert "symbolic link" in line and part in line
    assert files(other) == before_other
    with pytest.raises(RunDirError, match="symbolic link"):  # training.loop.train from Python: the same refusal
        train(Run(run_copy).config.replace(steps=60), run_copy, resume=True, progress=False)
    assert files(other) == before_other


@pytest.mark.parametrize("stranger", ["folder", "file"])
def test_seeds_overwrite_checks_every_member_before_replacing_any(trained, tmp_path, capsys, stranger):
    out = tmp_path / "E"
    shutil.copytree(trained, out / "seed=0")
    if stranger == "folder":
        (out / "seed=1").mkdir()
        (out / "seed=1" / "notes.txt").write_text("mine\n")
    else:
        (out / "seed=1").write_text("mine\n")
    before = files(out)
    assert call_main(*TINY, "--seeds", "0-1", "--out", str(out), "--overwrite") == 2
    assert "seed=1" in one_line(capsys)
    assert files(out) == before and sorted(os.listdir(out)) == ["seed=0", "seed=1"]


# --- resume state --------------------------------------------------------------------------------------------


def rewrite_state(run_dir, **changes):
    path = run_dir / "state" / "state.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    state = {**json.loads(meta["state"]), **changes}
    save_file(load_file(path), path, metadata={**meta, "state": json.dumps(state)})


@pytest.mark.parametrize("changes", [{"step": -5}, {"elapsed": -1.0}, {"policy": {"count": 3}},
                                     {"policy": {"count": -1, "bytes": 0, "last": None}}])
def test_resume_counters_that_make_no_sense_are_refused_before_anything_is_touched(run_copy, capsys, changes):
    """A state claiming step -5 made --resume delete every checkpoint and empty metrics.jsonl, then crash."""
    rewrite_state(run_copy, **changes)
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), "--steps", "60") == 2
    assert "state.safetensors" in one_line(capsys)
    assert files(run_copy) == before
    with pytest.raises(RunDirError, match="state.safetensors"):
        train(Run(run_copy).config.replace(steps=60), run_copy, resume=True, progress=False)
    assert files(run_copy) == before


# --- paths and files that are not what they seem ---------------------------------------------------------------


def test_more_seeds_than_fit_in_memory_as_one_ensemble_are_refused(tmp_path, capsys, monkeypatch):
    from training.memory import estimate
    from training.run import config_from_args, make_parser
    from training.registry import task_shape

    cfg, _ = config_from_args(make_parser().parse_args(TINY))
    monkeypatch.setenv("GROKSCOPE_MEMORY_LIMIT", str(int(3.5 * sum(estimate(cfg, task_shape(cfg.task)).values()))))
    assert call_main(*TINY, "--seeds", "0-3", "--out", str(tmp_path / "E")) == 2
    assert "--seeds: 4 members" in one_line(capsys) and os.listdir(tmp_path) == []
    assert call_main(*TINY, "--seeds", "0-2", "--out", str(tmp_path / "E")) == 0  # where it must not bind


def test_an_out_path_that_is_not_utf8_is_refused_before_anything_is_created(tmp_path, capsys):
    """It used to train, then fail with a matplotlib TypeError drawing curves.png."""
    out = tmp_path / os.fsdecode(b"run-\xff")
    assert call_main(*TINY, "--out", str(out)) == 2
    assert "UTF-8" in one_line(capsys)
    assert os.listdir(tmp_path) == []


READ = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))  # /dev/zero read whole: MemoryError, not swap
from training.errors import RunDirError
from training.runs.reader import Run
run = Run(sys.argv[1])
try:
    {expr}
except RunDirError as e:
    print("RunDirError:", e)
"""


@pytest.mark.parametrize("part, make, expr", [
    ("metrics.jsonl", "dev-zero", "run.metrics"),
    ("metrics.jsonl", "fifo", "run.metrics"),
    ("summary.json", "fifo", "run.summary"),
    ("split.json", "fifo", "run.data"),
    ("ckpt/step_40.safetensors", "fifo", "run.weights(40)"),
    ("ckpt/step_40.safetensors", "dev-zero", "run.weights(40)"),
    ("ckpt/step_40.safetensors", "fifo", "run.checkpoint_metrics(40)"),
])
def test_run_files_that_are_not_regular_files_are_run_dir_errors_never_a_hang(run_copy, part, make, expr):
    path = run_copy / part
    path.unlink()
    os.mkfifo(path) if make == "fifo" else path.symlink_to("/dev/zero")
    r = subprocess.run([sys.executable, "-c", READ.format(expr=expr), str(run_copy)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stdout.startswith("RunDirError:") and part in r.stdout and "not a regular file" in r.stdout, r.stdout


def test_a_new_run_is_refused_when_its_folder_holds_a_planted_link(tmp_path):
    """A folder that is empty but for a link where metrics.jsonl goes: appending would write through it."""
    target = victim(tmp_path)
    before = target.read_bytes()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").symlink_to(target)
    with pytest.raises(RunDirError, match="symbolic link"):
        train(tiny_config(steps=10), tmp_path / "run", progress=False)
    assert target.read_bytes() == before
