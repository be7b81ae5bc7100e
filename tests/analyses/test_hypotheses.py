"""`python -m analyses.hypotheses SWEEP_DIR` on sweeps with known outcomes."""

import json

import pytest

from analyses.hypotheses import main, summarise


def fake_sweep(path, grid, outcomes, budget=1000):
    """A sweep directory whose runs' summaries hold the given (S_mem, S_gen) per (value, seed)."""
    (name, values), = grid.items()
    runs = []
    for v in values:
        for seed, (s_mem, s_gen) in enumerate(outcomes[v]):
            d = f"{name}={v}_seed={seed}"
            (path / d).mkdir(parents=True)
            # finished = summary at the configured steps (rundir.run_finished reads both files)
            (path / d / "config.json").write_text(json.dumps({"train": {"steps": budget}}))
            (path / d / "summary.json").write_text(json.dumps({"S_mem": s_mem, "S_gen": s_gen, "steps": budget,
                                                               "final": {"test_acc": 1.0 if s_gen else 0.6}}))
            runs.append({"name": d, "dir": d, "params": {name: v}, "seed": seed, "status": "done", "budget": budget})
    spec = {"preset": "parity-blog", "overrides": {}, "grid": grid, "seeds": [0, 1], "seed_fields": ["seed"]}
    (path / "sweep.json").write_text(json.dumps({"spec": spec, "runs": runs}))


OUTCOMES = {0.0: [(100, 500), (110, 700)], 0.1: [(100, 900), (120, None)], 0.2: [(100, None), (100, None)],
            0.3: [(90, None), (100, None)]}


def test_threshold_table_and_plot(tmp_path, capsys):
    fake_sweep(tmp_path, {"label_noise": [0.0, 0.1, 0.2, 0.3]}, OUTCOMES)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "label_noise >= 0.2" in out and "last generalising value 0.1" in out
    res = json.loads((tmp_path / "analyses" / "hypotheses.json").read_text())
    assert (tmp_path / "analyses" / "hypotheses.png").is_file()
    assert res["threshold"] == 0.2 and res["last_generalising_value"] == 0.1 and res["fastest_value"] == 0.0
    p = {q["value"]: q for q in res["points"]}
    assert p[0.0]["S_gen_median"] == 600 and p[0.0]["after_mem_median"] == 495 and p[0.1]["generalised"] == 1
    assert p[0.3]["S_gen_median"] is None and p[0.3]["runs"] == 2


@pytest.mark.parametrize("gen, threshold", [([True, True, True], None), ([True, False, True], None),
                                            ([False, True, False], 3), ([False, False, False], 1)])
def test_threshold_is_the_start_of_the_trailing_block_that_never_generalises(gen, threshold):
    rows = [{"value": v, "S_mem": 10, "S_gen": 50 if g else None, "switch_step": None, "budget": 100}
            for v, g in zip([1, 2, 3], gen)]
    assert summarise(rows, [1, 2, 3])["threshold"] == threshold


def test_a_sweep_whose_smallest_value_never_generalises_reports_the_lower_threshold(tmp_path, capsys):
    # the frac=0.3,0.5,0.7 sweep of `default`: neither 0.3 run generalised within 1500 steps. This printed
    # "threshold: not reached (some run generalised within 1500 steps at every value)".
    outcomes = {0.3: [(80, None), (90, None)], 0.5: [(70, 900), (75, 1000)], 0.7: [(60, 500), (60, 550)]}
    fake_sweep(tmp_path, {"frac": [0.3, 0.5, 0.7]}, outcomes, budget=1500)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not reached" not in out
    assert "no run generalises within 1500 steps for frac <= 0.3 (first generalising value 0.5)" in out
    res = json.loads((tmp_path / "analyses" / "hypotheses.json").read_text())
    assert res["threshold"] is None and res["threshold_below"] == 0.3


def test_an_unfinished_run_with_a_summary_is_not_counted(tmp_path):
    # an analysis may write summary.json into a run still training: only a run at its configured steps counts
    fake_sweep(tmp_path, {"label_noise": [0.0, 0.1, 0.2, 0.3]}, OUTCOMES)
    d = tmp_path / "label_noise=0.3_seed=0"
    (d / "summary.json").write_text(json.dumps({"S_mem": 5, "S_gen": 7, "steps": 400}))
    assert main([str(tmp_path)]) == 0
    res = json.loads((tmp_path / "analyses" / "hypotheses.json").read_text())
    p = {q["value"]: q for q in res["points"]}
    assert p[0.3]["runs"] == 1 and p[0.3]["generalised"] == 0 and res["threshold"] == 0.2


def test_bad_input(tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    grid = {"lr": [0.1], "wd": [0.0]}
    spec = {"preset": "default", "overrides": {}, "grid": grid, "seeds": [0], "seed_fields": ["seed"]}
    (tmp_path / "sweep.json").write_text(json.dumps({"spec": spec, "runs": []}))
    assert main([str(tmp_path)]) == 2
    assert "choose one with --param" in capsys.readouterr().err
    assert main([str(tmp_path), "--param", "lr"]) == 2
    assert "no finished runs" in capsys.readouterr().err
    (tmp_path / "sweep.json").write_text("{")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable sweep index" in err[0]


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    from analyses import hypotheses
    from analyses.api import options_from
    from tests.analyses.golden import check_api_result, copy_fixture

    args = hypotheses.make_parser().parse_args([str(tmp_path)])
    assert options_from(hypotheses.HypothesesOptions, args, progress=False) == hypotheses.HypothesesOptions()
    where = copy_fixture("sweeps/wd", tmp_path)
    res = hypotheses.analyse(where)
    assert isinstance(res, hypotheses.HypothesesResult) and res.param == "wd" and res.threshold == 0.2
    assert res.last_generalising_value == 0.1 and res.fastest_value == 0.0 and len(res.rows) == 8
    check_api_result(res, where, "hypotheses", "sweeps/wd")


def test_command_writes_the_json_it_wrote_before(tmp_path):
    from analyses import hypotheses
    from tests.analyses.golden import check_command

    assert check_command("hypotheses", "sweeps/wd", hypotheses.HypothesesResult, tmp_path,
                         hypotheses.load).threshold == 0.2
