"""Writing the report (analyses.report): DIR/report.json, DIR/report.md and DIR/index.html (static, the PNGs
beside it, no external assets). Sections not run by this invocation keep their last result from report.json,
when it is of the same scale; the total time is the sum of the sections' wall times.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from training.cli import json_safe
from training.errors import RunDirError
from training.safeio import atomic_write_bytes, output_dir, read_json

FORMAT = "grokscope-report/1"
MARK = ".grokscope-report"  # written into a report folder when the report claims it


def merged(out: Path, scale: str, done: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    old: dict[str, Any] = {}
    path = out / "report.json"
    if path.exists():
        try:
            prev = read_json(path, "report")
            if prev.get("scale") == scale:
                old = {s["name"]: s for s in prev.get("sections", [])}
        except (RunDirError, AttributeError, KeyError, TypeError):
            old = {}  # unreadable: rewritten from this invocation's sections
    both = {**old, **done}
    return [both[n] for n in order if n in both]


def check_report_dir(out: Path) -> None:
    """The report writes only into a folder of its own: a new or empty one (which it then marks), or one it marked
    before (or whose report.json it wrote). Anything else is the user's: refused, as --overwrite refuses a folder
    that is not a run."""
    out = Path(out)
    if not out.is_dir() or (out / MARK).is_file() or not any(out.iterdir()):
        return
    try:
        ours = read_json(out / "report.json", "report").get("format") == FORMAT
    except (RunDirError, AttributeError):
        ours = False
    if not ours:
        raise RunDirError(f"--out {out}: a folder analyses.report did not make (no {MARK} or report.json of its "
                          "own); refusing to write into it (give a new or empty folder)")


def claim_report_dir(out: Path) -> None:
    """Make `out` (checked by check_report_dir) and mark it as the report's own."""
    check_report_dir(out)
    output_dir(out)
    if not (out / MARK).is_file():
        atomic_write_bytes(out / MARK, b"written by python -m analyses.report\n")


