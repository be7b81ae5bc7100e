"""`python -m analyses.explore RUN_DIR|SWEEP_DIR [--out FILE]`: one interactive page to scrub through training.

    python -m training.run && python -m analyses.explore checkpoints/default
    python -m analyses.explore checkpoints/frac            # a sweep: S_mem / S_gen per value, linked to run pages

A run's page (default RUN_DIR/analyses/explore.html) has a checkpoint slider that drives every panel together:
the loss and accuracy curves (log axes) with a cursor at the chosen step and S_mem, S_gen and the phase ends
marked, and the panels of the analyses that apply to the run's task (modular arithmetic: analyses.fourier;
groups: analyses.cosets; parity: analyses.sparsity; sequence tasks: analyses.sequence) and of any other the run
already has (e.g. analyses.landscape). An analysis already written under RUN_DIR/analyses/ is reused; a missing
one of the task's family is computed (analyse()) and its JSON written there, unless --no-compute.

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
import dataclasses
import html
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from analyses.api import BadInput, as_run
from analyses.common import require_writable_dir, write_outputs
from training.cli import Parser, main_entry
from training.errors import RunDirError
from training.safeio import refuse_links

PAGE = "explore.html"
# task family (TaskData.structure["kind"]) -> the analyses whose panels its page shows
FAMILIES = {"modular": ("fourier",), "group": ("cosets",), "parity": ("sparsity",), "sequence": ("sequence",)}
OPTIONS = {"fourier": "FourierOptions", "cosets": "CosetsOptions", "sparsity": "SparsityOptions",
           "sequence": "SequenceOptions", "landscape": "LandscapeOptions"}
RESULTS = {"fourier": "FourierResult", "cosets": "CosetsResult", "sparsity": "SparsityResult",
           "sequence": "SequenceResult", "landscape": "LandscapeResult"}


@dataclasses.dataclass(frozen=True)
class ExploreOptions:
    compute: bool = True  # compute the analyses a page needs that the run does not have yet
    progress: bool = True


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
    from training.sweep import INDEX

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


def write_page(out: Path, text: str) -> int:
    from training.safeio import atomic_write_bytes, output_dir

    data = text.encode()
    output_dir(out.parent)
    atomic_write_bytes(out, data)
    return len(data)


# --- a run's page ------------------------------------------------------------------------------------------


def write_run_page(run_dir: Path, out: Path, options: ExploreOptions = ExploreOptions(), js: Path | None = None) -> int:
    """The run's page at `out`: plotly.js embedded, or loaded from the file `js` (a sweep's pages share one)."""
    run = as_run(run_dir)  # every file checked, checkpoints required: one line before any work
    refuse_links(run.dir, ["analyses"])  # computed analyses go there: never through a link
    src = None if js is None else Path(os.path.relpath(js, out.parent)).as_posix()
    computed: dict[str, Any] = {}
    size = write_page(out, run_page(run, options, src, computed))
    if computed:  # after the page: a page that cannot be written leaves the run as it was
        write_outputs(run, computed)
    return size


def results_for(run, options: ExploreOptions, computed: dict[str, Any]) -> dict[str, Any]:
    """The typed results of the analyses that apply to `run`: loaded when written, else computed unless
    options.compute is False (their JSON put in `computed`, {file name: dict}, to be written under
    RUN_DIR/analyses/ for the next time)."""
    from training.rundir import ANALYSES_DIR

    from interp.modular import NotModularError

    not_applicable = (BadInput, NotModularError)  # the run's task does not fit the analysis (a bad file still stops)
    where = run.dir / ANALYSES_DIR  # not run.analyses_dir, which creates the folder
    family = FAMILIES.get(run.data.structure.get("kind"), ())
    out = {}
    for name in RESULTS:  # the family's analyses, and any other the run already has
        mod = importlib.import_module(f"analyses.{name}")
        result_cls = getattr(mod, RESULTS[name])
        if name not in family and not (where / result_cls.FILE).is_file():
            continue
        if (where / result_cls.FILE).is_file():
            out[name] = mod.load(run)
        elif options.compute:
            opts = getattr(mod, OPTIONS[name])(progress=options.progress)
            try:
                out[name] = mod.analyse(run, opts)
            except not_applicable as e:  # e.g. modular addition of k > 2 operands: no Fourier grid
                print(f"analyses.explore: no {name} panels ({e})", file=sys.stderr)
                continue
            computed[result_cls.FILE] = out[name].to_dict()
    return out


def run_page(run, options: ExploreOptions = ExploreOptions(), js_src: str | None = None,
             computed: dict[str, Any] | None = None) -> str:
    """The run's page (`computed` receives the JSON of the analyses computed for it)."""
    from analyses import explore_families as fam
    from analyses import explore_panels as ep
    from analyses.explore_page import render

    res = results_for(run, options, {} if computed is None else computed)
    steps = run.steps
    phases = res["fourier"].phases if "fourier" in res else None
    panels = ep.curves(steps, run.metrics, run.summary, phases)
    if "fourier" in res:
        panels += ep.fourier_panels(steps, res["fourier"], ep.neuron_grid(run, res["fourier"]))
    if "cosets" in res:
        panels += fam.cosets_panels(steps, run, res["cosets"])
    if "sparsity" in res:
        panels += fam.sparsity_panels(steps, res["sparsity"])
    if "sequence" in res:
        panels += fam.sequence_panels(steps, res["sequence"])
    if "landscape" in res:
        panels.append(fam.landscape_panel(steps, res["landscape"], run.metrics))
    s = run.summary
    c = run.config
    intro = [f"task <code>{html.escape(c.task.task)}</code>, {len(steps)} checkpoints; S_mem {s.get('S_mem')}, "
             f"S_gen {s.get('S_gen')}" + (f"; phases: {describe(phases)}" if phases else ""),
             "analyses shown: " + (", ".join(sorted(res)) or "none (only the training curves)") +
             ". Move the slider (or focus it and use the arrow keys) to choose a checkpoint."]
    return render(f"{run.dir.name}: grokscope explorer", intro, {"steps": steps, "panels": panels}, js_src=js_src)


def describe(phases: dict[str, Any]) -> str:
    f = lambda k: "-" if phases.get(k) is None else str(phases[k])  # noqa: E731
    return (f"memorisation ends {f('memorisation_end')}, circuit formation ends {f('circuit_formation_end')}, "
            f"cleanup ends {f('cleanup_end')}")


if __name__ == "__main__":
    sys.exit(main())
