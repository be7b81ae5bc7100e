"""Writing the report (analyses.report): DIR/report.json, DIR/report.md and DIR/index.html (static, the PNGs
beside it, no external assets). Sections not run by this invocation keep their last result from report.json,
when it is of the same scale; the total time is the sum of the sections' wall times.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analyses.report_render import markdown, page
from training.cli import json_safe

FORMAT = "grokscope-report/2"  # sections of another format (an older report.json) are not merged


def merged(out: Path, scale: str, done: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    old: dict[str, Any] = {}
    path = out / "report.json"
    if path.exists():
        try:
            prev = json.loads(path.read_text())
            if prev.get("scale") == scale and prev.get("format") == FORMAT:
                old = {s["name"]: s for s in prev.get("sections", [])}
        except (ValueError, KeyError, TypeError):
            old = {}  # unreadable: rewritten from this invocation's sections
    both = {**old, **done}
    return [both[n] for n in order if n in both]


def write_report(out: Path, scale: str, done: dict[str, Any], order: list[str], command: str,
                 elapsed: float) -> None:
    from training.rundir import atomic_write_bytes

    sections = merged(out, scale, done, order)
    report = {"format": FORMAT, "scale": scale, "command": command,
              "this_invocation_s": round(elapsed, 1), "total_wall_s": round(sum(s["wall_s"] for s in sections), 1),
              "sections": sections}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "report.json", (json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n").encode())
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    atomic_write_bytes(out / "index.html", page(report).encode())
