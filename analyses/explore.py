"""`python -m analyses.explore RUN_DIR|SWEEP_DIR [--out FILE]`: one interactive page to scrub through training.

    python -m training.run && python -m analyses.explore checkpoints/default
    python -m analyses.explore checkpoints/frac            # a sweep: S_mem / S_gen per value, linked to run pages

A run's page (default RUN_DIR/analyses/explore.html) has a checkpoint slider that drives every panel together:
the loss and accuracy curves (log axes) with a cursor at the chosen step and S_mem, S_gen and the phase ends
marked, and the panels of the analyses that apply to the run's task (modular arithmetic: analyses.fourier;
groups: analyses.cosets; parity: analyses.sparsity; sequence tasks: analyses.sequence), the loss landscape of
every run (analyses.landscape) and any other analysis the run already has. An analysis already written under
RUN_DIR/analyses/ is reused; a missing one is computed (analyse()) and its JSON written there, unless
--no-compute.

A sweep's page (default SWEEP_DIR/analyses/explore.html) plots S_mem and S_gen against each swept field (every
seed and the medians), or per method for a sweep with methods; each point links to its run's page, written
beside the run (RUN/analyses/explore.html) when missing.

A run's page is one self-contained file (plotly.js embedded); a sweep's pages share one plotly.min.js beside
the sweep's page (a sweep has many runs). No page makes a network request: they work from a file:// URL. A
folder that is neither a run nor a sweep, a run without checkpoints or an --out that cannot be written: one line
on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from analyses.api import BadInput
from analyses.common import require_writable_dir
from analyses.explore_run import PAGE, ExploreOptions, write_run_page
from training.cli import Parser, main_entry
from training.errors import RunDirError
from training.safeio import refuse_links


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.explore", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("path", type=Path, metavar="RUN_DIR|SWEEP_DIR")
    p.add_argument("--out", type=Path, default=None, help=f"the page (default: RUN_DIR/analyses/{PAGE} or "
                                                          f"SWEEP_DIR/analyses/{PAGE})")
    p.add_argument("--no-compute", action="store_true", help="only the analyses already written (no computing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.explore", make_parser, body, argv)


def body(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    options = ExploreOptions(compute=not args.no_compute, progress=not args.no_progress)
    kind = kind_of(args.path)
    out = args.out if args.out is not None else args.path / "analyses" / PAGE
    check_out(out)
    if kind == "run":
        size = write_run_page(args.path, out, options)
    else:
        from analyses.explore_sweep import write_sweep_page

        size = write_sweep_page(args.path, out, options)
    print(f"wrote {out} ({size / 2**20:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return 0


def kind_of(path: Path) -> str:
    """"run" or "sweep", or BadInput for a folder that is neither."""
    from training.sweeps.spec import INDEX

    if not path.is_dir():
        raise BadInput(f"{path}: no such directory")
    if (path / "config.json").is_file():
        return "run"
    if (path / INDEX).is_file():
        return "sweep"
    raise BadInput(f"{path}: neither a run directory (config.json) nor a sweep directory ({INDEX})")


def check_out(out: Path) -> None:
    """The page can be written at `out` (checked before any work; nothing is created)."""
    if out.is_dir():
        raise BadInput(f"--out {out}: is a folder, not a file")
    if out.exists() and not out.is_file():  # a device or a pipe: replacing it by a page is never what was meant
        raise BadInput(f"--out {out}: not a regular file")
    try:
        require_writable_dir(out.parent)
        refuse_links(out.parent.parent, [out.parent.name])  # never written through a link (training.safeio)
    except RunDirError as e:
        raise BadInput(f"--out {out}: {e}") from None
    if out.exists() and not os.access(out, os.W_OK):
        raise BadInput(f"--out {out}: not writable")


if __name__ == "__main__":
    sys.exit(main())
