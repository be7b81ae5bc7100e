"""`python -m analyses.cosets RUN_DIR`: which subgroup's cosets the rows of W_U (and W_E) cluster by, and when.

For a group task (group_mul, group_conj, group_xyx), at every checkpoint: every left/right coset partition of
every proper nontrivial subgroup is scored on the rows of W_U and of the embeddings (interp.cosets: agreement of a
Ward clustering with the cosets, ARI, and the chance-corrected share of variance the cosets explain); at the last
checkpoint the best one is tested against a row-shuffle null and reported with generators in cycle notation,
order, side, conjugacy class and scores, with the first step from which it holds. For S_n, the representation
view (interp.irreps): per irrep, the logits' similarity with chi(a b c^-1), its share of logit variance and the
loss after removing it from the logits; the key irreps by our rule (character term >= 5% of the logit variance)
and by Chughtai et al.'s (similarity > 0.005) with their "percent logits explained", and the loss restricted to
ours.

Writes RUN_DIR/analyses/cosets.json, cosets_rows.png (2-D projections of the rows coloured by the best cosets),
cosets_score.png (score against step) and cosets_irreps.png (per-irrep terms, ablations and shares).

    python -m analyses.cosets checkpoints/s5
    python -m analyses.cosets checkpoints/s5 --every 2 --n-null 199
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analyses.api import BadInput, Result, as_run, options_from
from analyses.common import finite_weights, require_run_dir, write_outputs
from analyses.cosets_plots import plot_irreps, plot_rows, plot_scores, summary_lines
from training.cli import Parser, finite_float, main_entry, nonneg_int, positive_int, require
from training.config import ConfigError
from training.errors import RunDirError

# torch and the probes are imported where they are used: --help and bad flags answer at once.

NAME = "cosets"


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.cosets", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--every", type=positive_int, default=1, help="use every k-th checkpoint (the last one always)")
    p.add_argument("--n-null", type=positive_int, default=99, help="row shuffles for the significance of the final best")
    p.add_argument("--timeline-null", type=nonneg_int, default=9, help="row shuffles per checkpoint for the timeline")
    p.add_argument("--min-ari", type=finite_float, default=0.5,
                   help="smallest agreement (ARI) of the rows' clustering with the cosets that counts as structure")
    p.add_argument("--alpha", type=finite_float, default=0.05, help="significance level of the shuffle test")
    p.add_argument("--key-threshold", type=finite_float, default=0.05,
                   help="our rule: an irrep is key when its character term explains this share of the logit variance "
                        "(Chughtai et al.'s rule, similarity > 0.005, is reported beside it)")
    p.add_argument("--pcs", type=nonneg_int, default=0,
                   help="score the rows' top k principal components only, as a PCA plot shows them (0 = all)")
    p.add_argument("--subgroup", default=None, metavar="GENS",
                   help='also report this subgroup and its conjugates, generators in cycle notation separated by '
                        'commas or semicolons, e.g. "(0 3)(1 4); (1 2)(3 4)"')
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the row shuffles")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@dataclasses.dataclass(frozen=True)
class CosetsOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    every: int = 1  # use every k-th checkpoint (the last one always)
    n_null: int = 99  # row shuffles for the significance of the final best
    timeline_null: int = 9  # row shuffles per checkpoint for the timeline
    min_ari: float = 0.5  # smallest agreement (ARI) of the rows' clustering with the cosets that counts as structure
    alpha: float = 0.05  # significance level of the shuffle test
    key_threshold: float = 0.05  # an irrep is key when its character term explains this share of the logit variance
    pcs: int = 0  # score the rows' top k principal components only (0 = all)
    subgroup: str | None = None  # also report this subgroup (generators in cycle notation) and its conjugates
    seed: int = 0  # of the row shuffles
    progress: bool = True

    def __post_init__(self):
        require(0 <= self.min_ari <= 1, f"--min-ari must be in [0, 1], got {self.min_ari}")
        require(0 < self.alpha < 1, f"--alpha must be in (0, 1), got {self.alpha}")
        require(0 <= self.key_threshold <= 1, f"--key-threshold must be in [0, 1], got {self.key_threshold}")
        require(self.n_null <= 100_000 and self.timeline_null <= 100_000, "--n-null and --timeline-null: at most 100000")


SETTINGS = ("every", "n_null", "timeline_null", "min_ari", "alpha", "pcs", "key_threshold", "seed")  # in the JSON


@dataclasses.dataclass
class CosetsResult(Result):
    """cosets.json: per weight matrix, its best coset partition and its timeline; the irreps view (S_n only)."""

    FILE = f"{NAME}.json"
    run: str
    task: str
    group: str
    op: str | None
    order: int
    n_candidates: int  # coset partitions scored
    steps: list[int]
    test_acc: list[float | None]
    S_gen: int | None
    settings: dict[str, Any]  # the options that change numbers
    matrices: dict[str, Any]  # per matrix ("W_U", "W_E_x", ...): best partition, scores, timeline
    irreps: dict[str, Any]  # interp.irreps' view, or {"skipped": why}


def open_group_run(run):
    """(run, data, group) for a group-task run (a path or a Run), or BadInput naming the problem."""
    from training.tasks.groups import get_group
    from training.tasks.specs import GROUP_TASKS

    run = as_run(run)
    path = run.dir
    task = run.config.task.task
    if task not in GROUP_TASKS:
        raise BadInput(f"{path}: task '{task}' is not a group task (cosets needs one of "
                            f"{', '.join(GROUP_TASKS)})")
    try:
        G = get_group(run.config.task.group)
    except ConfigError as e:
        raise BadInput(f"{path / 'config.json'}: {e}") from None
    data = run.data
    if data.structure.get("kind") != "group":
        raise BadInput(f"{path}: task '{task}' is not a group task")
    if not run.steps:
        raise BadInput(f"{path}: no checkpoints in {path / 'ckpt'}")
    return run, data, G


def parse_subgroup(G, text: str):
    """The Subgroup generated by "(0 3)(1 4); (1 2)(3 4)" or "(0,3)(1,4), (1,2)(3,4)"."""
    import re

    from interp.groups import find_subgroup

    gens = re.findall(r"(?:\([^()]*\))+|\be\b", text)
    if not gens or re.sub(r"(?:\([^()]*\))+|\be\b|[\s,;]", "", text):
        raise BadInput(f"--subgroup: cannot read '{text}' as generators in cycle notation")
    try:
        return find_subgroup(G, gens)
    except ValueError as e:
        raise BadInput(f"--subgroup: {e} in {G.name}") from None


def analyse(run, options: CosetsOptions = CosetsOptions()) -> CosetsResult:
    """Every coset partition scored on the rows of W_U and the embeddings of a group-task run (a path or a Run) at
    every (`every`-th) checkpoint, the last checkpoint's best tested against row shuffles; for S_n the irreps.
    Every input is checked first (the run, the subgroup, each checkpoint as it is loaded)."""
    return _analyse(run, options)[0]


def load(run) -> CosetsResult:
    """The result `python -m analyses.cosets` wrote for `run` (a run directory or a Run)."""
    return CosetsResult.load(run)


def _analyse(run, options: CosetsOptions) -> tuple[CosetsResult, dict]:
    """(result, per matrix (CosetFit, CosetTimeline, its final rows)) - the figures draw the fits."""
    from interp.cosets import coset_partitions
    from interp.groups import has_characters

    run, data, G = open_group_run(run)
    asked = parse_subgroup(G, options.subgroup) if options.subgroup else None  # a bad one: one line, no work
    steps = run.steps
    steps = sorted(set(steps[:: max(options.every, 1)]) | {steps[-1]})
    rows, irrep_rows = _collect(run, data, G, steps, options)
    metrics = {r["step"]: r for r in run.metrics}
    result = CosetsResult(
        run=str(run.dir), task=data.name, group=G.name, op=data.structure.get("op"), order=G.order,
        n_candidates=len(coset_partitions(G)), steps=steps,
        test_acc=[metrics.get(s, {}).get("test_acc") for s in steps], S_gen=run.summary.get("S_gen"),
        settings={k: getattr(options, k) for k in SETTINGS}, matrices={}, irreps={})
    fits = {}
    for name, Xs in rows.items():
        result.matrices[name], fits[name] = _fit_matrix(Xs, G, steps, options, asked)
    if has_characters(G):
        result.irreps = _irreps(irrep_rows, G)
    else:
        result.irreps = {"skipped": f"characters are implemented for S_n only, not {G.name}"}
    return result, fits


def _collect(run, data, G, steps: list[int], options: CosetsOptions) -> tuple[dict[str, list], list]:
    """Per matrix its rows at every step; for S_n the logits' irrep view at every step."""
    from tqdm.auto import tqdm

    from interp.cosets import group_rows
    from interp.groups import has_characters
    from interp.irreps import all_logits, logit_irreps
    from training.models.build import build_model

    use_irreps = has_characters(G)
    answers = data.labels.numpy()
    model = build_model(run.config.model, data, seed=run.config.train.seed)

    def weights(step):
        """The checkpoint's weights, loaded into `model` too; BadInput for a bad or misfitting one."""
        try:
            w = finite_weights(run, step)
            model.load_state_dict(w)
            return w
        except RunDirError as e:
            raise BadInput(str(e)) from None
        except RuntimeError as e:  # missing, unexpected or wrong-shaped tensors
            raise BadInput(f"{run.checkpoint_path(step)}: does not fit this run's model "
                           f"({str(e).strip().splitlines()[-1].strip()})") from None

    def irrep_view(w, key=None):
        model.load_state_dict(w)
        return logit_irreps(all_logits(model, data.inputs), answers, G, options.key_threshold, key=key)

    # the last checkpoint first: it fixes the key irreps followed across training
    final_key = irrep_view(weights(steps[-1])).key if use_irreps else None
    rows: dict[str, list[np.ndarray]] = {}
    irrep_rows = []
    for step in tqdm(steps, desc=f"cosets {run.dir.name}", unit="ckpt", disable=not options.progress):
        w = weights(step)
        for name, X in group_rows(model, G.order).items():
            rows.setdefault(name, []).append(X)
        if use_irreps:
            irrep_rows.append(irrep_view(w, key=final_key))
    return rows, irrep_rows


