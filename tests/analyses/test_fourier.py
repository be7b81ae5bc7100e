"""`python -m analyses.fourier RUN_DIR`: outputs, the summary, and every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import interp
from analyses import fourier as cli
from analyses.api import options_from
from interp import fourier
from tests.analyses.golden import check_api_result, check_command, copy_fixture
from tests.conftest import ROOT, tiny_config
from training.errors import ConfigError, RunDirError
from training.loop import train
from training.runs.reader import Run


def run_analysis(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "analyses.fourier", "--no-progress", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_analysis_writes_json_figures_and_phases(grokked_run):
    """Also: an analysis of a run that is still training (its writer holds the lock) neither waits for the lock
    nor touches any file the training loop owns."""
    from training.runs.writer import RunLock

    lock = RunLock(grokked_run).acquire()  # as the training loop holds it while it runs
    owned_by_training = {p: p.read_bytes() for p in grokked_run.rglob("*") if p.is_file()}
    try:
        r = run_analysis(grokked_run)
    finally:
        lock.release()
    assert r.returncode == 0, r.stderr
    out = grokked_run / "analyses"
    result = json.loads((out / "fourier.json").read_text())
    run = Run(grokked_run)
    expected = fourier.key_frequencies(run.model(run.steps[-1]), run)
    assert result["key_frequencies"] == expected and expected
    for line in ("key frequencies: " + ", ".join(map(str, expected)), "neuron clusters", "phases: memorisation ends",
                 "logit periodicity"):
        assert line in r.stdout
    assert result["structure"]["group"] == "additive" and result["structure"]["n"] == 23
    ck = result["checkpoints"]
    assert ck["step"] == run.steps
    assert ck["key_frequencies"][-1] == expected and ck["key_frequencies"][0] == []
    for key in ("test_loss", "restricted_loss", "excluded_loss", "gini_embed", "gini_unembed", "weight_norm",
                "logit_periodicity", "in_clusters"):
        assert len(ck[key]) == len(run.steps), key
    # the probes' own losses reproduce the logged metrics at each checkpoint (the grid is the whole task here)
    logged = {m["step"]: m for m in run.metrics}
    for t, loss in zip(ck["step"], ck["test_loss"]):
        assert loss == pytest.approx(logged[t]["test_loss"], rel=1e-3, abs=1e-6)
    # the per-checkpoint losses are stored at full precision (float64 round trip), not to a fixed number of decimals
    for key in ("train_loss", "test_loss", "restricted_loss", "excluded_loss"):
        values = [x for x in ck[key] if x is not None]
        assert any(x != round(x, 10) for x in values), key
    # the last checkpoint's loss and the "final" loss are two float32 forwards of one model in different batch
    # shapes (the checkpoint stack vs one model), so the GEMM kernels may round differently: float32's unit
    # roundoff is 6e-8 and the loss of a trained model sums tail log-probabilities whose logits carry that error
    # relative to their size (|logit| ~ 10-30), so agreement to rel 1e-5 is what the precision supports.
    assert ck["test_loss"][-1] == pytest.approx(result["final"]["test_loss"], rel=1e-5)
    for name in ("fourier_embedding.png", "fourier_clusters.png", "fourier_progress.png", "fourier_key_norms.png"):
        assert (out / name).stat().st_size > 10_000, name
    # the phases go into fourier.json; every file the training loop owns (summary.json included) is untouched
    ph = result["phases"]
    assert ph["memorisation_end"] < ph["circuit_formation_end"] < ph["cleanup_end"]
    assert {p: p.read_bytes() for p in owned_by_training} == owned_by_training
    new = {p.relative_to(grokked_run).parts[0] for p in grokked_run.rglob("*") if p.is_file()} - \
        {p.relative_to(grokked_run).parts[0] for p in owned_by_training}
    assert new == {"analyses"}
    assert "phases" not in json.loads((grokked_run / "summary.json").read_text())
    assert not list(grokked_run.rglob("*.tmp*"))


def test_corrupt_checkpoint_among_good_ones_is_skipped(grokked_run, capsys):
    run = Run(grokked_run)
    bad = run.steps[len(run.steps) // 2]
    run.checkpoint_path(bad).write_bytes(b"\x00" * 100)
    assert cli.main([str(grokked_run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipping" in err and str(run.checkpoint_path(bad)) in err
    result = json.loads((grokked_run / "analyses" / "fourier.json").read_text())
    assert bad not in result["checkpoints"]["step"] and len(result["checkpoints"]["step"]) == len(run.steps) - 1
    assert result["skipped"][0]["step"] == bad


def test_truncated_final_checkpoint_stops_with_one_line_and_keeps_old_results(grokked_run):
    assert cli.main([str(grokked_run), "--no-progress"]) == 0
    kept = {p: p.read_bytes() for p in (grokked_run / "analyses").iterdir()}
    kept_summary = (grokked_run / "summary.json").read_bytes()
    run = Run(grokked_run)
    last = run.checkpoint_path(run.steps[-1])
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    r = run_analysis(grokked_run)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(last) in lines[0] and "--ref-step" in lines[0]
    assert {p: p.read_bytes() for p in (grokked_run / "analyses").iterdir()} == kept
    assert (grokked_run / "summary.json").read_bytes() == kept_summary
    # another reference checkpoint still works, and the broken one is skipped
    assert cli.main([str(grokked_run), "--no-progress", "--ref-step", str(run.steps[-2])]) == 0


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """Tiny runs the Fourier analysis must refuse (three operands, a non-prime x*y) and an LSTM it reads through
    the models' common interface."""
    root = tmp_path_factory.mktemp("others")
    for name, flat in {"kadd": dict(task="kadd", p=5, k=3), "mul12": dict(task="mul", p=12),
                       "lstm": dict(model="lstm")}.items():
        train(tiny_config(steps=10, **flat), root / name, progress=False)
    return root


