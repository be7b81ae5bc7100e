"""`python -m analyses.sweep SWEEP_DIR`: statistics, thresholds in both directions and the exp fit on synthetic
sweep indexes with known outcomes, and the whole command on a tiny real sweep."""

import json
import math

import pytest

from analyses.sweep import main
from analyses.sweep_stats import field_series
from analyses.sweep_stats import fit_exp, spread, thresholds
from tests.analyses.test_hypotheses import fake_sweep


def rows_for(outcomes, field="frac", budget=1000, extra=None):
    """Rows as analyses.sweep_stats.collect returns them: {value: [S_gen or None per seed]}."""
    return [{"params": {field: v, **(extra or {})}, "seed": s, "finished": True, "budget": budget, "S_mem": 50,
             "S_gen": g, "switch_step": None, "diverged_at": None, "final_test_acc": 1.0 if g else 0.3}
            for v, gens in outcomes.items() for s, g in enumerate(gens)]


@pytest.mark.parametrize("gen, below, above", [
    ({0.2: [None, None], 0.3: [None, None], 0.4: [800, None], 0.5: [500, 600]}, 0.3, None),
    ({0.1: [100], 0.2: [200], 0.3: [None], 1.0: [None]}, None, 0.3),
    ({0.1: [None], 0.2: [200], 0.3: [None]}, 0.1, 0.3),
    ({0.1: [100], 0.2: [None], 0.3: [300]}, None, None),
    ({0.1: [100], 0.2: [200]}, None, None),
])
def test_thresholds_in_both_directions(gen, below, above):
    (s,) = field_series(rows_for(gen), "frac", list(gen))
    assert s["thresholds"]["below"] == below and s["thresholds"]["above"] == above


def test_thresholds_ignore_values_without_finished_runs_and_say_when_nothing_generalised():
    rows = rows_for({0.2: [None], 0.3: [None]}) + [{**rows_for({0.1: [10]})[0], "finished": False}]
    (s,) = field_series(rows, "frac", [0.1, 0.2, 0.3])
    th = s["thresholds"]
    assert th["none_generalised"] and th["below"] == 0.3 and th["above"] == 0.2
    assert s["points"][0]["unfinished"] == 1 and s["points"][0]["runs"] == 0
    assert thresholds([]) == {"below": None, "above": None, "none_generalised": False, "all_generalised": False}


