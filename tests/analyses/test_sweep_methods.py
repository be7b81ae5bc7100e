"""`python -m analyses.sweep DIR` on a sweep with methods (variants): grouping by method (and grid point), the
speed-up over plain AdamW (bounded when AdamW never generalised), runs that never generalise shown as such, the
accuracy-against-fraction figure of a budget sweep, and bad input (unknown method, no methods) one line exit 2."""

import json

import pytest

from analyses.sweep import main

VARIANTS = {"adamw": {}, "fast": {"lr": 0.01}, "never": {"wd": 0.0}, "rarely": {"wd": 0.1}}


def fake_method_sweep(path, outcomes, grid=None, budget=1000, budgets=None):
    """A sweep directory with methods: outcomes {(method, grid value or None): [(S_mem, S_gen, final acc)]};
    budgets: a method's own step budget where it differs from `budget`."""
    runs = []
    for (m, v), seeds in outcomes.items():
        b = (budgets or {}).get(m, budget)
        for seed, (s_mem, s_gen, acc) in enumerate(seeds):
            params = {"method": m, **({"frac": v} if v is not None else {})}
            d = "_".join(f"{k}={x}" for k, x in params.items()) + f"_seed={seed}"
            (path / d).mkdir(parents=True)
            (path / d / "config.json").write_text(json.dumps({"train": {"steps": b}}))
            (path / d / "summary.json").write_text(json.dumps({"S_mem": s_mem, "S_gen": s_gen, "steps": b,
                                                               "final": {"test_acc": acc}}))
            runs.append({"name": d, "dir": d, "params": params, "seed": seed, "status": "done", "budget": b,
                         "method": m})
    spec = {"preset": "default", "overrides": {}, "grid": grid or {}, "seeds": [0, 1, 2], "seed_fields": ["seed"],
            "variants": VARIANTS}
    (path / "sweep.json").write_text(json.dumps({"spec": spec, "runs": runs}))


SEEDS = {("adamw", None): [(75, 600, 1.0), (80, 500, 1.0), (70, 550, 0.999)],
         ("fast", None): [(50, 100, 1.0), (60, 120, 1.0), (55, None, 0.7)],
         ("never", None): [(90, None, 0.2), (100, None, 0.3), (None, None, 0.1)],
         ("rarely", None): [(90, 50, 1.0), (100, None, 0.3), (90, None, 0.1)]}


