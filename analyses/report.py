"""`python -m analyses.report`: every seed figure from one command, each result beside the claim it tests.

    python -m analyses.report --scale smoke                 # everything at toy size, a couple of minutes
    python -m analyses.report --scale cpu --only frac       # one section, CPU-sized
    python -m analyses.report --scale gpu --dry-run         # the seeds' own settings: print the plan only

For each section (`--only` names them: frac, architectures, operations, optimisers, cosets, omnigrok, parity,
progress, sequence) the report trains the sweeps behind it with `training.sweep` under
ROOT/<scale>/<section>/ (default ROOT: checkpoints/report), so a second invocation reuses every finished run and
resumes interrupted ones; runs the existing analyses on them in-process; and writes DIR/report.json,
DIR/report.md and DIR/index.html (static: PNGs beside it, no external assets; default DIR:
ROOT/<scale>/report). Each section quotes its seeds' claims, shows our figures and numbers, tests each claim by a
stated rule (`analyses.report_common.Check`) and gives a verdict from them (VERDICT_RULE): reproduced, partly,
not, or "not run: <reason>" where what it needs has not landed (the accelerator sweeps, the sequence tasks) or
it failed. The report is rewritten after every section; sections not run this time keep their last result.

Scales: `smoke` (toy sizes; tested), `cpu` (what a 2-core CPU does in well under an hour; each section states
its settings), `gpu` (the seeds' own settings; untested here, `--dry-run` prints its plan). Bad input (an unknown
section or scale, --out naming a file, or a folder the report did not make) is one line and exit status 2, before
anything is written. DIR must be new, empty, or the report's own (marked `.grokscope-report` when claimed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from analyses import report_omnigrok as om
from analyses import report_runs as rr
from analyses import report_sweeps as rs
from analyses.report_common import (SCALES, VERDICT_RULE, Ctx, SectionDef, SectionSkipped, spec_summary,
                                    verdict)
from analyses.report_write import check_report_dir, claim_report_dir, write_report
from training.cli import Parser, json_safe, main_entry, positive_int, require

Q004_FRAC = ("When α=80%, the model generalizes in 10^4 steps. As α decreases, it becomes easier for the model to "
             "overfit the training data, while the number of steps required for generalization increases rapidly. "
             "When α≤30%, the model would not generalize in 10^5 steps.")
Q000_FRAC = ("In the vicinity of 25-30% of data, a decrease of 1% of training data leads to an increase of 40-50% in "
             "median time to generalization. While the number of steps until validation accuracy > 99% grows "
             "quickly as dataset size decreases, the number of steps until the train accuracy first reaches 99% "
             "generally trends down as dataset size decreases and stays in the range of 10^3 - 10^4 optimization "
             "steps.")
Q001_FRAC = "It finds that grokking is most pronounced around a training data fraction of α ≈ 0.5 for a p=97 " \
            "modular arithmetic task"
Q004_ARCH = ("In Figures 3a and 4a, we again observe a delay of generalization which, however, is not as significant "
             "as that in Figure 1a.")
Q001_ARCH = "with Transformer models showing the phenomenon while MLPs and LSTMs do not under the tested encoding"
Q000_OPS = ("Generalization happens at higher percentages of data for intuitively more complicated and less "
            "symmetrical operations. [...] x/y (mod 97) ~ x-y (mod 96) ~ x-y (mod 97)")
Q000_OPT = ("Optimization budget of 10^5 steps for the problem of learning the product in the abstract group S5. "
            "Weight decay improves generalization the most, but some generalization happens even with full batch "
            "optimizers and models without weight or activation noise at high percentages of training data.")
Q001_OPT = ("Figure 5: Different optimization algorithms lead to different amount of generalization within an "
            "optimization budget of 1800 steps for the problem of (x+y) mod 97. Weight decay, i.e. AdamW, improves "
            "generalization the most [...] training accuracy achieved after approximately 100-200 updates for all "
            "optimization methods and training data fractions.")
Q000_COS = ("clusters of permutations, and each cluster is a coset of the subgroup ⟨(0, 3)(1, 4), (1, 2)(3, 4)⟩ "
            "or one of its conjugates.")
Q002 = ("By reducing the optimization to a one-dimensional landscape over weight norm and direction, the authors "
        "show how initialization scale and weight decay govern the time to generalize, including delays that scale "
        "as t ∝ 1/γ.")
Q000_NORM = "ω(t) ≈ exp(-γ t) ω0. The standard initialization schemes typically initialize ω no larger than ω_c"
Q003_H = ("we notice that the spectral norm has two inflection points at roughly the same epoch when the model "
          "achieves memorization and when it achieves generalization. Between these two points, the spectral norm "
          "sharply declines.")
Q003_K = "there exists a 1-layer RELU network with 2^k neurons that computes the (n,k)-parity function."
QNANDA = ("Timing: memorisation ends ~1.4k, circuit formation to ~9.4k, cleanup to ~14k. [...] Headline (seed 0, 40k): "
          "key freqs {14,35,41,42,52}; [...] other seeds 3-6 key freqs")
Q000_SEQ = ("Grokking shown when training 1L Transformer to do 5 digit addition on 700 training examples. [...] train "
            "loss plateaus at 3 × 10^-8, test loss plateaus at 0.2")
Q000_PHASE = ("Phase Change in 5 Digit Addition Infinite Data Training Curve [...] Per-digit Loss Curves for 5 digit "
              "addition (Infinite Data)")

SECTIONS: list[SectionDef] = [
    SectionDef("frac", "Steps to generalise against the training fraction", [
        ("004_13923347f76a5174.txt", Q004_FRAC), ("000_d67ced260143ae56.txt", Q000_FRAC),
        ("001_583ee9f787d52ca0.txt", Q001_FRAC)], rs.frac_settings, rs.frac_run, "1"),
    SectionDef("architectures", "Transformer, LSTM and MLP on (x+y) mod p", [
        ("004_13923347f76a5174.txt", Q004_ARCH), ("001_583ee9f787d52ca0.txt", Q001_ARCH)],
        rs.architectures_settings, rs.architectures_run, "2"),
    SectionDef("operations", "Minimum training fraction per operation", [("000_d67ced260143ae56.txt", Q000_OPS)],
               rs.operations_settings, rs.operations_run, "3"),
    SectionDef("optimisers", "Optimisers and regularisers within a budget", [
        ("000_d67ced260143ae56.txt", Q000_OPT), ("001_583ee9f787d52ca0.txt", Q001_OPT)],
        rs.optimisers_settings, rs.optimisers_run, "4"),
    SectionDef("cosets", "S5: which subgroup's cosets the output embedding clusters by", [
        ("000_d67ced260143ae56.txt", Q000_COS)], rr.cosets_settings, rr.cosets_run, "5"),
    SectionDef("omnigrok", "Omnigrok: init scale, weight decay, the LU landscape, data size, norm decay", [
        ("002_6600599428c7f857.txt", Q002), ("000_d67ced260143ae56.txt", Q000_NORM)],
        om.omnigrok_settings, om.omnigrok_run, "6"),
    SectionDef("parity", "Parity: H1, H2, the spectral-norm progress measure, effective sparsity", [
        ("003_03dc83c77ae91d41.txt", Q003_H), ("003_03dc83c77ae91d41.txt", Q003_K)],
        rr.parity_settings, rr.parity_run, "7"),
    SectionDef("progress", "Nanda's progress measures", [("REFERENCE.md (Nanda et al. 2023)", QNANDA)],
               rr.progress_settings, rr.progress_run, "8"),
    SectionDef("sequence", "Sequence tasks: phase changes", [("000_d67ced260143ae56.txt", Q000_PHASE),
                                                               ("000_d67ced260143ae56.txt", Q000_SEQ)],
               rr.sequence_settings, rr.sequence_run, "9"),
]
NAMES = [s.name for s in SECTIONS]
DEFAULT_ROOT = Path("checkpoints") / "report"


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=SCALES, default="cpu", help="smoke: toy sizes; cpu: a 2-core CPU; gpu: the "
                   "seeds' own settings")
    p.add_argument("--only", nargs="+", choices=NAMES, default=None, metavar="NAME",
                   help=f"sections to run: {', '.join(NAMES)} (default: all)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: ROOT/<scale>/report)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the runs go: ROOT/<scale>/<section>/")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="sweep backend (training.sweep)")
    p.add_argument("--workers", type=positive_int, default=2, help="sweep chunks trained at once")
    p.add_argument("--data-path", default="", help="folder with the MNIST IDX files (the omnigrok section's MNIST)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (sweeps, runs, settings) and stop")
    p.add_argument("--progress", action="store_true", help="progress bars of the sweeps")
    return p


def plan(args) -> dict[str, Any]:
    """Per section: its settings, or the reason it cannot run. Every planned config validated (no torch)."""
    from training.config import validate
    from training.sweep import plan as plan_runs

    out = {}
    for sec in SECTIONS:
        if args.only and sec.name not in args.only:
            continue
        try:
            st = sec.settings(args.scale, args.data_path)
        except SectionSkipped as e:
            out[sec.name] = {"skipped": str(e)}
            continue
        for spec in st["sweeps"].values():
            for r in plan_runs(spec, ["seed", "batch_seed"]):
                validate(r.config)
        out[sec.name] = st
    return out


def settings_json(st: dict[str, Any]) -> dict[str, Any]:
    return json_safe({k: ({n: spec_summary(s) for n, s in v.items()} if k == "sweeps" else v)
                      for k, v in st.items()})


def command(args, name: str | None = None) -> str:
    parts = ["python -m analyses.report", "--scale", args.scale]
    if name:
        parts += ["--only", name]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    if args.root != DEFAULT_ROOT:
        parts += ["--root", str(args.root)]
    if args.data_path:
        parts += ["--data-path", args.data_path]
    return " ".join(parts)


def print_plan(args, plans: dict[str, Any]) -> None:
    print(f"plan at scale {args.scale}: runs under {args.root / args.scale}")
    total = 0
    for name, st in plans.items():
        if "skipped" in st:
            print(f"{name}: not run: {st['skipped']}")
            continue
        print(f"{name}:")
        for sname, spec in st["sweeps"].items():
            s = spec_summary(spec)
            total += s["runs"]
            print(f"  {sname}: {s['runs']} runs of {spec.preset}, grid {spec.grid}, seeds {spec.seeds}, "
                  f"overrides {spec.overrides} -> {args.root / args.scale / name / sname}")
        rest = {k: v for k, v in st.items() if k != "sweeps"}
        if rest:
            print(f"  analysis: {rest}")
    print(f"{total} runs in all")


def run_section(sec: SectionDef, st: dict[str, Any], ctx: Ctx, args) -> dict[str, Any]:
    res = {"name": sec.name, "figure": sec.figure, "title": sec.title, "scale": args.scale,
           "claims": [{"seed": f, "claim": c} for f, c in sec.claims], "command": command(args, sec.name),
           "verdict_rule": VERDICT_RULE}
    t0 = time.perf_counter()
    if "skipped" in st:
        return {**res, "verdict": "not run", "reason": st["skipped"], "wall_s": 0.0, "settings": {}}
    try:
        o = sec.run(ctx, st)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001  (one broken section must not cost the others their report)
        return {**res, "verdict": "not run", "reason": f"failed: {type(e).__name__}: {e}",
                "wall_s": round(time.perf_counter() - t0, 1), "settings": settings_json(st)}
    res["runs"] = ctx.counts.get(sec.name, {"reused": 0, "trained": 0})
    return {**res, "verdict": verdict(o.checks), "checks": [c.to_dict() for c in o.checks],
            "tables": [t.to_dict() for t in o.tables], "figures": [f for f in o.figures if f],
            "numbers": json_safe(o.numbers), "notes": o.notes, "settings": settings_json(st),
            "wall_s": round(time.perf_counter() - t0, 1)}


def body(args) -> int:
    from analyses.common import require_writable_dir

    out = args.out if args.out is not None else args.root / args.scale / "report"
    require(not out.exists() or out.is_dir(), f"--out {out}: exists and is not a folder")
    require(not args.data_path or Path(args.data_path).is_dir(), f"--data-path {args.data_path}: no such folder")
    require_writable_dir(out)
    require_writable_dir(args.root)
    check_report_dir(out)
    plans = plan(args)
    if args.dry_run:
        print_plan(args, plans)
        return 0
    claim_report_dir(out)  # before any section: its figures go there too
    ctx = Ctx(args.scale, args.root, out, args.backend, args.workers, args.data_path, args.progress,
              log=lambda m: print(m, flush=True))
    t0 = time.perf_counter()
    done: dict[str, Any] = {}
    try:
        for sec in SECTIONS:
            if sec.name not in plans:
                continue
            print(f"[{sec.name}] {sec.title}", flush=True)
            done[sec.name] = r = run_section(sec, plans[sec.name], ctx, args)
            print(f"[{sec.name}] {r['verdict']}" + (f": {r['reason']}" if "reason" in r else "") +
                  f" ({r['wall_s']:.0f} s)", flush=True)
            write_report(out, args.scale, done, NAMES, command(args), time.perf_counter() - t0)
    finally:
        ctx.close()
    print(f"report: {out / 'index.html'}, {out / 'report.md'}, {out / 'report.json'} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.report", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