def test_exp_fit_recovers_known_a_and_b():
    a, b = 3.0e4, -6.5
    xs = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    fit = fit_exp(xs, [a * math.exp(b * x) for x in xs])
    assert fit["ok"] and fit["a"] == pytest.approx(a, rel=1e-9) and fit["b"] == pytest.approx(b, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["per_step_decrease"] == pytest.approx(math.exp(0.065) - 1)  # 6.7% more steps per 0.01 less
    assert not fit_exp([0.5], [100])["ok"] and not fit_exp([0.5, 0.5], [100, 120])["ok"]


def test_exp_fit_runs_on_the_medians_of_the_generalising_runs():
    a, b = 2.0e4, -5.0
    gen = {x: [a * math.exp(b * x) * f for f in (0.9, 1.0, 1.2)] for x in (0.4, 0.5, 0.6)}
    gen[0.2] = [None, None, None]  # no run generalised: not in the fit
    gen[0.3] = [None, a * math.exp(b * 0.3), None]  # one did: its S_gen is the median
    (s,) = field_series(rows_for(gen), "frac", list(gen), fit="exp")
    assert s["fit"]["ok"] and s["fit"]["n"] == 4
    assert s["fit"]["a"] == pytest.approx(a, rel=1e-9) and s["fit"]["b"] == pytest.approx(b, rel=1e-9)


def test_spread_and_one_series_per_combination_of_the_other_fields():
    assert spread([4, 1, 3, 2]) == {"median": 2.5, "min": 1, "max": 4, "q1": 1.75, "q3": 3.25}
    assert spread([])["median"] is None
    rows = rows_for({0.3: [None], 0.5: [100]}, extra={"lr": 0.1}) + rows_for({0.3: [50], 0.5: [60]},
                                                                               extra={"lr": 0.2})
    series = field_series(rows, "frac", [0.3, 0.5])
    assert [s["key"] for s in series] == ["lr=0.1", "lr=0.2"]
    assert series[0]["thresholds"]["below"] == 0.3 and series[1]["thresholds"]["below"] is None


FRAC = {0.2: [(60, None), (70, None), (65, None)], 0.3: [(60, None), (60, 2400), (60, None)],
        0.5: [(50, 900), (55, 1000), (50, 1100)], 0.7: [(40, 500), (45, 450), (40, 520)]}


def test_command_writes_table_png_json_and_prints_the_summary(tmp_path, capsys):
    fake_sweep(tmp_path, {"frac": list(FRAC)}, FRAC, budget=3000)
    assert main([str(tmp_path), "--fit", "exp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no run generalises within 3000 steps at frac <= 0.2" in out and "not reached" not in out
    assert "| 0.5 | 3/3 | 1000 | [900, 1100] | 950-1050 | 50 |" in out
    assert "| 0.3 | 1/3 | 2400 |" in out and "% steps per 0.01 less frac" in out
    d = tmp_path / "analyses"
    assert {p.name for p in d.iterdir()} == {"sweep_frac.json", "sweep_frac.png", "sweep_frac.md"}
    res = json.loads((d / "sweep_frac.json").read_text())
    (s,) = res["series"]
    assert res["field"] == "frac" and s["thresholds"]["below"] == 0.2 and s["fit"]["ok"] and s["fit"]["b"] < 0
    assert [p["generalised"] for p in s["points"]] == [0, 1, 3, 3]
    assert "| frac |" in (d / "sweep_frac.md").read_text()


@pytest.mark.parametrize("make, args, words", [
    (None, [], "no such sweep directory"),
    ("empty", [], "not a sweep directory"),
    ("two", [], "choose one with --field"),
    ("two", ["--field", "wd"], "--field wd: not swept here"),
    ("two", ["--field", "lr"], "no finished runs"),
    ("garbage", [], "unreadable sweep index"),
    ("badruns", [], "unreadable sweep index"),
    ("empty", ["--fit", "poly"], "invalid choice"),
    ("empty", ["--fi", "exp"], "unrecognized arguments"),  # no prefix matching
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, make, args, words):
    d = tmp_path / "sw"
    if make is not None:
        d.mkdir()
    spec = {"preset": "default", "overrides": {}, "grid": {"lr": [0.1], "frac": [0.5]}, "seeds": [0]}
    if make == "two":
        (d / "sweep.json").write_text(json.dumps({"spec": spec, "runs": []}))
    elif make == "garbage":
        (d / "sweep.json").write_text("{")
    elif make == "badruns":
        (d / "sweep.json").write_text(json.dumps({"spec": spec, "runs": [{"dir": "x"}]}))
    before = sorted(p.name for p in d.iterdir()) if d.exists() else None
    try:
        code = main([str(d), *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert (sorted(p.name for p in d.iterdir()) if d.exists() else None) == before


@pytest.mark.slow  # spawns a worker process that imports torch
def test_on_a_tiny_real_sweep(tmp_path, capsys):
    from tests.training.test_sweep import TINY
    from training.sweeps.drive import sweep
    from training.sweeps.spec import SweepSpec

    out = tmp_path / "sw"
    index = sweep(SweepSpec("parity-blog", {"label_noise": [0.0, 0.2]}, [0, 1], {**TINY, "steps": 30}), out,
                  workers=1, progress=False, log=lambda s: None)
    assert all(e["status"] == "done" for e in index["runs"])
    assert main([str(out), "--no-progress"]) == 0
    res = json.loads((out / "analyses" / "sweep_label_noise.json").read_text())
    (s,) = res["series"]
    assert [(p["value"], p["runs"], p["unfinished"]) for p in s["points"]] == [(0.0, 2, 0), (0.2, 2, 0)]
    by_run = {(r["params"]["label_noise"], r["seed"]): r for r in res["rows"]}
    for e in index["runs"]:  # the numbers are the runs' own
        assert by_run[(e["params"]["label_noise"], e["seed"])]["S_mem"] == e.get("S_mem")
    assert (out / "analyses" / "sweep_label_noise.png").stat().st_size > 0


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_option_defaults_are_the_commands(tmp_path):
    from analyses.api import options_from
    from analyses.sweep import SweepOptions, make_parser
    from training.errors import ConfigError

    args = make_parser().parse_args([str(tmp_path)])
    assert options_from(SweepOptions, args, progress=True) == SweepOptions()
    with pytest.raises(ConfigError, match="--fit"):
        SweepOptions(fit="linear")


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    from analyses import sweep
    from tests.analyses.golden import check_api_result, copy_fixture

    where = copy_fixture("sweeps/wd", tmp_path)
    res = sweep.analyse(where, sweep.SweepOptions(fit="exp", progress=False))
    assert isinstance(res, sweep.SweepResult) and res.field == "wd" and res.fit == "exp"
    (s,) = res.series
    assert s["thresholds"]["above"] == 0.2 and [p["value"] for p in s["points"]] == [0.0, 0.1, 0.2, 0.3]
    check_api_result(res, where, "sweep", "sweeps/wd")
    # a sweep with methods gives the method view unless a field is asked for
    methods = sweep.analyse(copy_fixture("sweeps/methods", tmp_path), sweep.SweepOptions(progress=False))
    assert type(methods).__name__ == "MethodsResult" and methods.reference == "adamw"


def test_command_writes_the_json_it_wrote_before(tmp_path):
    from analyses import sweep
    from tests.analyses.golden import check_command

    assert check_command("sweep", "sweeps/wd", sweep.SweepResult, tmp_path,
                         lambda where: sweep.load(where, "wd")).series[0]["fit"]["ok"]
