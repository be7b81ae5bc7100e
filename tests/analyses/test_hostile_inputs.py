"""The analyses and the report facing what the project did not write: an `analyses/` folder that is a link, a
checkpoint typed as integers or that is a FIFO, a sweep index that is not UTF-8, a report folder that belongs to
the user. One line and exit status 2, nothing written through a link or over a stranger's files, never a hang
(docs/reliability.md cites these tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from analyses import fourier, hypotheses, report
from analyses import sweep as analyses_sweep
from analyses.report.common import SectionDef, SectionSkipped
from tests.conftest import ROOT, tiny_config
from training.loop import train
from training.runs.reader import Run


@pytest.fixture(scope="module")
def tiny_master(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "run"
    train(tiny_config(steps=20, eval_every=10), path, progress=False)
    return path


@pytest.fixture
def tiny_run(tiny_master, tmp_path):
    import shutil

    return shutil.copytree(tiny_master, tmp_path / "run")


def tree(d) -> dict[str, bytes | None]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_analyses_folder_that_is_a_link_is_refused_before_any_work(tiny_run, tmp_path, capsys):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "fourier.json").write_text('{"mine": true}\n')
    (tiny_run / "analyses").symlink_to(mine)
    before = tree(mine)
    assert fourier.main([str(tiny_run), "--no-progress"]) == 2
    line = one_line(capsys)
    assert "symbolic link" in line and "analyses" in line
    assert tree(mine) == before


def test_a_checkpoint_of_integers_is_one_line_and_writes_nothing(tiny_run, capsys):
    run = Run(tiny_run)
    path = run.checkpoint_path(run.steps[-1])
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    save_file({k: v.to(torch.int32) for k, v in load_file(path).items()}, path, metadata=meta)
    assert fourier.main([str(tiny_run), "--no-progress"]) == 2
    line = one_line(capsys)
    assert str(path) in line and "int32" in line
    assert not (tiny_run / "analyses").exists()


@pytest.mark.parametrize("module, args", [("analyses.fourier", []), ("analyses.landscape", ["--steps", "last"])])
def test_a_checkpoint_that_is_a_fifo_is_one_line_not_a_hang(tiny_run, module, args):
    run = Run(tiny_run)
    path = run.checkpoint_path(run.steps[-1])
    path.unlink()
    os.mkfifo(path)
    r = subprocess.run([sys.executable, "-m", module, str(tiny_run), "--no-progress", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert str(path) in lines[0] and "not a regular file" in lines[0]
    assert not (tiny_run / "analyses").exists()


@pytest.mark.parametrize("main", [analyses_sweep.main, hypotheses.main])
def test_a_sweep_index_that_is_not_utf8_is_one_line(tmp_path, capsys, main):
    (tmp_path / "sweep.json").write_bytes(b'{"spec": "\xff\xfe"}')
    before = tree(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert "sweep.json" in one_line(capsys)
    assert tree(tmp_path) == before


# --- the report writes only into a folder of its own -------------------------------------------------------------


def _skipped(scale, data_path):
    raise SectionSkipped("not needed for this test")


@pytest.fixture
def quick_report(monkeypatch):
    """One section that is always "not run": the report itself is written at once, nothing is trained."""
    monkeypatch.setattr(report, "SECTIONS", [SectionDef("frac", "quick", [], [], _skipped, None, "1")])


def call_report(tmp_path, out) -> int:
    return report.main(["--scale", "smoke", "--root", str(tmp_path / "runs"), "--out", str(out)])


def test_the_report_refuses_a_folder_holding_the_users_own_files(tmp_path, capsys, quick_report):
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("<p>my homepage</p>\n")
    (out / "report.md").write_text("# my report\n")
    before = tree(out)
    assert call_report(tmp_path, out) == 2
    assert str(out) in one_line(capsys)
    assert tree(out) == before and not (tmp_path / "runs").exists()


def test_the_report_writes_into_a_new_or_empty_folder_and_again_into_its_own(tmp_path, capsys, quick_report):
    new, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for out in (new, empty, new):  # the third call: `new` is the report's own by now
        assert call_report(tmp_path, out) == 0, capsys.readouterr().err
        assert json.loads((out / "report.json").read_text())["sections"][0]["verdict"] == "not run"
