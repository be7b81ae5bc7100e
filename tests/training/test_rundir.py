"""Run-directory safety (issue 9): nothing already written is lost or corrupted, and every bad run directory,
path or state file is one line and exit status 2 (divergence: 3). docs/reliability.md cites these tests."""

import errno
import fcntl
import json
import os
import pathlib
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import training.runs.format as run_format
import training.runs.writer as run_writer
import training.safeio as safeio
from tests.conftest import tiny_config
from training.cli import EXIT_DIVERGED
from training.loop import train
from training.errors import RunDirError
from training.runs.format import read_metrics, run_finished, run_marker
from training.runs.reader import Run
from training.runs.writer import RunLock
from training.run import main

TINY = ["--p", "11", "--frac", "0.5", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32",
        "--steps", "40", "--eval-every", "10", "--device", "cpu"]


def call_main(*argv: str) -> int:
    try:
        return main(["--no-progress", *argv])
    except SystemExit as e:
        return e.code


def files(d) -> dict[str, bytes]:
    """Every file under `d` (the lock excepted) and its bytes: 'nothing changed' means this is equal."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished TINY run (40 steps); tests work on copies of it."""
    d = tmp_path_factory.mktemp("trained") / "run"
    assert call_main(*TINY, "--out", str(d)) == 0
    return d


@pytest.fixture
def run_copy(trained, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(trained, d)
    return d


# --- what counts as a run directory; --overwrite ---------------------------------------------------------------


def test_overwrite_refuses_a_folder_that_only_has_a_config_json(tmp_path, capsys):
    """The issue's repro: a folder with a foreign config.json, a file and a subfolder is left exactly as it was."""
    d = tmp_path / "D"
    (d / "src").mkdir(parents=True)
    (d / "important.txt").write_text("x\n")
    (d / "config.json").write_text('{"app": 1}\n')
    before = files(d)
    assert call_main(*TINY, "--out", str(d), "--overwrite") == 2
    assert "not a run directory written by grokscope" in one_line(capsys)
    assert files(d) == before and (d / "src").is_dir() and sorted(os.listdir(tmp_path)) == ["D"]


def test_a_new_run_carries_the_marker_and_its_state_the_run_id(run_copy):
    raw = json.loads((run_copy / "config.json").read_text())
    assert raw["format"] == "grokscope-run/1" and run_marker(run_copy) == raw["run_id"] == Run(run_copy).run_id
    assert run_format.metadata(run_copy / "state" / "state.safetensors")["run_id"] == raw["run_id"]


def test_overwrite_renames_the_old_run_aside_and_never_follows_a_symlink(run_copy, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (run_copy / "link_to_dir").symlink_to(outside, target_is_directory=True)
    (run_copy / "ckpt" / "link_to_file").symlink_to(outside / "keep.txt")
    old_id = run_marker(run_copy)
    assert call_main(*TINY, "--out", str(run_copy), "--overwrite", "--lr", "1e-2") == 0
    assert (outside / "keep.txt").read_text() == "keep"
    assert run_marker(run_copy) not in (None, old_id) and not (run_copy / "link_to_dir").exists()
    assert sorted(os.listdir(tmp_path)) == ["outside", "run"]  # the renamed-aside old run is gone too


@pytest.mark.parametrize("cwd, out", [(".", "."), ("ckpt", "..")])
def test_overwrite_refuses_the_folder_it_runs_in(run_copy, capsys, monkeypatch, cwd, out):
    monkeypatch.chdir(run_copy / cwd)
    before = files(run_copy)
    assert call_main(*TINY, "--out", out, "--overwrite") == 2
    assert "is the current folder" in one_line(capsys)
    assert files(run_copy) == before


def test_a_failed_delete_leaves_a_whole_new_run_dir_never_a_half_deleted_one(run_copy, monkeypatch):
    def half_rmtree(path, *a, **k):
        os.unlink(os.path.join(path, "metrics.jsonl"))
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(run_writer.shutil, "rmtree", half_rmtree)
    with pytest.raises(RunDirError, match="could not be deleted"):
        run_writer.create_run_dir(run_copy, overwrite=True)
    assert os.listdir(run_copy) == [".lock"]  # the new, empty run dir; the half-deleted old one is aside, hidden


def test_a_run_without_the_marker_still_opens_resumes_and_is_never_overwritten(run_copy, capsys):
    """A run written before the marker: readable, resumable (state untied), but --overwrite refuses it."""
    raw = json.loads((run_copy / "config.json").read_text())
    del raw["format"], raw["run_id"]
    (run_copy / "config.json").write_text(json.dumps(raw))
    state = run_copy / "state" / "state.safetensors"
    meta = {k: v for k, v in run_format.metadata(state).items() if k != "run_id"}
    save_file(load_file(state), state, metadata=meta)
    assert Run(run_copy).run_id is None and Run(run_copy).metrics[-1]["step"] == 40
    assert call_main(*TINY, "--out", str(run_copy), "--overwrite") == 2
    assert "refusing to overwrite" in one_line(capsys)
    assert call_main("--resume", str(run_copy), "--steps", "50") == 0
    assert Run(run_copy).summary["steps"] == 50


# --- metrics.jsonl ---------------------------------------------------------------------------------------------


def test_a_torn_last_metrics_line_is_dropped_and_resume_goes_on(run_copy):
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 50, "train_lo')  # a kill in the middle of an append
    assert [r["step"] for r in Run(run_copy).metrics] == [0, 10, 20, 30, 40]
    assert call_main("--resume", str(run_copy), "--steps", "60") == 0
    assert [r["step"] for r in Run(run_copy).metrics] == [0, 10, 20, 30, 40, 50, 60]


@pytest.mark.parametrize("line_no, text, words", [
    (3, '{"step": 20, "train_loss": 1.0, "tes', "not JSON"),
    (3, '{"foo": 1}', "not a metrics row"),
    (4, None, "does not follow step 20"),  # line 3 repeated: steps must increase
    (2, '{"step": 10, "train_loss": "x", "test_loss": 1, "train_acc": 0, "test_acc": 0}', "not a number"),
])
def test_a_bad_metrics_line_is_refused_with_file_and_line_and_nothing_is_rewritten(run_copy, capsys, line_no, text,
                                                                                  words):
    lines = (run_copy / "metrics.jsonl").read_text().splitlines(keepends=True)
    if text is None:
        lines.insert(line_no - 1, lines[line_no - 2])
    else:
        lines[line_no - 1] = text + "\n"
    (run_copy / "metrics.jsonl").write_text("".join(lines))
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), "--steps", "60") == 2
    err = one_line(capsys)
    assert f"metrics.jsonl:{line_no}:" in err and words in err
    assert files(run_copy) == before
    with pytest.raises(RunDirError, match=f"metrics.jsonl:{line_no}:"):
        Run(run_copy).metrics


