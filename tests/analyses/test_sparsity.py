"""`python -m analyses.sparsity RUN_DIR` on a tiny parity run and a tiny transformer run; bad input."""

import json
from pathlib import Path

import pytest

from analyses.sparsity import main
from tests.conftest import tiny_config
from tests.training.test_parity import one_thread, tiny_parity  # noqa: F401  (the fixture applies here too)
from training.loop import train


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("sparsity") / "parity"
    train(tiny_parity(stop_after_gen=400), path, progress=False)
    return path


def test_parity_run_sparsifies_after_memorisation(parity_run, capsys):
    assert main([str(parity_run), "--no-progress", "--n-random", "5", "--tsne-points", "120"]) == 0
    out = capsys.readouterr().out
    assert "effective sparsity" in out and "->" in out and "faithfulness" in out
    d = parity_run / "analyses"
    for name in ("sparsity.json", "sparsity.png", "sparsity_kde.png", "sparsity_tsne.png"):
        assert (d / name).is_file(), name
    res = json.loads((d / "sparsity.json").read_text())
    h = res["headline"]
    steps = res["steps"]
    assert res["layer"] == "layers.0" and res["d_mlp"] == 64 and len(res["effective_sparsity"]) == len(steps)
    assert h["effective_sparsity_last"] < h["effective_sparsity_mem"]  # the generalising circuit is sparser
    assert h["faithfulness_last"] >= 0.95 > h["random_faithfulness_last"]
    assert res["rule"] == "merrill2023" and min(res["effective_sparsity"]) >= 1  # never the empty network
    # Merrill et al.'s faithfulness: the final circuit at every checkpoint; at the last one it is that step's own
    assert res["final_circuit_size"] == res["effective_sparsity"][-1]
    assert res["final_circuit_faithfulness"][-1] == res["faithfulness"][-1]
    assert len(res["final_circuit_faithfulness"]) == len(steps)
    assert h["final_circuit_random_faithfulness_last"] < 0.95
    assert "final" in out and "Merrill et al." in out
    assert res["full_train_acc"][-1] == 1.0
    assert set(res["spectral_norms"]) == {"layers.0.W_in", "W_U"}
    assert len(res["neuron_norms"]) == len(steps) and len(res["neuron_norms"][0]) == 64
    assert set(res["tsne"]) == set(res["kde"]["density"]) and str(steps[0]) in res["tsne"]
    panel = res["tsne"][str(steps[-1])]
    assert len(panel["xy"]) == 120 and set(panel["classes"]) <= {0, 1, 2, 3}
    assert res["class_separation"][-1] > res["class_separation"][0]  # hidden units cluster by the two bits


def test_transformer_run(tmp_path, capsys):
    path = tmp_path / "tr"
    train(tiny_config(steps=30), path, progress=False)
    assert main([str(path), "--no-progress", "--n-random", "3", "--no-tsne"]) == 0
    res = json.loads((path / "analyses" / "sparsity.json").read_text())
    assert res["hook"] == "blocks.0.mlp.hook_post" and res["d_mlp"] == 32 and res["tsne"] == {}
    assert "blocks.0.attn.W_Q" in res["spectral_norms"] and len(res["spectral_norms"]["blocks.0.attn.W_Q"][0]) == 2


def _one_line_exit_2(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]


def test_bad_input(tmp_path, parity_run, capsys):
    _one_line_exit_2(capsys, [str(tmp_path / "nothing")], "no such run directory")
    (tmp_path / "plain").mkdir()
    _one_line_exit_2(capsys, [str(tmp_path / "plain")], "not a run directory")
    _one_line_exit_2(capsys, [str(parity_run), "--tsne-steps", "7"], "no checkpoint at step")
    _one_line_exit_2(capsys, [str(parity_run), "--layer", "2"], "out of range")
    with pytest.raises(SystemExit) as e:
        main([str(parity_run), "--bogus"])
    assert e.value.code == 2


def test_corrupt_checkpoint_exits_2_and_keeps_earlier_results(tmp_path, capsys):
    path = tmp_path / "r"
    train(tiny_parity(steps=40, stop_after_gen=-1), path, progress=False)
    assert main([str(path), "--no-progress", "--n-random", "2", "--no-tsne"]) == 0
    before = (path / "analyses" / "sparsity.json").read_bytes()
    ckpt = sorted((path / "ckpt").iterdir())[1]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    _one_line_exit_2(capsys, [str(path), "--no-progress", "--no-tsne"], ckpt.name)
    assert (path / "analyses" / "sparsity.json").read_bytes() == before


def test_nan_weights_and_garbage_files_exit_2_and_write_nothing(tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    good = tmp_path / "good"
    train(tiny_parity(steps=20, stop_after_gen=-1), good, progress=False)
    for damage, words in (("nan", "NaN"), ("summary", "summary.json"), ("split", "split.json")):
        path = Path(shutil.copytree(good, tmp_path / damage))
        if damage == "nan":
            ckpt = sorted((path / "ckpt").iterdir())[-1]
            w = load_file(ckpt)
            w[next(iter(w))][:] = float("nan")
            save_file(w, ckpt)
        else:
            (path / f"{damage}.json").write_text("{")
        _one_line_exit_2(capsys, [str(path), "--no-progress", "--no-tsne"], words)
        assert not (path / "analyses").exists()


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_option_defaults_are_the_commands(tmp_path):
    from analyses.api import options_from
    from analyses.sparsity import SparsityOptions, make_parser
    from training.errors import ConfigError

    args = make_parser().parse_args([str(tmp_path)])
    assert options_from(SparsityOptions, args, tsne_steps=None, tsne=True, progress=True) == SparsityOptions()
    with pytest.raises(ConfigError, match="--tsne-points"):
        SparsityOptions(tsne_points=5)


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    import interp
    from analyses import sparsity
    from tests.analyses.golden import check_api_result, copy_fixture

    run = copy_fixture("runs/add", tmp_path)
    res = sparsity.analyse(interp.load_run(run), sparsity.SparsityOptions(n_random=3, tsne=False, progress=False))
    assert isinstance(res, sparsity.SparsityResult) and res.steps == [0, 20, 40, 60, 80, 800]
    assert len(res.effective_sparsity) == len(res.steps) and res.tsne == {}
    assert res.headline["last_step"] == 800 and res.final_circuit_size == res.effective_sparsity[-1]
    check_api_result(res, run, "sparsity", "runs/add")


def test_command_writes_the_json_it_wrote_before(tmp_path):
    from analyses import sparsity
    from tests.analyses.golden import check_command

    assert check_command("sparsity", "runs/add", sparsity.SparsityResult, tmp_path, sparsity.load).rule == "merrill2023"


@pytest.mark.parametrize("steps, target, want", [([0, 10, 20], 5, 10), ([0, 10, 20], 10, 10), ([0, 10, 20], 25, 20),
                                                 ([0, 10, 20], None, None), ([], 3, None)])
def test_first_at_or_after_never_picks_an_earlier_checkpoint(steps, target, want):
    from analyses.sparsity import first_at_or_after

    assert first_at_or_after(steps, target) == want  # 5 -> 10, where the closest (Run.nearest_step) would be 0
