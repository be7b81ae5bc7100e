"""The report as markdown and as a static HTML page (analyses.report.write writes them): a summary table up front
(verdict, seeds, checks holding, each deviation from the seeds' settings, training wall time), then per section
its checks (claim, source, the seed's number, rule, k/n seeds, per-seed values, the rule's history with the
verdict under each version), the claims it quotes but does not test, figures with captions, tables and notes; the
settings JSON, pretty-printed, at the end.
"""

from __future__ import annotations

import html
import json
from typing import Any


def _verdict(s: dict[str, Any]) -> str:
    return f"not run: {s['reason']}" if s["verdict"] == "not run" and s.get("reason") else s["verdict"]


def _holds(ok: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "cannot be evaluated (counts as not holding)"}[ok]


def _yes(ok: bool | None) -> str:
    return {True: "yes", False: "no", None: "n/a"}[ok]


def _wall(s: dict[str, Any]) -> str:
    t, r = s.get("training") or {}, s.get("runs")
    parts = [f"training {t['wall_s']:.0f} s ({t['runs_trained']} runs)" if t.get("runs_trained") else
             "training: not recorded"]
    parts.append(f"this invocation {s['wall_s']:.0f} s" + (f" ({r['trained']} trained, {r['reused']} reused)"
                                                          if r else ""))
    return "; ".join(parts)


def _held(s: dict[str, Any]) -> str:
    c = s.get("checks") or []
    return f"{sum(x['ok'] is True for x in c)}/{len(c)}" if c else "-"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    return [[s["figure"], s["name"], _verdict(s) + (f" ({s['contradiction']})" if s.get("contradiction") else ""),
             ", ".join(map(str, s.get("seeds", []))) or "-", _held(s), "; ".join(s.get("deviations", [])) or "-",
             _wall(s)] for s in report["sections"]]


SUMMARY = ["figure", "section", "verdict", "seeds", "checks holding", "deviations from the seeds' settings",
           "wall time"]
HISTORY = ["version", "rule", "changed", "why", "seeds holding", "check"]


def history_rows(c: dict[str, Any]) -> list[list[str]]:
    n = len(c["history"])
    return [[f"v{i + 1}" + (" (in force)" if i == n - 1 else ""), h["rule"], h["when"] or "first rule",
             h["why"] or "-", f"{h['k']}/{h['n']}", _holds(h["ok"])] for i, h in enumerate(c["history"])]


def _seeds_text(c: dict[str, Any]) -> str:
    return "; ".join(f"seed {p['seed']}: {_yes(p['ok'])} ({p['value']})" for p in c["per_seed"]) or "no seeds"


def _total(report: dict[str, Any]) -> str:
    t = sum((s.get("training") or {}).get("wall_s", 0) for s in report["sections"])
    return f"Training wall time of the runs, as recorded when they were trained: {t:.0f} s. Wall time of the " \
           f"sections in the invocations that wrote them: {report['total_wall_s']:.0f} s."


# --- markdown -----------------------------------------------------------------------------------------------------


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]


def markdown(report: dict[str, Any], prefix: str = "") -> str:
    """The report as markdown; `prefix` goes before every figure's file name (the folder, seen from the page)."""
    lines = [f"# Seed figures, scale `{report['scale']}`", "", f"Regenerate: `{report['command']}`. {_total(report)}",
             "", f"Verdicts: {report['sections'][0]['verdict_rule'] if report['sections'] else ''}", ""]
    lines += md_table(SUMMARY, [[r[0], f"[{r[1]}](#{r[1]})", *r[2:]] for r in summary_rows(report)]) + [""]
    for s in report["sections"]:
        lines += md_section(s, prefix)
    lines += ["## Settings", ""]
    for s in report["sections"]:
        lines += [f"`{s['name']}`:", "", "```json", json.dumps(s.get("settings", {}), indent=1), "```", ""]
    return "\n".join(lines) + "\n"


def md_check(c: dict[str, Any]) -> list[str]:
    lines = [f"> {c['claim']}", ">", f"> — {c['source']}", "",
             f"- **`{c['id']}`: {_holds(c['ok'])}** on {c['k']}/{c['n']} seeds (needs {c['min_evidence']} and a "
             "majority)", f"- rule: {c['rule']}"]
    lines += [f"- the seed's number: {c['seed_number']}"] if c["seed_number"] else []
    lines += [f"- tested on: {c['tested_on']}"] if c["tested_on"] else []
    lines += [f"- opposite claim: {', '.join(c['contradicts'])}"] if c["contradicts"] else []
    lines += [f"- per seed: {_seeds_text(c)}", ""]
    if c["history"]:
        lines += ["Rule history:", ""] + md_table(HISTORY, history_rows(c)) + [""]
    return lines