def write_report(out: Path, scale: str, done: dict[str, Any], order: list[str], command: str,
                 elapsed: float) -> None:
    sections = merged(out, scale, done, order)
    report = {"format": FORMAT, "scale": scale, "command": command,
              "this_invocation_s": round(elapsed, 1), "total_wall_s": round(sum(s["wall_s"] for s in sections), 1),
              "sections": sections}
    claim_report_dir(out)
    atomic_write_bytes(out / "report.json", (json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n").encode())
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    atomic_write_bytes(out / "index.html", page(report).encode())


# --- markdown -----------------------------------------------------------------------------------------------------


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Seed figures, scale `{report['scale']}`", "",
             f"Regenerate: `{report['command']}`. Total wall time of the sections: {report['total_wall_s']:.0f} s.", "",
             "Verdicts: " + (report["sections"][0]["verdict_rule"] if report["sections"] else ""), ""]
    lines += md_table(["figure", "section", "verdict", "wall time"],
                      [[s["figure"], f"[{s['name']}](#{s['name']})", _verdict(s), f"{s['wall_s']:.0f} s{_runs(s)}"]
                       for s in report["sections"]]) + [""]
    for s in report["sections"]:
        lines += md_section(s)
    return "\n".join(lines) + "\n"


def _verdict(s: dict[str, Any]) -> str:
    return f"not run: {s['reason']}" if s["verdict"] == "not run" and s.get("reason") else s["verdict"]


def md_section(s: dict[str, Any]) -> list[str]:
    lines = [f'<a id="{s["name"]}"></a>', f"## {s['figure']}. {s['title']} (`{s['name']}`)", ""]
    for c in s["claims"]:
        lines += [f"> {c['claim']}", ">", f"> — {c['seed']}", ""]
    lines += [f"**Verdict: {_verdict(s)}**", ""]
    for f in s.get("figures", []):
        lines += [f"![{f}]({f})", ""]
    for t in s.get("tables", []):
        lines += ([f"*{t['title']}*", ""] if t["title"] else []) + md_table(t["header"], t["rows"]) + [""]
    if s.get("checks"):
        lines += md_table(["claim", "rule", "ours", "holds"],
                          [[c["claim"], c["rule"], c["value"], _holds(c["ok"])] for c in s["checks"]]) + [""]
        lines += [f"Verdict rule: {s['verdict_rule']}.", ""]
    lines += [f"- notes: {n}" for n in s.get("notes", [])]
    lines += [f"- command: `{s['command']}`", f"- scale: `{s['scale']}`; wall time {s['wall_s']:.0f} s{_runs(s)}",
              f"- settings: `{json.dumps(s.get('settings', {}), separators=(',', ':'))}`", ""]
    return lines


def _runs(s: dict[str, Any]) -> str:
    """How many of the section's runs this invocation trained and how many it reused (trained before)."""
    r = s.get("runs")
    return f" ({r['trained']} runs trained, {r['reused']} reused)" if r else ""


def _holds(ok: bool | None) -> str:
    return {True: "yes", False: "no", None: "n/a (counts as no)"}[ok]


# --- html ---------------------------------------------------------------------------------------------------------

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top}blockquote{border-left:4px solid #ddd;margin:.5em 0;padding:.2em 1em;color:#444}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.v{font-weight:bold}.reproduced{color:#070}
.partly{color:#a60}.not{color:#b00}.notrun{color:#666}code{background:#f4f4f4;padding:0 .2em}"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def h_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cls(v: str) -> str:
    return "notrun" if v == "not run" else v


def page(report: dict[str, Any]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>grokscope report ({_e(report['scale'])})"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Seed figures, scale <code>{_e(report['scale'])}</code></h1>",
             f"<p>Regenerate: <code>{_e(report['command'])}</code>. Total wall time of the sections: "
             f"{report['total_wall_s']:.0f} s.</p>"]
    rows = "".join(f"<tr><td>{_e(s['figure'])}</td><td><a href='#{_e(s['name'])}'>{_e(s['name'])}</a></td>"
                   f"<td class='v {_cls(s['verdict'])}'>{_e(_verdict(s))}</td>"
                   f"<td>{s['wall_s']:.0f} s{_e(_runs(s))}</td></tr>"
                   for s in report["sections"])
    parts.append(f"<table><tr><th>figure</th><th>section</th><th>verdict</th><th>wall time</th></tr>{rows}</table>")
    parts += [h_section(s) for s in report["sections"]]
    return "\n".join(parts) + "\n</body></html>\n"


def h_section(s: dict[str, Any]) -> str:
    out = [f"<h2 id='{_e(s['name'])}'>{_e(s['figure'])}. {_e(s['title'])} (<code>{_e(s['name'])}</code>)</h2>"]
    out += [f"<blockquote>{_e(c['claim'])}<br>— {_e(c['seed'])}</blockquote>" for c in s["claims"]]
    out.append(f"<p class='v {_cls(s['verdict'])}'>Verdict: {_e(_verdict(s))}</p>")
    out += [f"<img src='{_e(f)}' alt='{_e(f)}'>" for f in s.get("figures", [])]
    for t in s.get("tables", []):
        out.append((f"<p><em>{_e(t['title'])}</em></p>" if t["title"] else "") + h_table(t["header"], t["rows"]))
    if s.get("checks"):
        out.append(h_table(["claim", "rule", "ours", "holds"],
                           [[c["claim"], c["rule"], c["value"], _holds(c["ok"])] for c in s["checks"]]))
        out.append(f"<p>Verdict rule: {_e(s['verdict_rule'])}.</p>")
    items = [f"notes: {_e(n)}" for n in s.get("notes", [])]
    items += [f"command: <code>{_e(s['command'])}</code>", f"scale: <code>{_e(s['scale'])}</code>; wall time "
              f"{s['wall_s']:.0f} s{_e(_runs(s))}", f"settings: <code>{_e(json.dumps(s.get('settings', {})))}</code>"]
    out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return "\n".join(out)
