"""The analyses made for one-answer tasks on a sequence-task run (training.tasks.sequence): each works or exits 2 with
one line saying why not; the landscape (loss against weight norm) works on any task."""

from __future__ import annotations

import json

import pytest

from training.run import main as train_main

TINY = ["--no-progress", "--n-train", "32", "--n-test", "32", "--d-model", "16", "--n-heads", "2", "--d-head", "8",
        "--steps", "20", "--eval-every", "10", "--device", "cpu", "--batch-size", "16"]


@pytest.fixture(scope="module")
def seq_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq")
    runs = {"digit_add": root / "digits", "repeat_subseq": root / "repeat"}
    assert train_main(["--task", "digit_add", "--n-digits", "2", "--d-mlp", "32", *TINY,
                       "--out", str(runs["digit_add"])]) == 0
    assert train_main(["--task", "repeat_subseq", "--infinite", "true", "--seq-len", "25", "--seq-vocab", "12",
                       "--repeat-len", "5", "--n-layers", "2", "--d-mlp", "0", *TINY,
                       "--out", str(runs["repeat_subseq"])]) == 0
    return runs


@pytest.mark.parametrize("task", ["digit_add", "repeat_subseq"])
@pytest.mark.parametrize("analysis,words", [("fourier", "not a modular-arithmetic task"),
                                            ("cosets", "not a group task"),
                                            ("sparsity", "predicts at several positions")])
def test_analyses_for_one_answer_tasks_refuse_with_one_line(seq_runs, capsys, task, analysis, words):
    import importlib

    main = importlib.import_module(f"analyses.{analysis}").main
    assert main([str(seq_runs[task]), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and task in err, err
    assert not (seq_runs[task] / "analyses" / f"{analysis}.json").exists()


@pytest.mark.parametrize("task", ["digit_add", "repeat_subseq"])
def test_landscape_works_on_a_sequence_run(seq_runs, task):
    from analyses.landscape import main

    assert main([str(seq_runs[task]), "--no-progress", "--n-norms", "3", "--steps", "last"]) == 0
    result = json.loads((seq_runs[task] / "analyses" / "landscape.json").read_text())
    assert result["task"] == task and result["loss"] == "seq_ce"
    assert result["trajectory"]["steps"] == [0, 10, 20]