def _fit_matrix(Xs: list[np.ndarray], G, steps: list[int], options: CosetsOptions, asked) -> tuple[dict, tuple]:
    """One matrix's JSON entry, and its (fit, timeline, final rows) for the figures."""
    from interp.cosets import coset_partitions, coset_timeline, fit_cosets
    from interp.groups import has_characters
    from interp.irreps import row_shares

    o = options
    fit = fit_cosets(Xs[-1], G, n_null=o.n_null, alpha=o.alpha, min_ari=o.min_ari, seed=o.seed, pcs=o.pcs)
    tl = coset_timeline(np.stack(Xs), steps, G, n_null=o.timeline_null, min_ari=o.min_ari, seed=o.seed, pcs=o.pcs)
    entry = {
        **fit.summary(),
        "from_step": tl.appears_at(fit.best) if fit.structure else None,
        "top_from_step": tl.top_from(fit.best),
        # per checkpoint: the final best partition's ari and score, the best partition then, the null
        "timeline": {"ari": tl.ari[:, fit.best].tolist(), "score": tl.score[:, fit.best].tolist(),
                     "top": tl.top.tolist(), "top_ari": tl.ari[np.arange(len(steps)), tl.top].tolist(),
                     "top_label": [coset_partitions(G)[i].describe() for i in tl.top],
                     "null_ari": tl.null_ari.tolist()},
        "irrep_shares": row_shares(Xs[-1], G) if has_characters(G) else None,
    }
    if asked is not None:
        i = fit.best_in_class(asked.conj_class)
        entry["asked"] = {
            "given": o.subgroup, "subgroup": asked.label(), "best_conjugate": fit.describe(i),
            "from_step": tl.appears_at(i), "ari": tl.ari[:, i].tolist(), "score": tl.score[:, i].tolist(),
            "best_ari_over_steps": float(tl.ari[:, [j for j, p in enumerate(coset_partitions(G))
                                                     if p.subgroup.conj_class == asked.conj_class]].max())}
    return entry, (fit, tl, Xs[-1])


