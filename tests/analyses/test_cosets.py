"""`python -m analyses.cosets RUN_DIR` as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from analyses.cosets import main
from interp.groups import coset_labels, get_group, subgroups
from tests.conftest import ROOT, tiny_config
from training.loop import train

def cosets_cli(*args):
    """In a subprocess, exactly as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "analyses.cosets", "--no-progress", "--n-null", "19", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def cosets_main(capsys, *args):
    """In-process (the same code path without the interpreter start): (returncode, stdout, stderr)."""
    try:
        rc = main(["--no-progress", "--n-null", "19", *map(str, args)])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


@pytest.fixture(scope="module")
def s4_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cosets") / "s4"
    out.mkdir()
    cfg = tiny_config(task="group_mul", group="S4", model="mlp", d_model=16, d_mlp=32, frac=0.5, steps=40,
                      ckpt_floor=4)
    train(cfg, out, progress=False)
    return out


def plant(run_dir, key, H, side, transpose, seed=0):
    """Overwrite the last checkpoint's `key` with rows on the cosets of H (plus a little noise)."""
    G = get_group("S4")
    steps = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "ckpt").glob("step_*.safetensors"))
    path = run_dir / "ckpt" / f"step_{steps[-1]}.safetensors"
    w = load_file(path)
    W = w[key].numpy()
    rng = np.random.default_rng(seed)
    labels = coset_labels(G, H, side)
    d = W.shape[0] if transpose else W.shape[-1]
    rows = rng.normal(size=(labels.max() + 1, d))[labels] + 0.2 * rng.normal(size=(24, d))
    if transpose:
        W[:, :24] = rows.T
    elif W.ndim == 3:
        W[0, :24] = rows
    else:
        W[:24] = rows
    w[key] = torch.from_numpy(W)
    save_file(w, path)


