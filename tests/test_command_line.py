"""Every command's promises on bad input: one line on stderr, exit 2, nothing created; `--help` and bad flags
answered before torch is imported; prefix matching off; Ctrl-C during start-up exits 130 without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

COMMANDS = ["training.run", "analyses.fourier", "analyses.cosets", "analyses.sparsity", "analyses.landscape",
            "analyses.reduced_landscape", "analyses.report", "analyses.sequence", "analyses.explore",
            "training.import_tl"]

# One bad input per command that only flag parsing and config validation can see.
BAD = {
    "training.run": ["--lr", "nan"],
    "analyses.fourier": ["{run}", "--threshold", "inf"],
    "analyses.cosets": ["{run}", "--alpha", "nan"],
    "analyses.sparsity": ["{run}", "--n-random", "1e400"],
    "analyses.landscape": ["{run}", "--group", "["],
    "analyses.reduced_landscape": ["--preset", "default", "--set", "p=100000"],
    "analyses.report": ["--scale", "smoke", "--only", "nosuch"],
    "analyses.sequence": ["{run}", "--threshold", "2"],
    "analyses.explore": ["{run}", "--out", "{run}"],
    "training.import_tl": ["{run}/nosuch.pth", "--out", "{run}/imported"],
}

# Runs the command in a fresh interpreter and reports which heavy modules it imported (sys.modules, not time).
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "transformer_lens", "matplotlib", "training.loop") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.__stdout__)
"""


def probe(command: str, *args: str, cwd=ROOT) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", PROBE, command, *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_no_torch(command):
    out, err = probe(command, "--help")
    assert out == {"code": 0, "heavy": []}, err


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_one_line_exit_2_without_importing_torch(command, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    out, err = probe(command, *[a.format(run=run) for a in BAD[command]], cwd=tmp_path)
    assert out == {"code": 2, "heavy": []}, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "run"]  # nothing created


@pytest.mark.parametrize("command", COMMANDS)
def test_prefixes_of_flags_are_errors(command, tmp_path):
    out, err = probe(command, str(tmp_path), "--no-prog", cwd=tmp_path)
    assert out["code"] == 2 and "unrecognized arguments:" in err and "--no-prog" in err


def test_import_interp_phases_pulls_in_nothing_heavy():
    r = subprocess.run([sys.executable, "-c", "import sys, interp.phases, interp; print(sorted(m for m in "
                        "('torch', 'matplotlib', 'training.loop', 'interp.fourier') if m in sys.modules))"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "[]", r.stderr


def test_interp_submodules_still_resolve_as_attributes():
    import interp

    assert interp.fourier.__name__ == "interp.fourier" and interp.load_run.__name__ == "Run"
    with pytest.raises(AttributeError):
        interp.nope  # noqa: B018


def test_ctrl_c_during_start_up_exits_130_without_traceback(tmp_path):
    """SIGINT while the config is being checked (before the loop): delivered at a known point, not after a sleep."""
    code = ("import os, signal, sys, training.run as r\n"
            "def interrupted(cfg):\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "r.check = interrupted\n"
            "sys.argv = ['training.run', '--out', sys.argv[1], '--steps', '5', '--no-progress']\n"
            "sys.exit(r.main())\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 1 and not (tmp_path / "run").exists()


def test_control_characters_in_a_value_stay_on_one_line(capsys):
    from training.run import main

    assert main(["--task", "x\ny", "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x\\ny" in err
