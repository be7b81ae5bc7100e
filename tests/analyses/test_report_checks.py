"""The report's pre-registered checks, pinned both ways on synthetic evidence: no check holds on null evidence (runs
that learned nothing: flat curves; runs that memorised shuffled labels and never generalised), and every check
holds on a fixture built to satisfy its claim. Also: k/n seeds and the majority, the minimum evidence, the rule
history evaluated under every version, and the claims quoted verbatim from the seed documents."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest

from analyses import report
from analyses.report.sections import architectures as ra
from analyses.report.sections import frac as rf
from analyses.report.sections import operations as ro
from analyses.report.sections import optimisers as rz
from analyses.report.checks import SOURCES, CheckDef, Rule, evaluate, verdict
from training.sweeps.spec import METHOD

SECTIONS = {s.name: s for s in report.SECTIONS}

SEEDS3, SEEDS5 = [0, 1, 2], [0, 1, 2, 3, 4]


def seeds(ev: dict, which=SEEDS3) -> dict:
    return {s: copy.deepcopy(ev) for s in which}


def rows_for(pts, **extra):
    """Sweep rows (as analyses.sweep.read_run gives them) for every seed of SEEDS3."""
    return [{"params": {**p, **extra}, "seed": s, "finished": True, "budget": 3000, "S_mem": m, "S_gen": g,
             "final_test_acc": a} for s in SEEDS3 for p, m, g, a in pts]


# --- frac ------------------------------------------------------------------------------------------------------

FRACS = [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8]


def frac_ev(pts):
    return rf.frac_evidence(rows_for([({"frac": f}, m, g, None) for f, m, g in pts]), eval_every=5)


FRAC_POS = [
    (frac_ev([(f, 50 + 100 * f, None if f <= 0.3 else int(200 * math.exp(8 * (0.8 - f)))) for f in FRACS]),
     {"frac.exp", "frac.mem", "frac.sha"}),
    (frac_ev([(f, 50 + 100 * f, int(1000 * math.exp(37 * (0.4 - f)))) for f in (0.2, 0.25, 0.3, 0.35, 0.4)]),
     {"frac.local", "frac.exp"}),
    (frac_ev(list(zip([0.3, 0.4, 0.5, 0.6, 0.7], [400, 200, 100, 100, 100], [1200, 1000, 800, 400, 200]))),
     {"frac.peak"}),
]
FRAC_NULL = {"flat": frac_ev([(f, None, None) for f in FRACS]),
             "shuffled": frac_ev([(f, int(100 + 100 * f), None) for f in FRACS])}


# --- architectures ---------------------------------------------------------------------------------------------


def arch_ev(t, lstm, mlp):
    return ra.architectures_evidence({m: rows_for([({"frac": 0.5}, a, b, None)]) for m, (a, b) in
                                      zip(ra.MODELS, (t, lstm, mlp))})


ARCH_POS = [(arch_ev((100, 1500), (100, 400), (100, 300)), {"arch.sha.transformer", "arch.sha.lstm", "arch.sha.mlp"}),
            (arch_ev((100, 500), (100, None), (100, 150)), {"arch.hu"})]
ARCH_NULL = {"flat": arch_ev((None, None), (None, None), (None, None)),
             "shuffled": arch_ev((100, None), (120, None), (90, None))}

# --- operations ------------------------------------------------------------------------------------------------

OPS_FRACS = [0.3, 0.4, 0.5, 0.6, 0.7]


def ops_ev(start: dict[str, float | None]):
    pts = [({"task": op, "frac": f}, 100, 500 if lo is not None and f >= lo else None, None)
           for op, lo in start.items() for f in OPS_FRACS]
    return ro.operations_evidence(rows_for(pts), 59)


OPS_POS = [(ops_ev({"x+y mod 59": 0.3, "x-y mod 59": 0.4, "x/y mod 59": 0.4, "x-y mod 58": 0.4,
                    "x^2+y^2 mod 59": 0.6, "x^3+xy mod 59": None}), {"ops.order", "ops.primitive"})]
OPS_NULL = {"flat": ops_ev({k: None for k in ("x+y mod 59", "x-y mod 59", "x/y mod 59", "x-y mod 58",
                                              "x^2+y^2 mod 59", "x^3+xy mod 59")})}

# --- optimisers ------------------------------------------------------------------------------------------------

OPT_WD = {"adamw": 1.0, "adamw-full-batch": 1.0, "adam-no-wd": 0.0, "sgd-momentum": 0.0, "dropout": 1.0,
          "grokfast-ema": 1.0}


def opt_ev(acc: dict[str, list[float]], s_mem):
    pts = [({METHOD: m, "frac": f}, s_mem, 500 if a >= 0.99 else None, a) for m, v in acc.items()
           for f, a in zip((0.3, 0.5, 0.7), v)]
    return rz.optimisers_evidence(rows_for(pts), OPT_WD)


OPT_POS = [(opt_ev({"adamw": [0.5, 1.0, 1.0], "adamw-full-batch": [0.2, 0.8, 1.0], "adam-no-wd": [0.05, 0.3, 0.7],
                    "sgd-momentum": [0.02, 0.1, 0.6], "dropout": [0.3, 0.9, 1.0], "grokfast-ema": [0.9, 1, 1]}, 150),
            {"opt.wd", "opt.some", "opt.mem"})]
OPT_NULL = {"flat": opt_ev({m: [0.004, 0.01, 0.01] for m in OPT_WD}, None),
            "shuffled": opt_ev({m: [0.004, 0.01, 0.01] for m in OPT_WD}, 100)}

# --- cosets ----------------------------------------------------------------------------------------------------


def coset(s_gen, structure, conjugate, tsne_ari=0.9):
    m = {"S_gen": s_gen, "structure": structure, "conjugate": conjugate, "subgroup": "<(0 3)(1 4), (1 2)(3 4)>",
         "side": "left", "order": 10, "ari": 0.9 if structure else 0.05, "asked_ari": 0.9, "partition": 0,
         "from_step": 1000, "tsne_ari": tsne_ari, "tsne_match": "left cosets of <(0 3)(1 4), (1 2)(3 4)>"}
    return seeds({"models": {"mlp": m, "transformer": m}, "generalised": 2 * (s_gen is not None)})


COSET_POS = [(coset(2000, True, True), {"cosets.mlp", "cosets.transformer", "cosets.mlp.tsne",
                                        "cosets.transformer.tsne"})]
# learned nothing; memorised the training pairs only; generalised, but with W_U's rows in no coset order (as rows
# shuffled across the elements would be)
COSET_NULL = {"flat": coset(None, False, False, 0.0), "shuffled": coset(None, True, True),
              "rows shuffled": coset(2000, False, False, 0.02)}

# --- omnigrok --------------------------------------------------------------------------------------------------


def teacher(big: dict[float, tuple], small: tuple):
    return [{"alpha": 3.0, "wd": wd, "t_mem": m, "t_gen": g} for wd, (m, g) in big.items()] + \
        [{"alpha": 0.5, "wd": wd, "t_mem": small[0], "t_gen": small[1]} for wd in big]


def omni(big, small, decay, reduced, digits):
    t = teacher(big, small)
    return seeds({"teacher": t, "generalised": sum(x["t_gen"] is not None for x in t),
                  "decay": [{"wd": wd, "ok": True, "gamma": 3e-4 * wd, "lr_wd": 3e-4 * wd, "ratio": 1.0, "r2": 0.99,
                             "efolds": decay[0], "generalised": decay[1], "until_step": 9000} for wd in big if wd],
                  "reduced": reduced, "digits": [{"n_train": n, "t_gen": g} for n, g in digits]})


LU = {"lu": True, "train_shape": "L", "test_shape": "U", "w_c": 5.0, "norm_at_alpha_1": 2.0}
NO_LU = {"lu": False, "train_shape": "flat", "test_shape": "flat", "w_c": 1.0, "norm_at_alpha_1": 2.0}
OMNI_POS = [(omni({0.0: (100, None), 0.3: (100, 3000), 1.0: (100, 1000), 3.0: (110, 330)}, (100, 150), (2.0, True),
                  LU, [(250, None), (500, 4000), (1000, 2000)]),
             {c.id for c in SECTIONS["omnigrok"].checks})]
OMNI_NULL = {"flat": omni({wd: (None, None) for wd in (0.0, 0.3, 1.0)}, (None, None), (0.004, False), NO_LU,
                          [(250, None), (1000, None)]),
             "shuffled": omni({wd: (100, None) for wd in (0.0, 0.3, 1.0)}, (100, None), (0.004, False), NO_LU,
                              [(250, None), (1000, None)])}

# --- parity ----------------------------------------------------------------------------------------------------


def parity(h1, h2, mem, gen, sparsity=6):
    return seeds({"h1": [{"value": v, "S_mem": mem, "S_gen": g} for v, g in zip([0.01, 0.05, 0.1, 0.3, 1.0], h1)],
                  "h2": [{"value": v, "S_mem": mem, "S_gen": g} for v, g in zip([0.0, 0.02, 0.05, 0.1, 0.2], h2)],
                  "spectral": {"steps": [0, 100, 200, 400, 800, 1600, 3200], "norm": [5, 5.2, 5.0, 4, 2, 1.5, 1.49],
                               "S_mem": mem, "S_gen": gen, "final_sparsity": sparsity},
                  "k": 2, "generalised": sum(g is not None for g in h1 + h2 + [gen])}, SEEDS5)


PARITY_POS = [(parity([2000, 1500, 800, 1200, None], [1000, 1200, 1500, None, None], 100, 1600),
               {c.id for c in SECTIONS["parity"].checks})]
PARITY_NULL = {"flat": parity([None] * 5, [None] * 5, None, None, 400),
               "shuffled": parity([None] * 5, [None] * 5, 100, None, 400)}

# --- progress, sequence ----------------------------------------------------------------------------------------

PROGRESS_POS = [(seeds({"S_mem": 300, "S_gen": 6000, "generalised": 1}), {"progress.grok"})]
PROGRESS_NULL = {"flat": seeds({"S_mem": None, "S_gen": None, "generalised": 0}),
                 "shuffled": seeds({"S_mem": 300, "S_gen": None, "generalised": 0})}


def seq(changes, fit, drop, final):
    runs = {"digits5-infinite": {"changes": {f"s{i}": changes(i) for i in range(6)}},
            **{n: {"train_fit": fit, "test_change": drop, "final_train_loss": final[0], "final_test_loss": final[1]}
               for n in ("digits5-700", "repeat-512")}}
    return seeds({"runs": runs, "generalised": 0})


SEQ_POS = [(seq(lambda i: {"step": 300 + 100 * i, "start": 200 + 100 * i, "end": 260 + 100 * i, "plateau": 2.3,
                           "final": 0.01}, 200, 2000, (1e-8, 0.1)), {c.id for c in SECTIONS["sequence"].checks})]
SEQ_NULL = {"flat": seq(lambda i: None, None, None, (2.3, 2.3)),
            # memorised, never generalised; the only fall is the first one from the random initialisation
            "shuffled": seq(lambda i: {"step": 20, "start": 0, "end": 40, "plateau": 4.8, "final": 2.3}, 100, None,
                            (1e-3, 5.0))}

CASES = {"frac": (FRAC_POS, FRAC_NULL), "architectures": (ARCH_POS, ARCH_NULL), "operations": (OPS_POS, OPS_NULL),
         "optimisers": (OPT_POS, OPT_NULL), "cosets": (COSET_POS, COSET_NULL), "omnigrok": (OMNI_POS, OMNI_NULL),
         "parity": (PARITY_POS, PARITY_NULL), "progress": (PROGRESS_POS, PROGRESS_NULL),
         "sequence": (SEQ_POS, SEQ_NULL)}


def test_every_section_has_fixtures_and_every_check_a_positive_one():
    assert set(CASES) == set(SECTIONS)
    for name, (pos, null) in CASES.items():
        assert {c.id for c in SECTIONS[name].checks} == set().union(*(ids for _, ids in pos)), name
        assert null, name


@pytest.mark.parametrize("name", list(CASES))
def test_no_check_holds_on_null_evidence(name):
    for kind, ev in CASES[name][1].items():
        for c in SECTIONS[name].checks:
            r = evaluate(c, ev)
            assert r["ok"] is not True and r["k"] == 0, (name, kind, c.id, r["per_seed"])


@pytest.mark.parametrize("name", list(CASES))
def test_every_check_holds_on_its_positive_fixture(name):
    for ev, ids in CASES[name][0]:
        got = {c.id: evaluate(c, ev) for c in SECTIONS[name].checks}
        for i in ids:
            assert got[i]["ok"] is True and got[i]["k"] == got[i]["n"] == len(ev), (name, i, got[i]["per_seed"])


def test_k_of_n_seeds_and_the_majority():
    c = CheckDef("t", "000", "claim", (Rule("rule", lambda ev: (ev["x"], str(ev["x"]))),), min_generalised=0)
    ev = {0: {"x": True}, 1: {"x": True}, 2: {"x": False}}
    assert {k: evaluate(c, ev)[k] for k in ("k", "n", "ok")} == {"k": 2, "n": 3, "ok": True}
    ev[1]["x"] = None  # cannot be evaluated: counts as not holding
    assert {k: evaluate(c, ev)[k] for k in ("k", "n", "ok")} == {"k": 1, "n": 3, "ok": False}
    assert evaluate(c, {0: {"x": True}, 1: {"x": True}})["ok"] is None  # fewer seeds than the minimum
    assert evaluate(c, {s: {"x": s < 3} for s in range(6)})["ok"] is False  # 3/6: a tie is no majority


def test_minimum_generalised_runs_gate_every_rule_version():
    c = CheckDef("t", "000", "claim", (Rule("old", lambda ev: (True, "")), Rule("new", lambda ev: (True, ""))),
                 min_generalised=2)
    r = evaluate(c, {s: {"generalised": 1} for s in SEEDS3})
    assert r["ok"] is False and r["k"] == 0 and all(h["k"] == 0 for h in r["history"])
    assert evaluate(c, {s: {"generalised": 2} for s in SEEDS3})["ok"] is True


def test_rule_history_gives_the_verdict_under_every_version():
    ev = CASES["parity"][0][0][0]
    for s in ev.values():  # the norm falls from initialisation: its maximum is at step 0, far from S_mem = 100
        s["spectral"]["norm"] = [6, 5.2, 5.0, 4, 2, 1.5, 1.49]
    (spec,) = [c for c in SECTIONS["parity"].checks if c.id == "parity.spectral"]
    r = evaluate(spec, ev)
    assert [h["when"] for h in r["history"]] == ["", "after the results", "before the results"]
    assert [h["ok"] for h in r["history"]] == [False, True, False]  # the post-hoc reading passed; reverted
    assert r["ok"] is False and r["rule"] == r["history"][-1]["rule"]


def test_verdict_needs_every_check():
    yes, no, na = ({"ok": v} for v in (True, False, None))
    assert verdict([yes, yes]) == "reproduced"
    assert verdict([yes, no]) == verdict([yes, na]) == "partly"
    assert verdict([no, na]) == "not" and verdict([]) == "not run"


def _normalise(text: str) -> str:
    text = re.sub(r"\$+|\\pmod\{(\d+)\}|\\langle|\\rangle|\*\*", lambda m: f"(mod {m.group(1)})" if m.group(1) else "",
                  text)
    for tex, plain in (("\\alpha", "α"), ("\\sim", "~"), ("\\omega", "ω"), ("\\gamma", "γ"), ("\\approx", "≈"),
                       ("\\exp", "exp"), ("_0", "0"), ("_c", "c"), ("\\times", "×")):
        text = text.replace(tex, plain)
    return re.sub(r"\s+", " ", text).strip().lower()


SEED_DIR = Path(__file__).resolve().parents[3] / "shared" / "seeds"


@pytest.mark.skipif(not SEED_DIR.is_dir(), reason="the seed documents are not beside the work tree")
def test_claims_are_quoted_from_the_seed_documents():
    """Each claim (split at '[...]') appears in its seed document, up to whitespace and LaTeX markup; where the
    markup differs (a formula), every word of four letters or more of the claim is in that document."""
    docs = {f.name[:3]: _normalise(f.read_text()) for f in SEED_DIR.glob("*.txt")}
    assert set(docs) == set(SOURCES)
    for sec in report.SECTIONS:
        for c in [*sec.checks, *sec.untested]:
            for part in c.claim.split("[...]"):
                frag, doc = _normalise(part), docs[c.source]
                words = re.findall(r"[a-z]{4,}", frag)
                assert frag in doc or (words and all(w in doc for w in words)), (sec.name, part)


def test_the_tsne_reading_finds_planted_cosets_and_not_shuffled_rows():
    """The t-SNE check's measurement on S5 rows: rows planted on the left cosets of a conjugate of the seed's
    subgroup (one centre per coset, small noise) are found (ARI near 1); the same rows shuffled across the elements
    are not (ARI near 0)."""
    import numpy as np

    from analyses.cosets import parse_subgroup
    from analyses.report.sections.cosets import S5_SUBGROUP, TSNE_MIN_ARI, tsne_agreement
    from interp.cosets import coset_partitions
    from interp.groups import get_group

    G = get_group("S5")
    asked = parse_subgroup(G, S5_SUBGROUP)
    parts = [p for p in coset_partitions(G) if p.subgroup.conj_class == asked.conj_class]
    assert len(parts) == 12 and {p.n_cosets for p in parts} == {12} and asked.order == 10
    rng = np.random.default_rng(0)
    planted = parts[5]
    X = rng.normal(size=(12, 32))[planted.labels] + 0.05 * rng.normal(size=(120, 32))
    found = tsne_agreement(X, G, asked.conj_class)
    assert found["tsne_ari"] > 0.9 and found["tsne_match"] == planted.describe()
    assert tsne_agreement(X[rng.permutation(120)], G, asked.conj_class)["tsne_ari"] < TSNE_MIN_ARI / 2
