"""`python -m analyses.landscape` and `python -m analyses.reduced_landscape` on a tiny teacher-student run."""

import json
import os
import subprocess
import sys

import pytest

from analyses import landscape, reduced_landscape
from tests.conftest import ROOT
from training.errors import ConfigError
from training.loop import train
from training.presets import get_preset


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A student started at 3x the standard init with weight decay: its norm comes down during training."""
    d = tmp_path_factory.mktemp("runs") / "teacher"
    cfg = get_preset("omnigrok-teacher").replace(steps=300, eval_every=10, device="cpu", n_train=10, n_test=30,
                                                 d_mlp=32, lr=1e-2, wd=1.0, ckpt_floor=6)
    train(cfg, d, progress=False)
    return d


def test_reduced_then_landscape_write_json_png_and_print_w_c(teacher_run, capsys):
    assert reduced_landscape.main([str(teacher_run), "--alphas", "0.1,0.3,1,3,10", "--steps", "1000",
                                   "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "w_c =" in out and "diagnosis:" in out and "trajectory:" in out
    red = json.loads((teacher_run / "analyses" / "reduced_landscape.json").read_text())
    assert len(red["norms"]) == 5 and red["diagnosis"]["train_shape"] == "L"
    assert red["trajectory"]["steps"][-1] == 300 and red["w_c"] == red["diagnosis"]["w_c"]
    assert (teacher_run / "analyses" / "reduced_landscape.png").stat().st_size > 10_000

    assert landscape.main([str(teacher_run), "--no-progress", "--n-norms", "9"]) == 0
    out = capsys.readouterr().out
    assert "from the reduced landscape" in out and "slice @ step" in out
    res = json.loads((teacher_run / "analyses" / "landscape.json").read_text())
    assert res["w_c"] == pytest.approx(red["w_c"])
    steps = [s["step"] for s in res["slices"]]
    assert steps[0] == 0 and steps[-1] == 300
    for s in res["slices"]:
        assert len(s["total_norms"]) == 9 and len(s["test_loss"]) == 9 and s["train_acc"] is None
    traj = res["trajectory"]
    assert traj["weight_norm"][-1] < traj["weight_norm"][0]  # weight decay brought the norm down
    assert (teacher_run / "analyses" / "landscape.png").stat().st_size > 10_000


def test_landscape_of_a_parameter_group(teacher_run, capsys):
    assert landscape.main([str(teacher_run), "--steps", "last", "--group", "W_U|b_U", "--n-norms", "5",
                           "--no-progress"]) == 0
    res = json.loads((teacher_run / "analyses" / "landscape.json").read_text())
    (sl,) = res["slices"]
    assert sl["group"] == ["W_U", "b_U"] and sl["step"] == 300


@pytest.mark.parametrize("module, args, words", [
    (landscape, ["{tmp}/nothing"], "no such run directory"),
    (landscape, ["{run}", "--steps", "7"], "no checkpoint at step 7"),
    (landscape, ["{run}", "--group", "nope"], "matches no parameter"),
    (reduced_landscape, [], "either RUN_DIR or --preset"),
    (reduced_landscape, ["{run}", "--preset", "omnigrok-teacher"], "either RUN_DIR or --preset"),
    (reduced_landscape, ["--preset", "nope"], "unknown preset"),
    (reduced_landscape, ["{run}", "--alphas", "1,x"], "--alphas"),
    (reduced_landscape, ["{run}", "--set", "bogus=1"], "unknown config field"),
    (reduced_landscape, ["{run}", "--alphas", "nan"], "--alphas"),
    (reduced_landscape, ["{run}", "--alphas", "1,inf"], "--alphas"),
    (reduced_landscape, ["{run}", "--set", "lr=nan"], "--lr"),
    (reduced_landscape, ["{run}", "--set", "p=1e400"], "--p"),
    (reduced_landscape, ["{run}", "--steps", "1e400"], "--steps"),
    (reduced_landscape, ["{run}", "--ste", "5"], "unrecognized"),
    (reduced_landscape, ["--preset", "omnigrok-teacher", "--out", "/dev/null/x"], "not a directory"),
    (landscape, ["{run}", "--span", "nan"], "--span"),
    (landscape, ["{run}", "--span", "1"], "--span"),
    (landscape, ["{run}", "--group", "["], "not a regular expression"),
    (landscape, ["{run}", "--n-norms", "1e400"], "--n-norms"),
    (landscape, ["{run}", "--n-norm", "5"], "unrecognized"),
])
def test_bad_input_is_one_line_and_keeps_earlier_results(teacher_run, tmp_path, capsys, module, args, words):
    out_dir = teacher_run / "analyses"
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()} if out_dir.exists() else {}
    argv = [a.format(tmp=tmp_path, run=teacher_run) for a in args]
    try:
        code = module.main(argv)
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    after = {p.name: p.read_bytes() for p in out_dir.iterdir()} if out_dir.exists() else {}
    assert after == before


def test_checkpoint_with_nan_weights_is_one_line_and_writes_nothing(teacher_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    run = shutil.copytree(teacher_run, tmp_path / "run")
    shutil.rmtree(run / "analyses", ignore_errors=True)
    last = max((run / "ckpt").iterdir(), key=lambda p: int(p.stem.split("_")[1]))
    w = load_file(last)
    w[next(iter(w))][:] = float("nan")
    save_file(w, last)
    assert landscape.main([str(run), "--steps", "last", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN" in err[0] and str(last) in err[0]
    assert not (run / "analyses").exists()


def test_command_line_error_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "analyses.landscape", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a run directory" in r.stderr


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_option_defaults_are_the_commands(tmp_path):
    from analyses.api import options_from

    args = landscape.make_parser().parse_args([str(tmp_path)])
    assert options_from(landscape.LandscapeOptions, args, progress=True) == landscape.LandscapeOptions()
    with pytest.raises(ConfigError, match="--n-norms"):
        landscape.LandscapeOptions(n_norms=2)


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    import interp
    from tests.analyses.golden import check_api_result, copy_fixture

    run = copy_fixture("runs/add", tmp_path)
    res = landscape.analyse(interp.load_run(run), landscape.LandscapeOptions(n_norms=5, progress=False))
    assert isinstance(res, landscape.LandscapeResult) and res.group == "all" and res.reduced is None
    assert [s["step"] for s in res.slices] == [0, 80, 800] and len(res.slices[0]["total_norms"]) == 5
    check_api_result(res, run, "landscape", "runs/add")


def test_command_writes_the_json_it_wrote_before(tmp_path):
    from tests.analyses.golden import check_command

    assert check_command("landscape", "runs/add", landscape.LandscapeResult, tmp_path, landscape.load).w_c > 0
