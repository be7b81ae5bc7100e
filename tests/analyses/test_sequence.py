"""`python -m analyses.sequence RUN_DIR` on tiny real sequence runs (repeat task: induction heads form beside the
loss drop; digit addition: one curve per answer digit); bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from analyses.sequence import main
from tests.conftest import tiny_config
from training.loop import train

# 2-layer attention-only transformer on a short repeat task: the loss falls around step 100, the layer-1 heads
# start attending to the token after the previous copy on the way down
REPEAT = dict(task="repeat_subseq", infinite=True, seq_len=31, seq_vocab=24, repeat_len=8, n_repeats=3,
              n_train=128, n_test=128, n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=0, lr=1e-2, wd=0.1,
              warmup_steps=5, batch_size=64, steps=240, eval_every=10, ckpt_floor=12, ckpt_max=40)
DIGITS = dict(task="digit_add", n_digits=2, n_train=200, n_test=100, n_layers=1, d_model=32, n_heads=2, d_head=16,
              d_mlp=32, lr=3e-3, wd=0.1, steps=60, eval_every=10, ckpt_floor=4)


@pytest.fixture(scope="module")
def repeat_master(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seq") / "repeat"
    train(tiny_config(**REPEAT), path, progress=False)
    return path


@pytest.fixture
def repeat_run(repeat_master, tmp_path) -> Path:
    return Path(shutil.copytree(repeat_master, tmp_path / "repeat"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seq") / "digits"
    train(tiny_config(**DIGITS), path, progress=False)
    return path


def result(run: Path) -> dict:
    return json.loads((run / "analyses" / "sequence.json").read_text())


def test_repeat_run_heads_become_induction_heads_beside_the_loss_drop(repeat_run, capsys):
    assert main([str(repeat_run), "--no-progress", "--n-seqs", "32"]) == 0
    out = capsys.readouterr().out
    assert "induction heads (prefix_matching >= 0.4" in out and "phase change" in out
    for name in ("sequence.json", "sequence_loss.png", "sequence_induction.png"):
        assert (repeat_run / "analyses" / name).is_file(), name
    res = result(repeat_run)
    ind = res["induction"]
    drop = res["phase_change"]["test"]["all"]
    assert drop is not None and drop["plateau"] > 3 * drop["final"]
    steps = ind["steps"]
    assert steps == sorted(int(p.stem.split("_")[1]) for p in (repeat_run / "ckpt").iterdir())
    assert len(ind["scores"]["prefix_matching"]) == len(steps) and len(ind["scores"]["copying"][0]) == 2
    layer1 = [ind["onset"][h] for h in ("L1H0", "L1H1") if ind["onset"][h] is not None]
    assert layer1, "no layer-1 head became an induction head"
    assert min(layer1) <= drop["end"]  # formed by the time the loss has fallen
    assert all(ind["onset"][h] is None for h in ("L0H0", "L0H1"))  # layer 0 cannot match prefixes alone
    assert ind["half_len"] == 10  # the task's repeat interval
    assert set(res["target_names"]) == set(res["curves"]["test_loss"]) and len(res["target_names"]) == 14
    assert set(res["phase_change"]["test"]) == set(res["target_names"]) | {"all"}


def test_heads_score_and_threshold_flags(repeat_run):
    assert main([str(repeat_run), "--no-progress", "--n-seqs", "8", "--heads", "1.0", "L1H1", "--score", "stripe",
                 "--threshold", "0.99", "--every", "3"]) == 0
    ind = result(repeat_run)["induction"]
    assert ind["heads"] == ["L1H0", "L1H1"] and ind["score"] == "stripe" and ind["threshold"] == 0.99
    assert set(ind["onset"]) == {"L1H0", "L1H1"}
    all_steps = sorted(int(p.stem.split("_")[1]) for p in (repeat_run / "ckpt").iterdir())
    assert ind["steps"] == sorted(set(all_steps[::3]) | {all_steps[-1]})
    best = max(max(row[1]) for row in ind["scores"]["stripe"])
    assert (best >= 0.99) == any(v is not None for v in ind["onset"].values())


def test_digit_run_one_curve_per_answer_digit(digits_run, capsys):
    assert main([str(digits_run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    res = result(digits_run)
    assert res["target_names"] == ["s2", "s1", "s0"] and "induction" not in res
    assert not (digits_run / "analyses" / "sequence_induction.png").exists()
    assert (digits_run / "analyses" / "sequence_loss.png").is_file()
    assert all(len(res["curves"]["test_loss"][n]) == len(res["curves"]["steps"]) for n in res["target_names"])
    assert all(math.isfinite(v) for v in res["curves"]["test_loss"]["s0"])
    assert "  s2: " in out and "  s0: " in out
    assert main([str(digits_run), "--no-progress", "--min-drop", "1e9"]) == 0  # no loss falls a billionfold
    res = result(digits_run)
    assert res["min_drop"] == 1e9 and all(v is None for v in res["phase_change"]["test"].values())


def _one_line_exit_2(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, repeat_run, digits_run, capsys):
    _one_line_exit_2(capsys, [str(tmp_path / "nothing")], "no such run directory")
    (tmp_path / "plain").mkdir()
    _one_line_exit_2(capsys, [str(tmp_path / "plain")], "not a run directory")
    modular = tmp_path / "mod"
    train(tiny_config(steps=10, p=11), modular, progress=False)
    _one_line_exit_2(capsys, [str(modular)], f"analyses.sequence needs a sequence task; {modular} is add mod 11")
    for bad in ("0", "1.5", "-0.2"):
        _one_line_exit_2(capsys, [str(repeat_run), "--threshold", bad], "--threshold must be in (0, 1]")
    _one_line_exit_2(capsys, [str(repeat_run), "--min-drop", "1"], "--min-drop must be a factor > 1")
    for argv in (["--threshold", "nan"], ["--heads", "one"], ["--score", "copying"], ["--n-seqs", "0"]):
        with pytest.raises(SystemExit) as e:
            main([str(repeat_run), *argv])
        assert e.value.code == 2
    assert "finite number" in capsys.readouterr().err
    _one_line_exit_2(capsys, [str(repeat_run), "--heads", "2.0"], "no head 2.0")
    _one_line_exit_2(capsys, [str(repeat_run), "--heads", "1.2"], "no head 1.2")
    _one_line_exit_2(capsys, [str(repeat_run), "--half-len", "16"], "--half-len")
    _one_line_exit_2(capsys, [str(digits_run), "--heads", "0.0"], "repeat_subseq only")
    for run in (repeat_run, modular):
        assert not (run / "analyses").exists()


def test_damaged_runs_exit_2_and_keep_earlier_results(repeat_run, capsys):
    assert main([str(repeat_run), "--no-progress", "--n-seqs", "4"]) == 0
    before = (repeat_run / "analyses" / "sequence.json").read_bytes()
    ckpt = sorted((repeat_run / "ckpt").iterdir())[2]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    _one_line_exit_2(capsys, [str(repeat_run), "--no-progress"], ckpt.name)
    assert (repeat_run / "analyses" / "sequence.json").read_bytes() == before
    metrics = repeat_run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    metrics.write_text("".join(json.dumps({k: v for k, v in r.items() if "by_target" not in k}) + "\n"
                               for r in rows))
    _one_line_exit_2(capsys, [str(repeat_run), "--no-progress"], "no per-target losses")
    assert (repeat_run / "analyses" / "sequence.json").read_bytes() == before


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_option_defaults_are_the_commands(tmp_path):
    from analyses.api import options_from
    from analyses.sequence import SequenceOptions, make_parser
    from training.errors import ConfigError

    args = make_parser().parse_args([str(tmp_path)])
    assert options_from(SequenceOptions, args, heads=None, progress=True) == SequenceOptions()
    with pytest.raises(ConfigError, match="--min-drop"):
        SequenceOptions(min_drop=1.0)


@pytest.mark.parametrize("source", ["runs/repeat", "runs/digits"])
def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path, source):
    import interp
    from analyses import sequence
    from tests.analyses.golden import check_api_result, copy_fixture

    run = copy_fixture(source, tmp_path)
    res = sequence.analyse(interp.load_run(run), sequence.SequenceOptions(progress=False))
    assert isinstance(res, sequence.SequenceResult) and res.run == str(run)
    assert (res.induction is not None) == (source == "runs/repeat")
    if res.induction:
        assert res.induction["steps"] == [0, 10, 20, 60] and res.induction["score"] == "prefix_matching"
    else:
        assert res.task == "digit_add" and "induction" not in res.to_dict()
    check_api_result(res, run, "sequence", source)


@pytest.mark.parametrize("source", ["runs/repeat", "runs/digits"])
def test_command_writes_the_json_it_wrote_before(tmp_path, source):
    from analyses import sequence
    from tests.analyses.golden import check_command

    assert check_command("sequence", source, sequence.SequenceResult, tmp_path, sequence.load).target_names
