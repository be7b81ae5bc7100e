"""`python -m analyses.sparsity RUN_DIR`: memorising-versus-generalising circuit sparsity over a run's checkpoints.

    python -m analyses.sparsity checkpoints/parity-blog
    python -m analyses.sparsity checkpoints/nanda2023 --layer 0 --tsne-steps 0 1400 10000

For every checkpoint: effective sparsity (the fewest neurons, k >= 1, by incoming-weight norm without the bias,
reproducing exactly the full network's training accuracy; Merrill et al. 2023, interp.sparsity), the faithfulness
of that subnetwork on the test set against random subnetworks of the same size, the faithfulness of the final
checkpoint's circuit at every checkpoint against one random set (as Merrill et al. follow it), per-neuron norms, the spectral norm of every weight matrix, L1/L2, Hoyer and
Gini sparsity of the hidden layer, and how well the hidden representation separates the classes of the k relevant
bits (parity) or the labels. At a few checkpoints (init, S_mem, midway, S_gen, last, or --tsne-steps): a KDE of the
hidden-layer weights and a t-SNE of the hidden representations.

Writes RUN_DIR/analyses/sparsity.json, sparsity.png, sparsity_kde.png, sparsity_tsne.png and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analyses.api import BadInput, Result, as_run, options_from
from analyses.common import check_checkpoints, require_run_dir, write_and_summarise
from analyses.sparsity_plots import describe, plot_kde, plot_progress, plot_tsne
from training.cli import Parser, main_entry, nonneg_int, positive_int, require

# torch and the probes are imported where they are used: --help and bad flags answer at once.

NAME = "sparsity"
RULES = ("merrill2023", "reach")
SEP_POINTS = 500  # test inputs class_separation is measured on (a seeded subsample)
PER_CHECKPOINT = ("effective_sparsity", "full_train_acc", "faithfulness", "random_faithfulness",
                  "subnetwork_test_acc", "full_test_acc", "random_test_acc", "final_circuit_faithfulness",
                  "final_circuit_random_faithfulness", "W_in_l1_l2", "W_in_hoyer", "W_in_gini", "neuron_norm_gini",
                  "neuron_norm_hoyer", "class_separation")


@dataclasses.dataclass(frozen=True)
class SparsityOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    layer: int = 0  # hidden layer (MLP) or block (transformer) to probe
    rule: str = "merrill2023"  # effective sparsity: Merrill et al.'s, or the earlier "reach"
    n_random: int = 20  # random subnetworks per checkpoint for the baseline
    tsne_steps: tuple[int, ...] | None = None  # checkpoints of the KDE and t-SNE panels (None: chosen_steps)
    tsne_points: int = 1000  # inputs embedded by t-SNE (a seeded subsample)
    tsne: bool = True  # False: skip t-SNE (the slowest part)
    progress: bool = True

    def __post_init__(self):
        require(self.rule in RULES, f"--rule must be one of {', '.join(RULES)}, got {self.rule}")
        require(self.n_random <= 10_000, f"--n-random must be <= 10000, got {self.n_random}")
        require(10 <= self.tsne_points <= 100_000, f"--tsne-points must be in [10, 100000], got {self.tsne_points}")


@dataclasses.dataclass
class SparsityResult(Result):
    """sparsity.json: per-checkpoint lists (one entry per step in `steps`), the panels' data and the headline."""

    FILE = f"{NAME}.json"
    run: str
    task: str
    layer: str
    hook: str
    d_mlp: int
    linear_readout: bool
    n_random: int
    rule: str
    final_circuit_size: int
    S_mem: int | None
    S_gen: int | None
    switch_step: int | None
    steps: list[int]
    train_acc: list[float | None]
    test_acc: list[float | None]
    effective_sparsity: list[int]
    full_train_acc: list[float]
    faithfulness: list[float]
    random_faithfulness: list[float]
    subnetwork_test_acc: list[float]
    full_test_acc: list[float]
    random_test_acc: list[float]
    final_circuit_faithfulness: list[float]
    final_circuit_random_faithfulness: list[float]
    W_in_l1_l2: list[float]
    W_in_hoyer: list[float]
    W_in_gini: list[float]
    neuron_norm_gini: list[float]
    neuron_norm_hoyer: list[float]
    class_separation: list[float]
    spectral_norms: dict[str, list]
    interface_spectral_norms: dict[str, list[float]]
    neuron_norms: list[list[float]]
    kde: dict[str, Any]
    tsne: dict[str, Any]
    class_names: list[str]
    headline: dict[str, Any] = dataclasses.field(default_factory=dict)  # before/after numbers (`headline`)


def first_at_or_after(steps: list[int], target: int | None) -> int | None:
    """The first checkpoint at or after `target` (the last one if none is)."""
    if target is None or not steps:
        return None
    return next((s for s in steps if s >= target), steps[-1])