def test_groups_by_method_with_speedups_and_never_generalising_runs(tmp_path, capsys):
    fake_method_sweep(tmp_path, SEEDS)
    assert main([str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| fast | 1000 | 2/3 | 55 | 110 | [100, 120] | 5.00x | 1.000 [0.700, 1.000] |" in out
    assert "| adamw | 1000 | 3/3 | 75 | 550 | [500, 600] | 1.00x |" in out
    assert "| never | 1000 | 0/3 | 95 | - | - | < 0.6x |" in out  # at least 1000 steps: slower than adamw
    assert "| rarely | 1000 | 1/3 | 90 | 50 | [50, 50] | < 0.6x |" in out  # one seed of three: only the bound
    d = tmp_path / "analyses"
    assert {p.name for p in d.iterdir()} == {"sweep_by_method.json", "sweep_by_method.md", "sweep_by_method.png"}
    res = json.loads((d / "sweep_by_method.json").read_text())
    g = {x["method"]: x for x in res["groups"]}
    assert res["reference"] == "adamw" and res["methods"] == list(VARIANTS)
    assert (g["fast"]["generalised"], g["fast"]["runs"], g["fast"]["S_gen"]["median"]) == (2, 3, 110)
    assert g["never"]["S_gen"]["median"] is None and g["never"]["speedup_bound"] == "<"
    assert g["fast"]["speedup_bound"] is None and g["fast"]["speedup"] == 5.0
    assert g["never"]["final_test_acc"]["median"] == 0.2
    assert "| never |" in (d / "sweep_by_method.md").read_text()


def test_a_reference_that_never_generalised_bounds_the_speedup(tmp_path, capsys):
    fake_method_sweep(tmp_path, {("adamw", None): [(75, None, 0.1)], ("fast", None): [(50, 250, 1.0)]})
    assert main([str(tmp_path), "--no-progress", "--methods", "fast,adamw"]) == 0
    assert "| fast | 1000 | 1/1 | 50 | 250 | [250, 250] | > 4.0x |" in capsys.readouterr().out


def test_a_reference_with_a_longer_budget_bounds_the_methods_that_did_not_generalise_within_theirs(tmp_path, capsys):
    """As accel-nanda: each method has a short budget, adamw runs until it generalises. A method that mostly did not
    generalise within its 2000 steps is at most S_gen(adamw) / 2000 times faster; one that did gets the ratio."""
    outcomes = {("adamw", None): [(150, 7000, 1.0), (150, 8000, 1.0), (150, 6000, 1.0)],
                ("fast", None): [(150, 700, 1.0), (150, 800, 1.0), (150, 900, 1.0)],
                ("never", None): [(150, None, 0.3), (150, None, 0.5), (150, 1900, 1.0)]}
    fake_method_sweep(tmp_path, outcomes, budget=2000, budgets={"adamw": 15000})
    assert main([str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| adamw | 15000 | 3/3 | 150 | 7000 | [6000, 8000] | 1.00x |" in out
    assert "| fast | 2000 | 3/3 | 150 | 800 | [700, 900] | 8.75x |" in out
    assert "| never | 2000 | 1/3 | 150 | 1900 | [1900, 1900] | < 3.5x |" in out
    res = json.loads((tmp_path / "analyses" / "sweep_by_method.json").read_text())
    assert {g["method"]: g["budget"] for g in res["groups"]} == {"adamw": 15000, "fast": 2000, "never": 2000}


def test_a_budget_sweep_draws_final_accuracy_against_the_fraction_per_method(tmp_path, capsys):
    outcomes = {(m, f): [(50, s, a)] for m, rows in {"adamw": [(0.3, None, 0.2), (0.5, 900, 1.0)],
                                                      "fast": [(0.3, 400, 1.0), (0.5, 200, 1.0)]}.items()
                for f, s, a in rows}
    fake_method_sweep(tmp_path, outcomes, grid={"frac": [0.3, 0.5]}, budget=1800)
    assert main([str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.index("| **frac=0.3** |") < out.index("| fast | 1800 | 1/1 | 50 | 400 | [400, 400] | > 4.5x |")
    assert "| fast | 1800 | 1/1 | 50 | 200 | [200, 200] | 4.50x |" in out
    d = tmp_path / "analyses"
    assert (d / "sweep_by_method_frac.png").stat().st_size > 0
    res = json.loads((d / "sweep_by_method.json").read_text())
    acc = {(g["method"], g["params"]["frac"]): g["final_test_acc"]["median"] for g in res["groups"]}
    assert acc == {("adamw", 0.3): 0.2, ("fast", 0.3): 1.0, ("adamw", 0.5): 1.0, ("fast", 0.5): 1.0}


def test_by_field_treats_the_method_as_a_field(tmp_path, capsys):
    fake_method_sweep(tmp_path, SEEDS)
    assert main([str(tmp_path), "--no-progress", "--by", "field"]) == 0
    assert "| 'fast' | 2/3 | 110 |" in capsys.readouterr().out
    assert (tmp_path / "analyses" / "sweep_method.png").exists()  # --by field: named after the field


@pytest.mark.parametrize("methods, args, words", [
    (True, ["--methods", "adamw,nope"], "unknown method(s) nope"),
    (True, ["--methods", ","], "unknown method(s) (none given)"),
    (True, ["--fit", "exp"], "--field and --fit are for --by field"),
    (False, ["--by", "method"], "has no methods"),
    (False, ["--methods", "adamw"], "--methods is for --by method"),
    (True, ["--by", "speed"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, methods, args, words):
    if methods:
        fake_method_sweep(tmp_path, SEEDS)
    else:
        from tests.analyses.test_hypotheses import fake_sweep

        fake_sweep(tmp_path, {"frac": [0.5]}, {0.5: [(50, 100)]})
    try:
        code = main([str(tmp_path), "--no-progress", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "analyses").exists()


# --- the Python API, and the JSON it writes against the command's before the API --------------------------------


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    from analyses import sweep_methods
    from tests.analyses.golden import check_api_result, copy_fixture

    where = copy_fixture("sweeps/methods", tmp_path)
    res = sweep_methods.analyse(where, sweep_methods.MethodsOptions(progress=False))
    assert isinstance(res, sweep_methods.MethodsResult) and res.methods == list(VARIANTS)
    speed = {g["method"]: (g["speedup"], g["speedup_bound"]) for g in res.groups}
    assert speed["adamw"] == (1.0, None) and speed["fast"] == (pytest.approx(550 / 110), None)
    assert speed["never"] == (pytest.approx(550 / 1000), "<")  # never within its budget: at most 550 / 1000
    check_api_result(res, where, "sweep", "sweeps/methods")
    only = sweep_methods.analyse(where, sweep_methods.MethodsOptions(methods="fast,adamw", progress=False))
    assert only.methods == ["adamw", "fast"] and {r["params"]["method"] for r in only.rows} == {"adamw", "fast"}


def test_command_writes_the_json_it_wrote_before(tmp_path):
    from analyses import sweep_methods
    from tests.analyses.golden import check_command

    assert check_command("sweep", "sweeps/methods", sweep_methods.MethodsResult, tmp_path,
                         sweep_methods.load).reference == "adamw"