def md_section(s: dict[str, Any], prefix: str = "") -> list[str]:
    lines = [f'<a id="{s["name"]}"></a>', f"## {s['figure']}. {s['title']} (`{s['name']}`)", "",
             f"**Verdict: {_verdict(s)}**" + (f" — {s['contradiction']}" if s.get("contradiction") else ""), ""]
    lines += [f"Deviations from the seeds' settings: {'; '.join(s['deviations'])}.", ""] if s.get("deviations") else []
    for c in s.get("checks", []):
        lines += md_check(c)
    for u in s.get("untested", []):
        lines += [f"> {u['claim']}", ">", f"> — {u['source']}", "", f"- *untested: {u['why']}*", ""]
    for f in s.get("figures", []):
        lines += [f"![{f['file']}]({prefix}{f['file']})", "", f"*{f['caption']}*", ""]
    for t in s.get("tables", []):
        lines += ([f"*{t['title']}*", ""] if t["title"] else []) + md_table(t["header"], t["rows"]) + [""]
    lines += [f"- notes: {n}" for n in s.get("notes", [])]
    lines += [f"- command: `{s['command']}`", f"- scale: `{s['scale']}`; {_wall(s)}", ""]
    return lines


# --- html ---------------------------------------------------------------------------------------------------------

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top}blockquote{border-left:4px solid #ddd;margin:.5em 0;padding:.2em 1em;color:#444}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.v{font-weight:bold}.reproduced{color:#070}
.partly{color:#a60}.not{color:#b00}.notrun{color:#666}code{background:#f4f4f4;padding:0 .2em}
figcaption{font-size:.9em;color:#333;margin-bottom:1em}pre{background:#f4f4f4;padding:.5em;overflow-x:auto}"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def h_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cls(v: str) -> str:
    return "notrun" if v == "not run" else v


def page(report: dict[str, Any]) -> str:
    rows = "".join("<tr>" + f"<td>{_e(r[0])}</td><td><a href='#{_e(r[1])}'>{_e(r[1])}</a></td>"
                   f"<td class='v {_cls(s['verdict'])}'>{_e(r[2])}</td>" + "".join(f"<td>{_e(x)}</td>" for x in r[3:])
                   + "</tr>" for r, s in zip(summary_rows(report), report["sections"]))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>grokscope report ({_e(report['scale'])})"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Seed figures, scale <code>{_e(report['scale'])}</code></h1>",
             f"<p>Regenerate: <code>{_e(report['command'])}</code>. {_e(_total(report))}</p>",
             f"<p>Verdicts: {_e(report['sections'][0]['verdict_rule']) if report['sections'] else ''}</p>",
             "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in SUMMARY) + f"</tr>{rows}</table>"]
    parts += [h_section(s) for s in report["sections"]]
    parts.append("<h2>Settings</h2>" + "".join(f"<p><code>{_e(s['name'])}</code></p><pre>"
                                               f"{_e(json.dumps(s.get('settings', {}), indent=1))}</pre>"
                                               for s in report["sections"]))
    return "\n".join(parts) + "\n</body></html>\n"


def h_check(c: dict[str, Any]) -> str:
    items = [f"<b><code>{_e(c['id'])}</code>: {_e(_holds(c['ok']))}</b> on {c['k']}/{c['n']} seeds (needs "
             f"{_e(c['min_evidence'])} and a majority)", f"rule: {_e(c['rule'])}"]
    items += [f"the seed's number: {_e(c['seed_number'])}"] if c["seed_number"] else []
    items += [f"tested on: {_e(c['tested_on'])}"] if c["tested_on"] else []
    items += [f"opposite claim: {_e(', '.join(c['contradicts']))}"] if c["contradicts"] else []
    items.append(f"per seed: {_e(_seeds_text(c))}")
    out = f"<blockquote>{_e(c['claim'])}<br>— {_e(c['source'])}</blockquote><ul>" + \
        "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return out + (f"<p>Rule history:</p>{h_table(HISTORY, history_rows(c))}" if c["history"] else "")


def h_section(s: dict[str, Any]) -> str:
    out = [f"<h2 id='{_e(s['name'])}'>{_e(s['figure'])}. {_e(s['title'])} (<code>{_e(s['name'])}</code>)</h2>",
           f"<p class='v {_cls(s['verdict'])}'>Verdict: {_e(_verdict(s))}" +
           (f" — {_e(s['contradiction'])}" if s.get("contradiction") else "") + "</p>"]
    if s.get("deviations"):
        out.append(f"<p>Deviations from the seeds' settings: {_e('; '.join(s['deviations']))}.</p>")
    out += [h_check(c) for c in s.get("checks", [])]
    out += [f"<blockquote>{_e(u['claim'])}<br>— {_e(u['source'])}</blockquote><p><em>untested: {_e(u['why'])}</em>"
            "</p>" for u in s.get("untested", [])]
    out += [f"<figure><img src='{_e(f['file'])}' alt='{_e(f['file'])}'><figcaption>{_e(f['caption'])}</figcaption>"
            "</figure>" for f in s.get("figures", [])]
    for t in s.get("tables", []):
        out.append((f"<p><em>{_e(t['title'])}</em></p>" if t["title"] else "") + h_table(t["header"], t["rows"]))
    if s.get("explore"):  # analyses.explore's interactive pages of the section's sweeps and their runs
        out.append("<p>Explore: " + ", ".join(f"<a href='{_e(x['href'])}'>{_e(x['name'])}</a>"
                                              for x in s["explore"]) + "</p>")
    items = [f"notes: {_e(n)}" for n in s.get("notes", [])]
    items += [f"command: <code>{_e(s['command'])}</code>", f"scale: <code>{_e(s['scale'])}</code>; {_e(_wall(s))}"]
    out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return "\n".join(out)
