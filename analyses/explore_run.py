"""A run's page of `python -m analyses.explore` (the command, its checks and the sweep's page are in
analyses.explore and analyses.explore_sweep): the analyses that apply to the run, loaded or computed, drawn as
panels that follow one checkpoint slider."""

from __future__ import annotations

import dataclasses
import html
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from analyses.api import BadInput, as_run
from analyses.common import write_outputs
from training.safeio import refuse_links

PAGE = "explore.html"
# task family (TaskData.structure["kind"]) -> the analyses whose panels its page shows
FAMILIES = {"modular": ("fourier",), "group": ("cosets",), "parity": ("sparsity",), "sequence": ("sequence",)}
EVERY_RUN = ("landscape",)  # analyses that apply to a run of any task: the loss against the weight norm
OPTIONS = {"fourier": "FourierOptions", "cosets": "CosetsOptions", "sparsity": "SparsityOptions",
           "sequence": "SequenceOptions", "landscape": "LandscapeOptions"}
RESULTS = {"fourier": "FourierResult", "cosets": "CosetsResult", "sparsity": "SparsityResult",
           "sequence": "SequenceResult", "landscape": "LandscapeResult"}


@dataclasses.dataclass(frozen=True)
class ExploreOptions:
    compute: bool = True  # compute the analyses a page needs that the run does not have yet
    progress: bool = True


def write_page(out: Path, text: str) -> int:
    from training.safeio import atomic_write_bytes, output_dir

    data = text.encode()
    output_dir(out.parent)
    atomic_write_bytes(out, data)
    return len(data)


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
    from training.constants import ANALYSES_DIR

    from interp.modular import NotModularError

    not_applicable = (BadInput, NotModularError)  # the run's task does not fit the analysis (a bad file still stops)
    where = run.dir / ANALYSES_DIR  # not run.analyses_dir, which creates the folder
    family = FAMILIES.get(run.data.structure.get("kind"), ()) + EVERY_RUN
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