def test_planted_unembedding_is_found_end_to_end(s4_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(s4_run, run)
    G = get_group("S4")
    H = next(s for s in subgroups(G) if s.order == 3)  # not normal: left and right cosets differ
    plant(run, "W_U", H, "right", transpose=True)
    plant(run, "W_E", H, "left", transpose=False, seed=1)
    r = cosets_cli(run, "--subgroup", "; ".join(H.generator_names))
    assert r.returncode == 0, r.stderr
    res = json.loads((run / "analyses" / "cosets.json").read_text())
    assert res["matrices"]["W_U"]["asked"]["best_conjugate"]["subgroup_index"] == H.index
    for name, side in (("W_U", "right"), ("W_E_x", "left")):
        best = res["matrices"][name]["best"]
        assert res["matrices"][name]["structure"]
        assert best["subgroup_index"] == H.index and best["side"] == side and best["n_cosets"] == 8
        assert res["matrices"][name]["from_step"] == res["steps"][-1]  # planted in the last checkpoint only
    line = next(x for x in r.stdout.splitlines() if x.startswith("W_U rows:"))
    assert f"right cosets of {H.label()} (order 3, 8 cosets" in line and "from step" in line
    assert res["irreps"]["irreps"]["sign"]["variance_share"] >= 0
    for png in ("cosets_rows.png", "cosets_score.png", "cosets_irreps.png"):
        assert (run / "analyses" / png).stat().st_size > 1000


def test_untrained_structure_is_reported_as_none(s4_run, capsys):
    r = cosets_main(capsys, s4_run, "--every", "2")
    assert r.returncode == 0, r.stderr
    res = json.loads((s4_run / "analyses" / "cosets.json").read_text())
    assert len(res["steps"]) <= 3 and res["group"] == "S4" and res["op"] == "x*y"
    assert set(res["matrices"]) == {"W_U", "W_E_x", "W_E_y"}
    ir = res["irreps"]
    assert set(ir["irreps"]) == {"trivial", "sign", "standard", "standard_sign", "[2,2]"}
    assert sum(v["variance_share"] for v in ir["irreps"].values()) == pytest.approx(1.0)
    # both rules side by side, each named, and the ablation of every non-trivial irrep
    ours, theirs, ablation = (next(x for x in r.stdout.splitlines() if x.startswith(p)) for p in (
        "logits, key irreps (ours", "logits, key irreps (Chughtai et al.", "logits, loss"))
    assert f"{100 * ir['chughtai_logits_explained']:.1f}%" in theirs
    assert f"{100 * ir['key_char_explained']:.1f}%" in ours
    sims = {n: v["char_similarity"] for n, v in ir["irreps"].items() if n != "trivial"}
    assert ir["key_chughtai"] == [n for n, v in sims.items() if v > 0.005]
    assert ir["chughtai_logits_explained"] == pytest.approx(sum(v**2 for v in sims.values()))
    for n, v in ir["irreps"].items():
        if n != "trivial":
            assert f"{v['label']} {v['ablation_loss']:.3g}" in ablation
    assert ir["irreps"]["standard"]["label"] == "standard (3,1)"
    assert len(ir["timeline"]["ablation_loss"]["sign"]) == len(res["steps"])


def one_line_error(r, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_input(s4_run, tmp_path, capsys):
    one_line_error(cosets_main(capsys, tmp_path / "nothing"), "no such run directory")
    modular = tmp_path / "modular"
    modular.mkdir()
    train(tiny_config(p=7, steps=10), modular, progress=False)
    one_line_error(cosets_main(capsys, modular), "not a group task", "'add'")
    one_line_error(cosets_main(capsys, s4_run, "--every", "0"), "--every")
    one_line_error(cosets_main(capsys, s4_run, "--bogus"), "unrecognized arguments")
    one_line_error(cosets_main(capsys, s4_run, "--subgroup", "(0 7)"), "--subgroup")
    one_line_error(cosets_main(capsys, s4_run, "--subgroup", "banana"), "--subgroup")
    one_line_error(cosets_main(capsys, s4_run, "--alpha", "nan"), "--alpha")
    one_line_error(cosets_main(capsys, s4_run, "--min-ari", "2"), "--min-ari")
    one_line_error(cosets_main(capsys, s4_run, "--seed", "-1"), "--seed")
    one_line_error(cosets_main(capsys, s4_run, "--n-nul", "5"), "unrecognized arguments")
    one_line_error(cosets_cli(modular), "not a group task")  # the same from the shell


def test_unknown_group_and_corrupt_checkpoint_write_nothing(s4_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(s4_run, run)
    assert cosets_main(capsys, run).returncode == 0
    before = (run / "analyses" / "cosets.json").read_bytes()
    cfg = json.loads((run / "config.json").read_text())
    cfg["task"]["group"] = "Q8"
    (run / "config.json").write_text(json.dumps(cfg))
    one_line_error(cosets_main(capsys, run), "unknown group 'Q8'", "config.json")
    cfg["task"]["group"] = "S4"
    (run / "config.json").write_text(json.dumps(cfg))
    ckpt = sorted((run / "ckpt").glob("*.safetensors"))[1]
    ckpt.write_bytes(b"not a safetensors file")
    one_line_error(cosets_main(capsys, run), ckpt.name)
    assert (run / "analyses" / "cosets.json").read_bytes() == before


def test_group_without_characters_skips_the_representation_view(tmp_path, capsys):
    run = tmp_path / "a4"
    run.mkdir()
    cfg = tiny_config(task="group_conj", group="A4", model="mlp", d_model=8, d_mlp=16, frac=0.5, steps=20,
                      ckpt_floor=3)
    train(cfg, run, progress=False)
    r = cosets_main(capsys, run, "--subgroup", "(0 1)(2 3), (0 2)(1 3)")  # the normal Klein four-group
    assert r.returncode == 0, r.stderr
    res = json.loads((run / "analyses" / "cosets.json").read_text())
    assert res["op"] == "x*y*x^-1" and "skipped" in res["irreps"] and res["n_candidates"] == 2 * 8 - 1
    assert res["matrices"]["W_U"]["asked"]["best_conjugate"]["side"] == "both"
    assert not (run / "analyses" / "cosets_irreps.png").exists()


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line(s4_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(s4_run, run)
    out = run / "analyses" / "cosets.json"
    before = out.read_bytes() if out.exists() else None
    ckpt = sorted((run / "ckpt").glob("*.safetensors"))[1]
    weights = load_file(ckpt)
    key = next(k for k in weights if k.endswith("W_U"))
    weights[key] = weights[key][:, :-1].contiguous()  # one output class short
    save_file(weights, ckpt)
    one_line_error(cosets_main(capsys, run), ckpt.name, "does not fit")
    assert (out.read_bytes() if out.exists() else None) == before  # nothing written


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_option_defaults_are_the_commands(tmp_path):
    from analyses.api import options_from
    from analyses.cosets import CosetsOptions, make_parser
    from training.errors import ConfigError

    args = make_parser().parse_args([str(tmp_path)])
    assert options_from(CosetsOptions, args, progress=True) == CosetsOptions()
    with pytest.raises(ConfigError, match="--alpha"):
        CosetsOptions(alpha=1.0)


FIXTURE_OPTIONS = dict(n_null=9, timeline_null=2, subgroup="(0 1)", progress=False)  # the fixture's flags


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    import interp
    from analyses import cosets
    from tests.analyses.golden import check_api_result, copy_fixture

    run = copy_fixture("runs/s4", tmp_path)
    res = cosets.analyse(interp.load_run(run), cosets.CosetsOptions(**FIXTURE_OPTIONS))
    assert isinstance(res, cosets.CosetsResult) and res.group == "S4" and res.order == 24
    assert res.steps == [0, 10, 20, 40] and "W_U" in res.matrices and "key" in res.irreps
    assert res.matrices["W_U"]["asked"]["given"] == "(0 1)" and res.settings["n_null"] == 9
    check_api_result(res, run, "cosets", "runs/s4")


def test_command_writes_the_json_it_wrote_before(tmp_path):
    from analyses import cosets
    from tests.analyses.golden import check_command

    assert check_command("cosets", "runs/s4", cosets.CosetsResult, tmp_path, cosets.load).n_candidates > 0


def test_api_bad_input_is_bad_input(tmp_path):
    from analyses import cosets
    from analyses.api import BadInput
    from tests.analyses.golden import copy_fixture

    with pytest.raises(BadInput, match="not a group task"):
        cosets.analyse(copy_fixture("runs/add", tmp_path), cosets.CosetsOptions(progress=False))
    with pytest.raises(BadInput, match="--subgroup: cannot read"):
        cosets.analyse(copy_fixture("runs/s4", tmp_path), cosets.CosetsOptions(subgroup="nonsense"))
