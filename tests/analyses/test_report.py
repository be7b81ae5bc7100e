"""`python -m analyses.report`: the smoke report has every section, well-formed, in report.json / report.md /
index.html; --only runs only what it names; a second invocation retrains nothing; bad input is one line and exit
2 with nothing written; the gpu plan names the seeds' own presets; absent work shows as "not run" and lights up
once it lands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analyses import report
from analyses.report.checks import verdict
from analyses.report.common import VERDICTS
from analyses.report.sections.operations import min_fraction_any, min_fraction_from
from analyses.report.sections.optimisers import optimisers_settings
from analyses.report.sections.parity import decline_fall, decline_peak

NOT_LANDED = "not landed"


def metrics_mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("metrics.jsonl")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    out = root / "site"
    assert report.main(["--scale", "smoke", "--root", str(root / "runs"), "--out", str(out), "--workers", "1"]) == 0
    return root / "runs", out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_every_section_is_present_and_well_formed(smoke):
    root, out, rep = smoke
    assert [s["name"] for s in rep["sections"]] == report.NAMES
    assert rep["scale"] == "smoke"
    md, page = (out / "report.md").read_text(), (out / "index.html").read_text()
    for s in rep["sections"]:
        assert s["verdict"] in VERDICTS, s
        assert all(u["claim"].strip() and u["source"] and u["why"] for u in s["untested"])
        assert s["command"].startswith(f"python -m analyses.report --scale smoke --only {s['name']}")
        assert s["scale"] == "smoke" and s["wall_s"] >= 0
        if s["verdict"] == "not run":  # only what has not landed yet may be missing; nothing may have failed
            assert NOT_LANDED in s["reason"], s["reason"]
            continue
        assert s["figures"] and s["checks"] and s["settings"]["sweeps"] and s["deviations"] and s["seeds"]
        for f in s["figures"]:
            assert (out / f["file"]).is_file() and (out / f["file"]).stat().st_size > 0 and f["caption"]
            assert f"src='{f['file']}'" in page and f"]({f['file']})" in md
        assert verdict(s["checks"]) == s["verdict"]
        assert all(c["claim"] and c["rule"] and c["source"] and "ok" in c for c in s["checks"])
        assert f'id="{s["name"]}"' in md and f"id='{s['name']}'" in page
        assert s["explore"]  # analyses.explore's page of each of the section's sweeps, linked from index.html
        for x in s["explore"]:
            assert (out / x["href"]).resolve().is_file() and f"href='{x['href']}'" in page
        assert s["training"]["runs_trained"] == s["runs"]["trained"] and s["training"]["wall_s"] > 0
        for c in s["checks"]:  # the rule history is in the generated report, not only in the JSON
            for h in c["history"]:
                assert h["rule"] in md and (not h["why"] or h["why"] in md)
    assert re.search(r"src=['\"]https?:", page) is None  # static: no external assets
    assert root.joinpath("smoke", "frac", "frac", "sweep.json").is_file()


@pytest.mark.slow
def test_no_check_holds_on_runs_that_learned_nothing(smoke):
    """The smoke scale trains every section for 20-60 steps: nothing generalises, so no check may hold on any seed
    under the rule in force (a check that cannot be evaluated counts as not holding)."""
    _, _, rep = smoke
    ran = [s for s in rep["sections"] if s["verdict"] != "not run"]
    assert len(ran) >= 8
    for s in ran:
        assert s["verdict"] == "not", (s["name"], [(c["id"], c["per_seed"]) for c in s["checks"] if c["ok"]])
        for c in s["checks"]:
            assert c["k"] == 0, (s["name"], c["id"], c["per_seed"])


@pytest.mark.slow
def test_only_and_a_second_run_reuses_the_runs(smoke, tmp_path):
    root, out, rep = smoke
    before = metrics_mtimes(root)
    assert before
    out2 = tmp_path / "only"
    assert report.main(["--scale", "smoke", "--root", str(root), "--out", str(out2), "--only", "frac", "progress",
                        "--workers", "1"]) == 0
    assert metrics_mtimes(root) == before  # no run trained again
    rep2 = json.loads((out2 / "report.json").read_text())
    assert [s["name"] for s in rep2["sections"]] == ["frac", "progress"]
    assert [s["runs"] for s in rep2["sections"]] == [{"reused": 2, "trained": 0}, {"reused": 1, "trained": 0}]
    assert {s["name"]: s["runs"] for s in rep["sections"] if "runs" in s}["frac"] == {"reused": 0, "trained": 2}
    # the training wall time is the one recorded when the runs were trained, not the re-use's
    assert [s["training"] for s in rep2["sections"]] == [s["training"] for s in rep["sections"]
                                                         if s["name"] in ("frac", "progress")]
    old = {s["name"]: s for s in rep["sections"]}
    for s in rep2["sections"]:  # the same runs give the same numbers
        assert s["checks"] == old[s["name"]]["checks"]
        assert s["tables"] == old[s["name"]]["tables"]


@pytest.mark.parametrize("argv, says", [
    (["--only", "nosuch"], "invalid choice"),
    (["--scale", "huge"], "invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit) as e:
        report.main([*argv, "--root", str(tmp_path / "runs")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_out_naming_a_file_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert report.main(["--scale", "smoke", "--root", str(tmp_path / "runs"), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() and (tmp_path / "file").read_text() == "x"


def test_gpu_dry_run_plans_the_seeds_settings_and_writes_nothing(tmp_path, capsys):
    assert report.main(["--scale", "gpu", "--dry-run", "--root", str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    for preset in ("add97-transformer", "add97-lstm", "add97-mlp", "power2022-s5", "chughtai-s5", "nanda2023",
                   "omnigrok-teacher"):
        assert preset in text
    assert "seeds [0, 1, 2, 3, 4]" in text and "'steps': 100000" in text and "seeds [0, 1, 2]" in text
    assert not (tmp_path / "runs").exists()


def test_the_optimisers_section_reads_the_accelerator_sweep_with_its_methods(monkeypatch):
    from analyses.report.common import SectionSkipped
    from training import sweep

    st = optimisers_settings("cpu")["sweeps"]
    assert list(st) == ["accel-budget"] and st["accel-budget"].variants == sweep.SWEEPS["accel-budget"].variants
    assert st["accel-budget"].seeds == [0, 1, 2]
    smoke = optimisers_settings("smoke")["sweeps"]["accel-budget"]
    assert smoke.seeds == [0] and smoke.overrides["steps"] == 20 and len(smoke.variants) == 3
    assert list(smoke.variants)[0] == "adamw" and all(len(v) <= 2 for v in smoke.grid.values())
    for name in ("accel", "accel-budget", "accel-nanda"):
        monkeypatch.delitem(sweep.SWEEPS, name)
    with pytest.raises(SectionSkipped, match=NOT_LANDED):
        optimisers_settings("cpu")


def test_the_spectral_decline_readings():
    steps = [0, 10, 20, 40, 80, 160, 320, 640]
    norm = [1.0, 2.0, 3.0, 2.5, 1.5, 1.02, 1.0, 1.01]
    assert decline_peak(steps, norm) == (20, 160)  # from the maximum to within 5% of the minimum after it
    assert decline_fall(steps, norm) == (40, 160)  # 10% and 90% of the fall from 3 to 1 (the reading given up)


def test_min_fraction_definitions():
    assert min_fraction_from({0.3: False, 0.5: True, 0.7: False}) is None  # a larger fraction failed
    assert min_fraction_any({0.3: False, 0.5: True, 0.7: False}) == 0.5
    assert min_fraction_from({0.3: False, 0.5: True, 0.7: True}) == 0.5
    assert min_fraction_from({0.3: False, 0.7: False}) is None


def test_md_naming_a_folder_is_refused(tmp_path, capsys):
    assert report.main(["--scale", "smoke", "--root", str(tmp_path / "runs"), "--md", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_seed_004_presets_build():
    from training.presets import get_preset
    from training.run import check

    for name in ("add97-transformer", "add97-lstm", "add97-mlp", "add-transformer-cpu", "add-lstm-cpu",
                 "add-mlp-cpu"):
        cfg = get_preset(name)
        check(cfg)
        assert cfg.task.task == "add" and cfg.model.dropout == 0.1 and cfg.optim.batch_size == 512


@pytest.mark.slow
def test_the_optimisers_section_runs_on_the_accelerator_sweep(tmp_path):
    out, s = smoke_section(tmp_path, "optimisers")
    assert s["name"] == "optimisers" and s["verdict"] in VERDICTS and s["verdict"] != "not run"
    assert s["runs"] == {"reused": 0, "trained": 6}  # smoke: 3 methods x 2 fractions x 1 seed
    rows = s["tables"][0]["rows"]
    assert len(rows) == 6 and {r[1] for r in rows} == set(list(sweep_methods())[:3])
    assert all((out / f["file"]).is_file() for f in s["figures"]) and len(s["figures"]) == 2


def smoke_section(tmp_path, name: str) -> tuple:
    """(the report's folder, its one section) after `--scale smoke --only NAME` on one worker."""
    out = tmp_path / "site"
    assert report.main(["--scale", "smoke", "--only", name, "--root", str(tmp_path / "runs"), "--out", str(out),
                        "--workers", "1"]) == 0
    (s,) = json.loads((out / "report.json").read_text())["sections"]
    return out, s


def sweep_methods():
    from training.sweeps.spec import SWEEPS

    return SWEEPS["accel-budget"].variants


@pytest.mark.slow
def test_the_sequence_section_trains_and_analyses_the_sequence_presets(tmp_path):
    out, s = smoke_section(tmp_path, "sequence")
    assert s["verdict"] in VERDICTS and s["verdict"] != "not run", s.get("reason")
    (runs,) = [ev["runs"] for ev in s["evidence"].values()]
    assert list(runs) == ["digits5-infinite"]
    assert set(runs["digits5-infinite"]["changes"]) == {"s5", "s4", "s3", "s2", "s1", "s0"}
    assert s["runs"] == {"reused": 0, "trained": 1}
    files = [f["file"] for f in s["figures"]]
    assert "sequence_curves.png" in files and all((out / f).is_file() for f in files)