def _irreps(irrep_rows: list, G) -> dict[str, Any]:
    """The last checkpoint's irrep view, and each quantity over the checkpoints."""
    from interp.irreps import random_shares

    final = irrep_rows[-1]
    names = final.names
    return {
        **final.to_dict(),
        "random_shares": random_shares(G),
        "timeline": {"char_explained": {n: [r.char_explained[i] for r in irrep_rows] for i, n in enumerate(names)},
                     "variance_share": {n: [r.variance_share[i] for r in irrep_rows] for i, n in enumerate(names)},
                     "ablation_loss": {n: [r.ablation_loss[i] for r in irrep_rows] for i, n in enumerate(names)},
                     "key_char_explained": [r.key_char_explained for r in irrep_rows],
                     "chughtai_logits_explained": [r.chughtai_logits_explained for r in irrep_rows],
                     "restricted_loss": [r.restricted_loss for r in irrep_rows],
                     "excluded_loss": [r.excluded_loss for r in irrep_rows],
                     "loss": [r.loss for r in irrep_rows]},
    }


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.cosets", make_parser, run_cosets, argv)


def run_cosets(args: argparse.Namespace) -> int:
    """The command: flags -> options -> analysis -> cosets.json and the figures, and a summary on stdout."""
    options = options_from(CosetsOptions, args, progress=not args.no_progress)
    require_run_dir(args.run_dir)
    run = as_run(args.run_dir)
    result, fits = _analyse(run, options)
    res = result.to_dict()
    title = f"{run.dir.name} ({result.op} in {result.group})"
    from training.tasks.groups import get_group

    files = {CosetsResult.FILE: res, f"{NAME}_rows.png": plot_rows(fits, get_group(run.config.task.group), title),
             f"{NAME}_score.png": plot_scores(res, title)}
    if "key" in result.irreps:
        files[f"{NAME}_irreps.png"] = plot_irreps(res, title)
    written = write_outputs(run, files)
    for line in summary_lines(res):
        print(line)
    print(f"written: {written[0]} and {NAME}_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
