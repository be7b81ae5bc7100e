"""A sweep's page for analyses.explore: S_mem and S_gen against each swept field (every seed, and the medians of
analyses.sweep's result), or per method for a sweep with methods (analyses.sweep_methods' result); every point
links to its run's page."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from analyses.explore_panels import panel, sig

JS = "plotly.min.js"  # beside the sweep's page; its run pages load it by a relative path


def run_key(params: dict[str, Any], seed: Any) -> str:
    return json.dumps([params, seed], sort_keys=True)


def sweep_results(sweep) -> list:
    """The sweep's results: per method for a sweep with methods, else one per swept field (each loaded when
    analyses.sweep wrote it, else computed; both are cheap)."""
    from analyses import sweep as sw
    from analyses.sweep_methods import MethodsResult

    if sweep.spec.get("variants"):
        path = sweep.dir / "analyses" / MethodsResult.FILE
        return [MethodsResult.load(sweep.dir) if path.is_file() else sw.analyse(sweep, sw.SweepOptions(by="method"))]
    out = []
    for field in sweep.spec["grid"]:
        path = sweep.dir / "analyses" / sw.SweepResult.FILE.format(field=field)
        out.append(sw.load(sweep, field) if path.is_file() else
                   sw.analyse(sweep, sw.SweepOptions(field=field, by="field", progress=False)))
    return out


def write_sweep_page(sweep_dir: Path, out: Path, options) -> int:
    from analyses.common import require_writable_dir
    from analyses.explore_run import PAGE, write_page, write_run_page
    from analyses.explore_page import plotly_js, render
    from analyses.sweep_stats import open_sweep
    from training.runs.format import checkpoint_steps
    from training.safeio import refuse_links

    sweep = open_sweep(sweep_dir)
    results = sweep_results(sweep)
    runs = [e for e in sweep.index["runs"] if (sweep.dir / str(e["dir"]) / "config.json").is_file()]
    pages = {}
    for e in runs:  # only runs with checkpoints get a page
        if checkpoint_steps(sweep.dir / str(e["dir"])):
            pages[run_key(e["params"], e["seed"])] = sweep.dir / str(e["dir"]) / "analyses" / PAGE
    for p in pages.values():  # every folder checked before the first page is written
        require_writable_dir(p.parent)
        refuse_links(p.parent.parent, [p.parent.name])
    js = out.parent / JS  # one copy of plotly.js for the sweep's pages
    write_page(js, plotly_js())
    for p in pages.values():  # rewritten each time: a run may have gained analyses since
        write_run_page(p.parent.parent, p, options, js)
    href = {k: Path(os.path.relpath(p, out.parent)).as_posix() for k, p in pages.items()}
    panels = []
    for res in results:
        panels += method_panels(res, href) if hasattr(res, "methods") else field_panels(res, href)
    intro = [f"sweep of <code>{html.escape(str(sweep.spec.get('preset')))}</code>, {len(runs)} runs; click a point "
             "to open its run's page (S_gen: first step with test accuracy >= 99%; a run that never generalised "
             "is a cross at its budget)."]
    return write_page(out, render(f"{sweep.dir.name}: grokscope sweep explorer", intro, {"panels": panels},
                                  runs_table(sweep, runs, href), js_src=JS))


def seed_trace(name: str, rows: list[dict], x, key: str, href: dict[str, str], colour: str,
               missing: bool = False) -> dict[str, Any]:
    """Every seed's `key` as a point linking to its run's page; `missing`: instead, the runs without one, drawn at
    their budget as crosses."""
    pts = [(x(r), r["budget"] if missing else r[key], href.get(run_key(r["params"], r["seed"]))) for r in rows
           if (r.get(key) is None) == missing and (not missing or r.get("budget") is not None)]
    return {"type": "scatter", "mode": "markers", "name": name, "x": [p[0] for p in pts],
            "y": [p[1] for p in pts], "customdata": [p[2] for p in pts],
            "marker": {"color": colour, "size": 9, "opacity": 0.6, "symbol": "x" if missing else "circle"},
            "hovertemplate": "%{y} (click: run page)<extra>" + html.escape(name) + "</extra>"}


def field_panels(res, href: dict[str, str]) -> list[dict[str, Any]]:
    """Per series: S_mem and S_gen of every seed against the field, and the medians as lines."""
    from analyses.sweep_stats import series_key

    out = []
    f = res.field
    for k, s in enumerate(res.series):
        rows = [r for r in res.rows if r["finished"] and series_key(r["params"], f) == s["key"]]
        traces = []
        for key, colour in (("S_mem", "#d62728"), ("S_gen", "#2ca02c")):
            traces.append(seed_trace(f"{key} (each seed)", rows, lambda r: r["params"][f], key, href, colour))
            if key == "S_gen":
                traces.append(seed_trace("no S_gen (at its budget)", rows, lambda r: r["params"][f], key, href,
                                         colour, missing=True))
            traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{key} median",
                           "x": [p["value"] for p in s["points"]], "y": [sig(p[key]["median"]) for p in s["points"]],
                           "line": {"color": colour}, "marker": {"symbol": "diamond", "size": 11}})
        title = f"S_mem and S_gen against {f}" + (f" ({s['key']})" if s["key"] else "")
        p = panel(f"sweep_{k}_{f}", title, traces, {"xaxis": {"title": f}, "yaxis": {"type": "log", "title": "step"}})
        p["links"] = True
        out.append(p)
    return out


def method_panels(res, href: dict[str, str]) -> list[dict[str, Any]]:
    """Per method: S_gen and S_mem of every seed, and the medians, one column per (grid point, method)."""
    label = lambda m, key: m if not key else f"{m} ({key})"  # noqa: E731
    from analyses.sweep_stats import series_key
    from training.sweeps.spec import METHOD

    traces = []
    for key, colour in (("S_mem", "#d62728"), ("S_gen", "#2ca02c")):
        traces.append(seed_trace(f"{key} (each seed)", [r for r in res.rows if r["finished"]],
                                 lambda r: label(r["params"][METHOD], series_key(r["params"], METHOD)), key, href,
                                 colour))
        traces.append({"type": "scatter", "mode": "markers", "name": f"{key} median",
                       "x": [label(g["method"], g["key"]) for g in res.groups],
                       "y": [sig(g[key]["median"]) for g in res.groups],
                       "marker": {"symbol": "diamond", "size": 13, "color": colour}})
    traces.append(seed_trace("no S_gen (at its budget)", [r for r in res.rows if r["finished"]],
                             lambda r: label(r["params"][METHOD], series_key(r["params"], METHOD)), "S_gen", href,
                             "#2ca02c", missing=True))
    p = panel("sweep_methods", f"S_mem and S_gen per method (speed-ups against {res.reference})", traces,
              {"xaxis": {"type": "category"}, "yaxis": {"type": "log", "title": "step"}})
    p["links"] = True
    return [p]


def runs_table(sweep, runs: list[dict], href: dict[str, str]) -> str:
    from analyses.sweep_stats import read_run

    e = html.escape
    rows = []
    for entry in runs:
        r = read_run(sweep.dir, entry)
        link = href.get(run_key(entry["params"], entry["seed"]))
        name = f"<a href='{e(link)}'>{e(str(entry['dir']))}</a>" if link else e(str(entry["dir"]))
        rows.append(f"<tr><td>{name}</td><td>{e(json.dumps(entry['params']))}</td><td>{e(str(entry['seed']))}</td>"
                    f"<td>{e(str(r.get('S_mem')))}</td><td>{e(str(r.get('S_gen')))}</td></tr>")
    return ("<h2>Runs</h2><table id='runs'><tr><th>run</th><th>params</th><th>seed</th><th>S_mem</th><th>S_gen</th>"
            "</tr>" + "".join(rows) + "</table>")
