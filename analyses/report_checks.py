"""The report's pre-registered checks (analyses.report): each claim quoted verbatim from a seed document, the
seed's own number where it gives one, the rule that tests it and the least evidence it needs, declared here before
any run is read. A rule that changes keeps its history: every version stays in code, is evaluated on the same
evidence, and the report shows the verdict under each.

A rule reads one seed's evidence (a plain dict a section builds from its runs) and returns (holds, our number in
words); holds is None when the evidence cannot decide (nothing generalised, too few points), which counts as not
holding. A check holds when at least `min_seeds` seeds were run and a strict majority of them hold.

Imports nothing heavy (`--dry-run` answers before torch loads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# The seed documents, by author and title.
SOURCES = {
    "000": 'Ibragimov, "Grokking" (2023)',
    "001": 'Hu, Zhou, Yu, "Exploring Grokking: Experimental and Mechanistic Investigations"',
    "002": 'Liu, Michaud, Tegmark, "Omnigrok: Grokking Beyond Algorithmic Data"',
    "003": 'Fuangkawinsombut, Somsirivattana, "Grokking" (2023)',
    "004": 'Sha, Wu, Yue, "Final Project: Grokking Phenomenon Reproduction"',
}

# One definition of grokking where a seed gives no number of its own: generalisation at least half a decade of
# steps after the fit (the seeds plot steps on log axes), S_gen >= 3 S_mem. Where a seed gives a number, its check
# uses that number instead.
GROK_RATIO = 3.0

VERDICT_RULE = ("reproduced: every check holds (each on a majority of its seeds, with at least its minimum number "
                "of seeds); partly: some hold; not: none holds. A check that cannot be evaluated (too few seeds, "
                "nothing generalised) counts as not holding.")

Outcome = tuple[bool | None, str]  # per seed: holds (None: cannot be evaluated), our number(s) in words
RuleFn = Callable[[dict[str, Any]], Outcome]


@dataclass(frozen=True)
class Rule:
    """One version of a check's rule: the rule in words, its function, and why it replaced the version before."""

    text: str
    fn: RuleFn
    why: str = ""
    when: str = ""  # "before the results" or "after the results" (a post-hoc revision)


@dataclass(frozen=True)
class CheckDef:
    id: str
    source: str  # a key of SOURCES
    claim: str  # verbatim from the seed document
    rules: tuple[Rule, ...]  # the history, oldest first; the last is the rule in force
    seed_number: str = ""  # the seed's own number, where it gives one
    min_seeds: int = 3
    min_generalised: int = 1  # runs per seed that must have generalised (evidence["generalised"]) to evaluate
    contradicts: tuple[str, ...] = ()  # ids of other seeds' checks that claim the opposite
    tested_on: str = ""  # where our setting differs from the one the claim is about

    @property
    def rule(self) -> Rule:
        return self.rules[-1]

    def evidence_text(self) -> str:
        gen = f", {self.min_generalised} generalised run(s) per seed" if self.min_generalised else ""
        return f">= {self.min_seeds} seeds{gen}"


@dataclass(frozen=True)
class Untested:
    """A claim a section quotes but does not test, and why."""

    source: str
    claim: str
    why: str


def per_seed(defn: CheckDef, fn: RuleFn, evidence: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for seed, ev in sorted(evidence.items(), key=lambda kv: str(kv[0])):
        gen = ev.get("generalised", 0)
        if gen < defn.min_generalised:
            ok, value = None, f"{gen} run(s) generalised, the rule needs {defn.min_generalised}"
        else:
            try:
                ok, value = fn(ev)
            except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
                ok, value = None, f"cannot be evaluated ({type(e).__name__}: {e})"
        out.append({"seed": seed, "ok": None if ok is None else bool(ok), "value": value})
    return out


def tally(defn: CheckDef, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    k, n = sum(s["ok"] is True for s in seeds), len(seeds)
    ok = None if n < defn.min_seeds else 2 * k > n
    return {"k": k, "n": n, "ok": ok}


def evaluate(defn: CheckDef, evidence: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """The check on per-seed evidence: k/n seeds holding under the rule in force, and under every earlier rule."""
    history = []
    for r in defn.rules:
        seeds = per_seed(defn, r.fn, evidence)
        history.append({"rule": r.text, "why": r.why, "when": r.when, **tally(defn, seeds), "per_seed": seeds})
    now = history[-1]
    return {"id": defn.id, "source": SOURCES[defn.source], "claim": defn.claim, "seed_number": defn.seed_number,
            "rule": defn.rule.text, "min_evidence": defn.evidence_text(), "tested_on": defn.tested_on,
            "contradicts": list(defn.contradicts), "k": now["k"], "n": now["n"], "ok": now["ok"],
            "per_seed": now["per_seed"], "history": history if len(history) > 1 else []}


def verdict(results: list[dict[str, Any]]) -> str:
    if not results:
        return "not run"
    held = sum(r["ok"] is True for r in results)
    return "reproduced" if held == len(results) else "partly" if held else "not"


def contradiction_note(results: list[dict[str, Any]]) -> str:
    """Why a section cannot be 'reproduced' when two seeds claim opposite things."""
    ids = {r["id"]: r for r in results}
    pairs = sorted({tuple(sorted((r["id"], c))) for r in results for c in r["contradicts"] if c in ids})
    return "; ".join(f"{a} and {b} are opposite claims of two seeds: at most one can hold" for a, b in pairs)


# --- small helpers the rules share ---------------------------------------------------------------------------


def ratio(s_gen: float | None, s_mem: float | None) -> float | None:
    return s_gen / max(s_mem, 1) if s_gen is not None and s_mem is not None else None


def num(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def kendall_tau(xs: list[float], ys: list[float]) -> float | None:
    """Kendall's tau-b of two paired lists (None for fewer than 3 pairs or no variation)."""
    from scipy.stats import kendalltau

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return float(kendalltau(xs, ys).statistic)
