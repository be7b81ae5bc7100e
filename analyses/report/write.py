"""Writing the report (analyses.report): DIR/report.json, DIR/report.md and DIR/index.html (static, the PNGs
beside it, no external assets). Sections not run by this invocation keep their last result from report.json,
when it is of the same scale and format; the total time is the sum of the sections' wall times. The report writes
only into a folder of its own (check_report_dir).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analyses.report.render import markdown, page
from training.cli import json_safe
from training.errors import RunDirError
from training.safeio import atomic_write_bytes, output_dir, read_json

FORMAT = "grokscope-report/2"  # sections of another format (an older report.json) are not merged
FAMILY = "grokscope-report/"  # any format of ours: a folder holding one is the report's own
MARK = ".grokscope-report"  # written into a report folder when the report claims it


def merged(out: Path, scale: str, done: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    old: dict[str, Any] = {}
    path = out / "report.json"
    if path.exists():
        try:
            prev = read_json(path, "report")
            if prev.get("scale") == scale and prev.get("format") == FORMAT:
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
        fmt = read_json(out / "report.json", "report").get("format")
        ours = isinstance(fmt, str) and fmt.startswith(FAMILY)
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