@pytest.mark.parametrize("case, words", [
    ("empty", "not a run directory"),
    ("missing", "no such run directory"),
    ("kadd", "3 operands"),
    ("mul12", "not prime"),
])
def test_bad_input_is_one_line_exit_2(case, words, other_runs, tmp_path, capsys):
    path = {"empty": tmp_path, "missing": tmp_path / "nothing"}.get(case, other_runs / case)
    assert cli.main([str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and str(path) in err[0]
    assert not (path / "analyses" / "fourier.json").exists()


def test_an_lstm_is_analysed_through_the_common_interface(other_runs):
    assert cli.main([str(other_runs / "lstm"), "--no-progress"]) == 0
    result = json.loads((other_runs / "lstm" / "analyses" / "fourier.json").read_text())
    assert len(result["checkpoints"]["step"]) == len(Run(other_runs / "lstm").steps)


def test_bad_options(grokked_run, capsys):
    run = Run(grokked_run)
    assert cli.main([str(grokked_run), "--ref-step", str(run.steps[-1] + 1)]) == 2
    assert "--ref-step" in capsys.readouterr().err
    assert cli.main([str(grokked_run), "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err
    r = run_analysis(grokked_run, "--bogus")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unrecognized" in r.stderr


def _nan_checkpoint(run_dir, step):
    from safetensors.torch import load_file, save_file

    path = Run(run_dir).checkpoint_path(step)
    w = load_file(path)
    w[next(iter(w))][:] = float("nan")
    save_file(w, path)


@pytest.mark.parametrize("damage, words", [
    ("summary_list", "summary.json"),
    ("summary_garbage", "summary.json"),
    ("split_garbage", "split.json"),
    ("split_list", "split.json"),
    ("metrics_row", "metrics.jsonl"),
    ("nan_reference", "NaN"),
])
def test_damaged_run_is_one_line_and_writes_nothing(grokked_run, damage, words, capsys):
    """Every input is checked before anything is written: no analyses/ folder appears, nothing else changes."""
    if damage == "summary_list":
        (grokked_run / "summary.json").write_text("[1, 2]")
    elif damage == "summary_garbage":
        (grokked_run / "summary.json").write_text('{"S_mem": ')
    elif damage == "split_garbage":
        (grokked_run / "split.json").write_bytes(b"\x00garbage")
    elif damage == "split_list":
        (grokked_run / "split.json").write_text("[1, 2, 3]")
    elif damage == "metrics_row":
        (grokked_run / "metrics.jsonl").write_text('{"foo": 1}\n')
    else:
        _nan_checkpoint(grokked_run, Run(grokked_run).steps[-1])
    before = {p: p.read_bytes() for p in grokked_run.rglob("*") if p.is_file()}
    assert cli.main([str(grokked_run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (grokked_run / "analyses").exists()
    assert {p: p.read_bytes() for p in grokked_run.rglob("*") if p.is_file()} == before


def test_checkpoint_with_nan_among_good_ones_is_skipped(grokked_run, capsys):
    run = Run(grokked_run)
    bad = run.steps[len(run.steps) // 2]
    _nan_checkpoint(grokked_run, bad)
    assert cli.main([str(grokked_run), "--no-progress"]) == 0
    assert "NaN" in capsys.readouterr().err
    result = json.loads((grokked_run / "analyses" / "fourier.json").read_text())
    assert result["skipped"][0]["step"] == bad


def test_option_defaults_are_the_commands(tmp_path):
    args = cli.make_parser().parse_args([str(tmp_path)])
    assert options_from(cli.FourierOptions, args, progress=not args.no_progress) == cli.FourierOptions()
    assert cli.FourierOptions().threshold == fourier.CLUSTER_THRESHOLD == 0.85
    with pytest.raises(ConfigError, match="--threshold"):
        cli.FourierOptions(threshold=1.5)


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    run = copy_fixture("runs/add", tmp_path)
    res = cli.analyse(interp.load_run(run), cli.FourierOptions(workers=1, progress=False))
    assert isinstance(res, cli.FourierResult)
    assert res.key_frequencies == [4] and res.p == 13 and res.ref_step == 800
    assert res.checkpoints["step"] == Run(run).steps and res.skipped == []
    check_api_result(res, run, "fourier", "runs/add")


def test_command_writes_the_json_it_wrote_before(tmp_path):
    res = check_command("fourier", "runs/add", cli.FourierResult, tmp_path, cli.load)
    assert res.key_frequencies == [4] and res.threshold == 0.85


def test_load_names_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(RunDirError, match="run the analysis first"):
        cli.load(tmp_path)
    (tmp_path / "analyses").mkdir()
    (tmp_path / "analyses" / "fourier.json").write_text('{"run": "x", "surprise": 1}')
    with pytest.raises(RunDirError, match="fourier.json: FourierResult: missing task.*unknown surprise"):
        cli.load(tmp_path)