def chosen_steps(steps: list[int], s_mem: int | None, s_gen: int | None) -> list[int]:
    """Checkpoints for the KDE and t-SNE panels: init, memorisation, midway to generalisation, generalisation, last."""
    picks = [steps[0], first_at_or_after(steps, s_mem)]
    if s_mem is not None:
        end = s_gen if s_gen is not None else steps[-1]
        picks.append(first_at_or_after(steps, (s_mem + end) // 2))
    picks += [first_at_or_after(steps, s_gen), steps[-1]]
    return sorted({s for s in picks if s is not None})


def classes_for(data) -> tuple[np.ndarray, list[str]]:
    """Colour classes for the hidden representations: the k relevant bits (parity), else the label."""
    from interp import sparsity as sp

    if data.structure.get("kind") == "parity":
        bits = data.structure["bits"]
        cls = sp.bit_classes(data.inputs, bits)
        names = [" ".join(f"x{b}={'+' if (c >> i) & 1 else '-'}" for i, b in enumerate(bits)) for c in range(2 ** len(bits))]
        return cls, names
    return data.labels.numpy(), []


def final_circuit(run, model, x_tr, y_tr, loss: str, layer: int, rule: str) -> np.ndarray:
    """[d_mlp] bool: the last checkpoint's effective subnetwork, the circuit Merrill et al. follow over training."""
    from interp import sparsity as sp

    model.load_state_dict(run.weights(run.steps[-1]))
    return sp.effective_sparsity(model, x_tr, y_tr, loss, layer, rule=rule).keep


def analyse(run, options: SparsityOptions = SparsityOptions()) -> SparsityResult:
    """All probes over the checkpoints of `run` (a path or a Run), and the headline.

    Two faithfulness measures (test set): ours, each checkpoint's own effective subnetwork against the mean of
    `n_random` random subnetworks of its size; and Merrill et al.'s, the final checkpoint's circuit at every
    checkpoint against one random set of its size (drawn once, seed 0, the same set at every checkpoint)."""
    from tqdm.auto import tqdm

    from training.errors import RunDirError

    ctx = _Setup.of(as_run(run), options)
    rows: dict[str, list] = {k: [] for k in PER_CHECKPOINT}
    spectral: dict[str, list] = {}
    views: dict[str, list] = {}  # spectral norms of the interface's matrices, for the figure
    norms_over_time, kde, tsne = [], {}, {}
    for step, weights in tqdm(ctx.run.iter_weights(ctx.steps), total=len(ctx.steps), desc="sparsity",
                              disable=not options.progress):
        if isinstance(weights, RunDirError):
            raise weights
        values, W, norms = ctx.probe(step, weights)
        for k, v in values.items():
            rows[k].append(v)
        ctx.matrix_norms(weights, spectral, views)
        norms_over_time.append(norms)
        if step in ctx.picks:
            kde[step] = W.ravel()
            if options.tsne:
                tsne[step] = ctx.tsne_panel(step, options.tsne_points)
    res = ctx.result(rows, spectral, views, np.stack(norms_over_time), kde, tsne)
    res.headline = headline(res.to_dict())
    return res


def load(run) -> SparsityResult:
    """The result `python -m analyses.sparsity` wrote for `run` (a run directory or a Run)."""
    return SparsityResult.load(run)


@dataclasses.dataclass
class _Setup:
    """Everything checked and prepared before the first checkpoint is probed."""

    run: Any
    options: SparsityOptions
    model: Any
    hidden: Any  # interp.sparsity.hidden_layer's view of the probed layer
    steps: list[int]
    picks: list[int]  # the checkpoints of the KDE and t-SNE panels
    split: tuple  # x_tr, y_tr, x_te, y_te
    classes: np.ndarray
    class_names: list[str]
    separation: tuple  # the inputs and classes class_separation is measured on
    final_keep: np.ndarray

    @classmethod
    def of(cls, run, options: SparsityOptions) -> _Setup:
        """BadInput (one line, before any work) for a task, layer or panel step the probes cannot use."""
        import torch

        from interp import sparsity as sp
        from training.models.build import build_model

        data = run.data
        if data.structure.get("kind") == "sequence":
            raise BadInput(f"{run.dir}: task '{data.name}' predicts at several positions (a sequence task); "
                           "sparsity probes need one answer per example")
        if data.labels.dtype != torch.long:
            raise BadInput(f"{run.dir}: task '{data.name}' is a regression; sparsity probes need class labels")
        steps = run.steps
        if not steps:
            raise BadInput(f"{run.dir}: no checkpoints")
        model = build_model(run.config.model, data, seed=run.config.train.seed).eval()
        try:
            h = sp.hidden_layer(model, options.layer)
        except ValueError as e:
            raise BadInput(f"--layer: {e}") from None
        split = (data.inputs[data.train_idx], data.labels[data.train_idx], data.inputs[data.test_idx],
                 data.labels[data.test_idx])
        classes, class_names = classes_for(data)
        sep_idx = np.sort(np.random.default_rng(0).permutation(len(data.test_idx))[:SEP_POINTS])
        separation = (split[2][sep_idx], classes[data.test_idx.numpy()][sep_idx])
        summary = run.summary
        picks = sorted(set(options.tsne_steps)) if options.tsne_steps else \
            chosen_steps(steps, summary.get("S_mem"), summary.get("S_gen"))
        missing = [s for s in picks if s not in steps]
        if missing:
            raise BadInput(f"--tsne-steps: no checkpoint at step(s) {', '.join(map(str, missing))} in {run.dir}")
        check_checkpoints(run, steps)  # corrupt or NaN (a diverged run): one line before any work
        keep = final_circuit(run, model, split[0], split[1], data.loss, options.layer, options.rule)
        return cls(run, options, model, h, steps, picks, split, classes, class_names, separation, keep)

    def probe(self, step: int, weights: dict) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """One checkpoint's PER_CHECKPOINT values, its hidden W_in and its neuron norms."""
        from interp import sparsity as sp

        model, layer, loss, rule = self.model, self.options.layer, self.run.data.loss, self.options.rule
        x_tr, y_tr, x_te, y_te = self.split
        model.load_state_dict(weights)
        es = sp.effective_sparsity(model, x_tr, y_tr, loss, layer, rule=rule)
        f = sp.faithfulness(model, es.keep, x_te, y_te, loss, layer, n_random=self.options.n_random, seed=step)
        fc = sp.faithfulness(model, self.final_keep, x_te, y_te, loss, layer, n_random=1, seed=0)
        W = sp.hidden_layer(model, layer).W_in.numpy().copy()  # the parameter is overwritten by the next load
        hid = sp.hidden_activations(model, self.separation[0], layer)
        values = {"effective_sparsity": es.n_neurons, "full_train_acc": es.full_accuracy,
                  "faithfulness": f["faithfulness"], "random_faithfulness": f["random_faithfulness"],
                  "subnetwork_test_acc": f["subnetwork_accuracy"], "full_test_acc": f["full_accuracy"],
                  "random_test_acc": f["random_accuracy"], "final_circuit_faithfulness": fc["faithfulness"],
                  "final_circuit_random_faithfulness": fc["random_faithfulness"],
                  "W_in_l1_l2": float(sp.l1_l2_ratio(W.ravel())),
                  "W_in_hoyer": float(sp.hoyer(W.ravel())), "W_in_gini": float(sp.gini(W.ravel())),
                  "neuron_norm_gini": float(sp.gini(es.norms)), "neuron_norm_hoyer": float(sp.hoyer(es.norms)),
                  "class_separation": sp.class_separation(hid, self.separation[1])}
        return values, W, es.norms

    def matrix_norms(self, weights: dict, spectral: dict, views: dict) -> None:
        """Append this checkpoint's spectral norms: of every weight matrix, and of the interface's views."""
        import torch

        from interp import sparsity as sp

        for name, v in sp.spectral_norms(weights).items():
            spectral.setdefault(name, []).append(v.tolist())
        layer = self.options.layer
        readout = self.model.neuron_readout(layer, approximate=True)
        for name, w in {"hidden W_in": self.model.neuron_weights(layer)[0], "W_U": self.model.W_U,
                        "neuron readout": readout}.items():
            if w is not None:
                views.setdefault(name, []).append(float(torch.linalg.matrix_norm(w.detach().double(), ord=2)))

    def tsne_panel(self, step: int, points: int) -> dict[str, Any]:
        from interp import sparsity as sp

        data = self.run.data
        idx = np.sort(np.random.default_rng(step).permutation(len(data.inputs))[:points])
        emb = sp.tsne(sp.hidden_activations(self.model, data.inputs[idx], self.options.layer), seed=0)
        return {"xy": emb.round(3).tolist(), "classes": self.classes[idx].tolist(), "index": idx.tolist()}

    def result(self, rows, spectral, views, norms: np.ndarray, kde: dict, tsne: dict) -> SparsityResult:
        from interp import sparsity as sp

        lo = min(float(w.min()) for w in kde.values())
        hi = max(float(w.max()) for w in kde.values())
        pad = 0.05 * (hi - lo + 1e-12)
        grid = np.linspace(lo - pad, hi + pad, 256)
        run, data, h, steps = self.run, self.run.data, self.hidden, self.steps
        metrics, summary = {r["step"]: r for r in run.metrics}, run.summary
        return SparsityResult(
            run=str(run.dir), task=data.structure.get("op", data.name), layer=h.name, hook=h.hook, d_mlp=h.d_mlp,
            linear_readout=h.readout is not None, n_random=self.options.n_random, rule=self.options.rule,
            final_circuit_size=int(self.final_keep.sum()), S_mem=summary.get("S_mem"), S_gen=summary.get("S_gen"),
            switch_step=summary.get("switch_step"), steps=steps,
            train_acc=[metrics.get(s, {}).get("train_acc") for s in steps],
            test_acc=[metrics.get(s, {}).get("test_acc") for s in steps], **rows,
            spectral_norms=spectral, interface_spectral_norms=views, neuron_norms=norms.round(5).tolist(),
            kde={"grid": grid.tolist(), "density": {str(s): sp.weight_kde(w, grid)[1].tolist() for s, w in kde.items()}},
            tsne={str(k): v for k, v in tsne.items()}, class_names=self.class_names)


def headline(res: dict[str, Any]) -> dict[str, Any]:
    """Before (at memorisation) / after (at generalisation and at the end) numbers."""
    steps = res["steps"]
    at = {name: first_at_or_after(steps, res.get(key)) for name, key in (("mem", "S_mem"), ("gen", "S_gen"))}
    at["init"], at["last"] = steps[0], steps[-1]

    def val(key: str, step: int | None):
        return None if step is None else res[key][steps.index(step)]

    spec = np.array(res["interface_spectral_norms"]["hidden W_in"], dtype=float)
    out: dict[str, Any] = {f"{k}_step": v for k, v in at.items()}
    for k, s in at.items():
        out[f"effective_sparsity_{k}"] = val("effective_sparsity", s)
        out[f"faithfulness_{k}"] = val("faithfulness", s)
        out[f"random_faithfulness_{k}"] = val("random_faithfulness", s)
        out[f"final_circuit_faithfulness_{k}"] = val("final_circuit_faithfulness", s)
        out[f"final_circuit_random_faithfulness_{k}"] = val("final_circuit_random_faithfulness", s)
        out[f"spectral_norm_{k}"] = None if s is None or not len(spec) else float(spec[steps.index(s)])
    if at["gen"] is not None:  # the circuit keeps changing after S_gen: its range over the checkpoints since
        after = [e for s, e in zip(steps, res["effective_sparsity"]) if s >= at["gen"]]
        out["effective_sparsity_after_gen_min"] = int(min(after))
        out["effective_sparsity_after_gen_median"] = float(np.median(after))
        out["effective_sparsity_after_gen_max"] = int(max(after))
    if len(spec):
        out["spectral_norm_name"] = f"{res['layer']}.W_in"
        out["spectral_norm_peak"], out["spectral_norm_peak_step"] = float(spec.max()), steps[int(spec.argmax())]
        out["spectral_norm_min"], out["spectral_norm_min_step"] = float(spec.min()), steps[int(spec.argmin())]
    return out


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.sparsity", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--layer", type=nonneg_int, default=0, help="hidden layer (MLP) or block (transformer) to probe")
    p.add_argument("--rule", choices=RULES, default="merrill2023",
                   help="effective sparsity: Merrill et al.'s (norms without bias, k >= 1, exactly the full training "
                        "accuracy) or the earlier 'reach' (norms with bias, k >= 0, at least that accuracy)")
    p.add_argument("--n-random", type=positive_int, default=20,
                   help="random subnetworks per checkpoint for the baseline")
    p.add_argument("--tsne-steps", type=nonneg_int, nargs="+", default=None, metavar="STEP",
                   help="checkpoints for the KDE and t-SNE panels (default: init, S_mem, midway, S_gen, last)")
    p.add_argument("--tsne-points", type=positive_int, default=1000,
                   help="inputs embedded by t-SNE (a seeded subsample)")
    p.add_argument("--no-tsne", action="store_true", help="skip t-SNE (the slowest part)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.sparsity", make_parser, run_sparsity, argv)


def run_sparsity(args: argparse.Namespace) -> int:
    """The command: flags -> options -> analysis -> sparsity.json and the figures, and a summary on stdout."""
    options = options_from(SparsityOptions, args, tsne_steps=tuple(args.tsne_steps) if args.tsne_steps else None,
                           tsne=not args.no_tsne, progress=not args.no_progress)
    require_run_dir(args.run_dir)
    run = as_run(args.run_dir)
    res = analyse(run, options).to_dict()
    files = {SparsityResult.FILE: res, "sparsity.png": plot_progress(res), "sparsity_kde.png": plot_kde(res)}
    if res["tsne"]:
        files["sparsity_tsne.png"] = plot_tsne(res)
    return write_and_summarise(run, files, describe(res))


if __name__ == "__main__":
    sys.exit(main())