# --- resume checks ---------------------------------------------------------------------------------------------


def test_resume_refuses_an_edited_split_hash(run_copy, capsys):
    split = json.loads((run_copy / "split.json").read_text())
    split["sha256"] = "0" * 64
    (run_copy / "split.json").write_text(json.dumps(split))
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), "--steps", "60") == 2
    assert "split.json: sha256 does not match" in one_line(capsys)
    assert files(run_copy) == before


def test_resume_refuses_a_state_copied_from_another_run_with_the_same_shapes(run_copy, tmp_path, capsys):
    other = tmp_path / "other"
    assert call_main(*TINY, "--seed", "1", "--out", str(other)) == 0
    shutil.copy(other / "state" / "state.safetensors", run_copy / "state" / "state.safetensors")
    capsys.readouterr()
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), "--steps", "60") == 2
    assert "written by another run" in one_line(capsys)
    assert files(run_copy) == before


def _reshaped_state(run_dir, tmp_path):
    """A state of a wider model, relabelled with this run's id: only the shape check can catch it."""
    other = tmp_path / "wide"
    train(tiny_config(steps=10, d_mlp=48), other, progress=False, log=lambda s: None)
    src = other / "state" / "state.safetensors"
    meta = {**run_format.metadata(src), "run_id": run_marker(run_dir)}
    save_file(load_file(src), run_dir / "state" / "state.safetensors", metadata=meta)


class Payload:  # unpickling this would create the file named by MARKER
    def __reduce__(self):
        return open, (os.environ["GROKSCOPE_TEST_MARKER"], "w")


@pytest.mark.parametrize("kind", ["truncated", "empty", "random", "pickled", "wrong-shaped", "huge-header"])
def test_a_broken_state_file_is_one_line_and_nothing_changes(run_copy, tmp_path, capsys, monkeypatch, kind):
    path = run_copy / "state" / "state.safetensors"
    marker = tmp_path / "unpickled"
    monkeypatch.setenv("GROKSCOPE_TEST_MARKER", str(marker))
    raw = path.read_bytes()
    content = {"truncated": raw[: len(raw) // 2], "empty": b"", "random": os.urandom(4096),
               "pickled": pickle.dumps(Payload()), "huge-header": (2**62).to_bytes(8, "little") + b"{}"}
    if kind == "wrong-shaped":
        _reshaped_state(run_copy, tmp_path)
    else:
        path.write_bytes(content[kind])
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), "--steps", "60") == 2
    err = one_line(capsys)
    assert "state.safetensors" in err and (kind != "wrong-shaped" or "does not fit" in err)
    assert files(run_copy) == before and not marker.exists()


