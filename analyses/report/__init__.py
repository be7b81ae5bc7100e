"""`python -m analyses.report`: every seed figure from one command, each result beside the claim it tests.

    python -m analyses.report --scale smoke                 # everything at toy size, a couple of minutes
    python -m analyses.report --scale cpu --only frac       # one section, CPU-sized
    python -m analyses.report --scale gpu --dry-run         # the seeds' own settings: print the plan only
    python -m analyses.report --scale cpu --out docs/report --md docs/report.md   # the shipped report

For each section (`--only` names them: frac, architectures, operations, optimisers, cosets, omnigrok, parity,
progress, sequence) the report trains the sweeps behind it with `training.sweep` under
ROOT/<scale>/<section>/ (default ROOT: checkpoints/report), so a second invocation reuses every finished run and
resumes interrupted ones; runs the existing analyses on them in-process; and writes DIR/report.json,
DIR/report.md and DIR/index.html (static: PNGs beside it, no external assets; default DIR:
ROOT/<scale>/report; --md FILE also writes the markdown there, its figure links into DIR). Each section tests its
pre-registered checks (analyses.report.checks: the claim quoted from a seed document, the seed's number, the rule
and its history, the least evidence) on every seed, and gives a verdict from them (VERDICT_RULE): reproduced,
partly, not, or "not run: <reason>" where what it needs has not landed or it failed. The summary at the top gives
per section the verdict, the seeds, each deviation from the seeds' settings and the training wall time (recorded
when the runs were trained, so a re-use still reports it). The report is rewritten after every section; sections
not run this time keep their last result.

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

from analyses.report.checks import SOURCES, VERDICT_RULE, contradiction_note, evaluate, verdict
from analyses.report.sections import SECTIONS
from analyses.report.common import SCALES, Ctx, SectionDef, SectionSkipped, spec_summary
from analyses.report.write import check_report_dir, claim_report_dir, write_report
from training.cli import Parser, json_safe, main_entry, positive_int, require
from training.errors import GrokscopeError

NAMES = [s.name for s in SECTIONS]
DEFAULT_ROOT = Path("checkpoints") / "report"


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=SCALES, default="cpu", help="smoke: toy sizes; cpu: a 2-core CPU; gpu: the "
                   "seeds' own settings")
    p.add_argument("--only", nargs="+", choices=NAMES, default=None, metavar="NAME",
                   help=f"sections to run: {', '.join(NAMES)} (default: all)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: ROOT/<scale>/report)")
    p.add_argument("--md", type=Path, default=None, help="also write the markdown to this file, its figure links "
                   "pointing into --out (e.g. --out docs/report --md docs/report.md)")
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
    from training.sweeps.spec import plan as plan_runs

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
                      for k, v in st.items() if k != "deviations"})


def command(args, name: str | None = None) -> str:
    parts = ["python -m analyses.report", "--scale", args.scale]
    if name:
        parts += ["--only", name]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    if args.md is not None and name is None:
        parts += ["--md", str(args.md)]
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


def seeds_of(st: dict[str, Any]) -> list[int]:
    return sorted({x for spec in st.get("sweeps", {}).values() for x in spec.seeds})


def section_head(sec: SectionDef, args) -> dict[str, Any]:
    return {"name": sec.name, "figure": sec.figure, "title": sec.title, "scale": args.scale,
            "command": command(args, sec.name), "verdict_rule": VERDICT_RULE,
            "untested": [{"source": SOURCES[u.source], "claim": u.claim, "why": u.why} for u in sec.untested]}


def judge(sec: SectionDef, evidence: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """The section's pre-registered checks on its evidence, and the verdict they give."""
    checks = [evaluate(c, evidence) for c in sec.checks]
    return {"checks": checks, "verdict": verdict(checks), "contradiction": contradiction_note(checks)}


def run_section(sec: SectionDef, st: dict[str, Any], ctx: Ctx, args) -> dict[str, Any]:
    res = section_head(sec, args)
    t0 = time.perf_counter()
    if "skipped" in st:
        return {**res, "verdict": "not run", "reason": st["skipped"], "wall_s": 0.0, "settings": {}}
    res.update(seeds=seeds_of(st), deviations=st.get("deviations", []), settings=settings_json(st))
    try:
        o = sec.run(ctx, st)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001  (one broken section must not cost the others their report)
        return {**res, "verdict": "not run", "reason": f"failed: {type(e).__name__}: {e}",
                "wall_s": round(time.perf_counter() - t0, 1)}
    res["runs"] = ctx.counts.get(sec.name, {"reused": 0, "trained": 0})
    res["explore"] = explore_pages(ctx, sec.name)
    return {**res, **judge(sec, o.evidence), "tables": [t.to_dict() for t in o.tables],
            "figures": [{"file": f, "caption": c} for f, c in o.figures], "numbers": json_safe(o.numbers),
            "evidence": json_safe({str(k): v for k, v in o.evidence.items()}), "notes": o.notes,
            "training": ctx.training_wall(sec.name), "wall_s": round(time.perf_counter() - t0, 1)}


def explore_pages(ctx: Ctx, section: str) -> list[dict[str, str]]:
    """analyses.explore's page of each sweep the section ran (SWEEP/analyses/explore.html, its runs' pages
    beside the runs), linked relative to the report's folder. The runs' pages show their curves and the analyses
    they already have: nothing more is computed for them."""
    import os

    from analyses.explore_run import PAGE, ExploreOptions
    from analyses.explore_sweep import write_sweep_page

    links = []
    for path in dict.fromkeys(ctx.sweeps.get(section, [])):
        try:
            write_sweep_page(path, path / "analyses" / PAGE, ExploreOptions(compute=False, progress=False))
        except (GrokscopeError, OSError) as e:  # a page is a convenience: the section's verdict stands without it
            ctx.log(f"  {section}: no explore page for {path.name} ({e})")
            continue
        links.append({"name": path.name, "href": Path(os.path.relpath(path / "analyses" / PAGE, ctx.out)).as_posix()})
    return links


def body(args) -> int:
    from analyses.common import require_writable_dir

    out = args.out if args.out is not None else args.root / args.scale / "report"
    require(not out.exists() or out.is_dir(), f"--out {out}: exists and is not a folder")
    require(not args.data_path or Path(args.data_path).is_dir(), f"--data-path {args.data_path}: no such folder")
    require(args.md is None or not args.md.is_dir(), f"--md {args.md}: is a folder, not a file")
    require_writable_dir(out)
    require_writable_dir(args.root)
    if args.md is not None:
        require_writable_dir(args.md.parent)
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
    if args.md is not None and done:
        publish_md(out, args.md)
    print(f"report: {out / 'index.html'}, {out / 'report.md'}, {out / 'report.json'} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def publish_md(out: Path, md: Path) -> None:
    """The report's markdown at `md`, its figure links relative to md's folder."""
    import json
    import os

    from analyses.report.render import markdown
    from training.safeio import atomic_write_bytes

    rep = json.loads((out / "report.json").read_text())
    atomic_write_bytes(md, markdown(rep, os.path.relpath(out, md.parent) + "/").encode())


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.report", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