def test_resume_never_shrinks_a_run_and_config_json_is_untouched(run_copy, capsys):
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), "--steps", "20") == 2
    assert "--steps 20 is below step 40" in one_line(capsys)
    assert files(run_copy) == before


@pytest.mark.parametrize("extra, words", [
    (["--preset", "nanda2023"], "--preset"),
    (["--preset", "default"], "--preset"),  # even the default preset, named explicitly
    (["--out", "ELSEWHERE"], "--out"),
    (["--overwrite"], "--overwrite"),
    (["--d-mlp", "64"], "d_mlp"),
    (["--lr", "1"], "lr"),
])
def test_resume_refuses_flags_it_would_otherwise_ignore(run_copy, tmp_path, capsys, extra, words):
    extra = [str(tmp_path / "elsewhere") if x == "ELSEWHERE" else x for x in extra]
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), *extra) == 2
    err = one_line(capsys)
    assert words in err and "--resume keeps the run's config" in err
    assert files(run_copy) == before and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("text, words", [
    ('{"task": {', "unreadable config"),
    ("[1, 2]", "expected a JSON object"),
    (None, "task.p must be an integer"),  # the real config with "p": "abc"
    ('{"task": [1]}', "'task' must be a JSON object"),
    ('{"format": "grokscope-run/9"}', "format"),
])
def test_a_malformed_config_json_is_one_line(run_copy, capsys, text, words):
    if text is None:
        raw = json.loads((run_copy / "config.json").read_text())
        raw["task"]["p"] = "abc"
        text = json.dumps(raw)
    (run_copy / "config.json").write_text(text)
    before = files(run_copy)
    assert call_main("--resume", str(run_copy)) == 2
    assert words in one_line(capsys)
    assert files(run_copy) == before
    with pytest.raises(RunDirError, match="config.json"):
        Run(run_copy)


# --- paths, full disks, temporaries ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "proc", "read-only", "too-long", "a-symlink"])
def test_an_unusable_out_path_is_one_line_and_creates_nothing(tmp_path, capsys, monkeypatch, where):
    (tmp_path / "f").write_text("a file")
    if where == "read-only":
        (tmp_path / "ro").mkdir(mode=0o555)
        if os.geteuid() == 0:  # root writes into read-only folders: refuse the way the kernel would for others
            def mkdir(self, *a, **k):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))

            monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    if where == "a-symlink":
        (tmp_path / "d").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "d", target_is_directory=True)
    out = {"a-file": tmp_path / "f", "under-a-file": tmp_path / "f" / "run", "proc": "/proc/grokscope-test/run",
           "read-only": tmp_path / "ro" / "new" / "run", "too-long": tmp_path / "new" / ("x" * 300),
           "a-symlink": tmp_path / "link"}[where]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert call_main(*TINY, "--out", str(out)) == 2
    assert str(out) in one_line(capsys)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and (tmp_path / "f").read_text() == "a file"


class FullDisk:
    """`open` for training.runs.format that runs out of space halfway through the first write of a matching file."""

    def __init__(self, match: str, mode: str):
        self.match, self.mode, self.hit = match, mode, None

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if self.hit is None and self.match in str(path) and self.mode in mode:
            self.hit, write = path, f.write

            def full(data):
                write(data[: len(data) // 2])
                f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            f.write = full
        return f


@pytest.mark.parametrize("match, mode", [("step_20.safetensors", "w"), ("state.safetensors", "w"),
                                         ("metrics.jsonl", "a"), ("summary.json", "w"), ("curves.png", "w")])
def test_a_full_disk_is_one_line_leaves_no_temporaries_and_the_run_resumes_exactly(trained, tmp_path, capsys,
                                                                                   monkeypatch, match, mode):
    out = tmp_path / "run"
    disk = FullDisk(match, mode)
    monkeypatch.setattr(safeio, "open", disk, raising=False)
    assert call_main(*TINY, "--out", str(out)) == 2
    err = one_line(capsys)
    assert disk.hit is not None and "No space left on device" in err and match in err
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    monkeypatch.undo()
    assert call_main("--resume", str(out)) == 0
    assert without_time(Run(out).metrics) == without_time(Run(trained).metrics)
    a, b = Run(out).weights(40), Run(trained).weights(40)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stale_temporaries_of_a_killed_writer_are_removed_when_the_run_is_next_opened(run_copy):
    stale = [run_copy / ".metrics.jsonl.tmp4242", run_copy / "ckpt" / ".step_50.safetensors.tmp4242",
             run_copy / "state" / ".state.safetensors.tmp4242"]
    keep = run_copy / "analyses" / ".fourier.json.tmp4242"  # an analysis may be writing while the run trains
    keep.parent.mkdir()
    for p in [*stale, keep]:
        p.write_bytes(b"half")
    assert call_main("--resume", str(run_copy), "--steps", "50") == 0
    assert not any(p.exists() for p in stale) and keep.exists()


# --- device, lock ----------------------------------------------------------------------------------------------


def test_a_file_where_the_run_keeps_its_state_is_one_line(run_copy, capsys):
    shutil.rmtree(run_copy / "state")
    (run_copy / "state").write_text("not a folder")
    before = files(run_copy)
    assert call_main("--resume", str(run_copy), "--steps", "50") == 2
    assert "state: not a directory" in one_line(capsys)
    assert files(run_copy) == before


def test_device_cuda_without_cuda_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert call_main(*TINY[:-2], "--device", "cuda", "--out", str(tmp_path / "run")) == 2
    assert "no CUDA device" in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_second_writer_is_refused_naming_the_holders_pid(run_copy, capsys):
    lock = RunLock(run_copy).acquire()
    try:
        before = files(run_copy)
        assert call_main("--resume", str(run_copy), "--steps", "60") == 2
        assert f"being written by another process (pid {os.getpid()})" in one_line(capsys)
        assert files(run_copy) == before
    finally:
        lock.release()


def test_a_lock_holder_that_has_not_written_its_pid_yet_is_never_shown_as_pid_question_mark(run_copy):
    (run_copy / ".lock").write_text("")
    fd = os.open(run_copy / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the moment between another process's flock and its pid write
    try:
        with pytest.raises(RunDirError) as e:
            RunLock(run_copy).acquire()
        assert str(e.value).endswith("is being written by another process")
    finally:
        os.close(fd)


# --- divergence ------------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_saves_and_exits_3(tmp_path, capsys):
    out = tmp_path / "run"
    # SGD at lr 100 with momentum blows the weights up: the loss is NaN at step 2, every time (deterministic)
    diverging = ["--optimizer", "sgd", "--lr", "100", "--momentum", "0.9"]
    assert call_main(*TINY, *diverging, "--out", str(out)) == EXIT_DIVERGED
    assert "diverged at step 2" in one_line(capsys)
    run = Run(out)
    summary = run.summary
    assert summary["diverged_at"] == 2 and summary["steps"] == 2 and summary["final"]["train_loss"] is None
    assert run_finished(out) and run.metrics[-1]["step"] == 2 and run.steps[-1] == 2
    assert json.loads(run_format.metadata(out / "state" / "state.safetensors")["state"])["step"] == 2
    assert (out / "curves.png").stat().st_size > 0


# --- the Python API: RunDirError naming the file, nothing else ---------------------------------------------------


def test_run_api_raises_run_dir_error_naming_the_file(run_copy, tmp_path):
    run = Run(run_copy)
    with pytest.raises(RunDirError, match="step_99999.safetensors"):
        run.checkpoint_metrics(99999)
    with pytest.raises(RunDirError, match="step_99999.safetensors"):
        run.weights(99999)
    huge = run.checkpoint_path(20)
    huge.write_bytes((2**62).to_bytes(8, "little") + b'{"__metadata__": {}}')
    for call in (run.checkpoint_metrics, run.weights, run.model):
        with pytest.raises(RunDirError, match="step_20.safetensors"):
            call(20)
    other = tmp_path / "wide"
    train(tiny_config(steps=10, d_mlp=48), other, progress=False, log=lambda s: None)
    shutil.copy(other / "ckpt" / "step_10.safetensors", run.checkpoint_path(10))
    with pytest.raises(RunDirError, match="step_10.safetensors: does not fit"):
        run.model(10)
    (run_copy / "summary.json").write_text("{garbage")
    with pytest.raises(RunDirError, match="summary.json"):
        run.summary
    for garbage in ("{garbage", "[1, 2]", '{"sha256": "0"}'):
        (run_copy / "split.json").write_text(garbage)
        with pytest.raises(RunDirError, match="split.json"):
            Run(run_copy).data


def test_read_metrics_of_a_missing_file_is_empty(tmp_path):
    assert read_metrics(tmp_path / "metrics.jsonl") == []
