"""`python -m analyses.fourier RUN_DIR`: the Fourier algorithm of a modular-arithmetic run, checkpoint by checkpoint.

    python -m analyses.fourier checkpoints/nanda
    python -m analyses.fourier checkpoints/nanda --ref-step 20000 --threshold 0.9

Derives the key frequencies from the reference checkpoint (the last one unless --ref-step), runs every probe of
`interp.fourier` over every checkpoint (batches of checkpoints, one thread per core), detects the phases (`interp.phases`) and writes
RUN_DIR/analyses/fourier.json (the phases included), fourier_embedding.png, fourier_clusters.png and
fourier_progress.png; nothing outside RUN_DIR/analyses/. A corrupt checkpoint, or one holding NaN/inf, is reported
and skipped; such a reference checkpoint, a directory that is not a run, a garbage summary.json or split.json, or a
run of another task stops with one line on stderr and exit status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from analyses.api import Result, as_run, options_from
from analyses.common import finite_weights, require_run_dir, write_outputs
from interp.constants import CLUSTER_THRESHOLD
from training.cli import Parser, finite_float, json_safe, main_entry, nonneg_int, positive_int, require
from training.errors import RunDirError

# torch, TransformerLens and the probes are imported where they are used: --help and bad flags answer at once.

NAME = "fourier"
CHUNK_BYTES = 32 * 2**20  # neuron activations per batch of checkpoints: nanda2023 (26 MB) goes one at a time,
# small models many at once. Larger batches only add memory traffic and page faults once one checkpoint's
# activations outgrow the caches (measured: 1 checkpoint per batch is ~10% faster than 8 for nanda2023).


@dataclasses.dataclass(frozen=True)
class FourierOptions:
    """The settings of `analyse` (the command's flags of the same names)."""

    ref_step: int | None = None  # the checkpoint the key frequencies and the figures come from (None: the last)
    threshold: float = CLUSTER_THRESHOLD  # share of a neuron's variance one frequency explains to join its cluster
    chunk: int = 0  # checkpoints probed together (0: as many as fit in CHUNK_BYTES of neuron activations)
    workers: int = os.cpu_count() or 1  # chunks probed at once, one thread each
    progress: bool = True

    def __post_init__(self):
        require(0 < self.threshold <= 1, f"--threshold must be in (0, 1], got {self.threshold}")


@dataclasses.dataclass
class FourierResult(Result):
    """fourier.json: the reference checkpoint's probes, every checkpoint's, and the phases (`interp.phases`)."""

    FILE = f"{NAME}.json"
    run: str
    task: str
    p: int
    structure: dict[str, Any]
    ref_step: int
    threshold: float
    min_cluster_size: int
    key_frequencies: list[int]
    clusters: dict[str, Any]  # the reference checkpoint's neuron clusters
    final: dict[str, Any]  # the reference checkpoint's probes
    phases: dict[str, Any]
    checkpoints: dict[str, Any]  # every probe, one list entry per checkpoint probed
    skipped: list[dict[str, Any]]  # {"step", "error"} per unreadable checkpoint
    seconds: float
    ms_per_checkpoint: float


def auto_chunk(s, d_mlp: int) -> int:
    return int(min(64, max(1, CHUNK_BYTES // (s.grid_size * d_mlp * 4))))


def make_parser() -> Parser:
    p = Parser(prog="python -m analyses.fourier", description=__doc__.splitlines()[0].split(": ", 1)[1],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory written by python -m training.run")
    p.add_argument("--ref-step", type=nonneg_int, default=None,
                   help="checkpoint the key frequencies and the figures come from (default: the last)")
    p.add_argument("--threshold", type=finite_float, default=CLUSTER_THRESHOLD,
                   help="share of a neuron's variance one frequency must explain for the neuron to join its cluster")
    p.add_argument("--chunk", type=nonneg_int, default=0, help="checkpoints probed together (0: as many as fit in "
                   "32 MB of neuron activations)")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="chunks probed at once, one thread each")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    return main_entry("analyses.fourier", make_parser, run_fourier, argv)


def run_fourier(args: argparse.Namespace) -> int:
    """The command: flags -> options -> analysis -> fourier.json and the figures under RUN_DIR/analyses/ (nothing
    else: summary.json belongs to the training loop) and a summary on stdout."""
    options = options_from(FourierOptions, args, progress=not args.no_progress)
    result, ctx = _analyse(args.run_dir, options)
    from analyses import fourier_plots

    figures = fourier_plots.draw_all(ctx.run, ctx.s, result.to_dict(), ctx.ref_probe, ctx.model, ctx.ref_weights)
    written = write_outputs(ctx.run, {FourierResult.FILE: result.to_dict(), **figures})
    print_summary(ctx.run, ctx.s, result, ctx.found, written[1:], ctx.elapsed)
    return 0


def load(run) -> FourierResult:
    """The result `python -m analyses.fourier` wrote for `run` (a run directory or a Run)."""
    return FourierResult.load(run)


def check_weights(run, step: int, weights: dict, expected: dict) -> None:
    """A checkpoint that parses but does not hold this run's model is as unusable as a truncated one."""
    got = {k: v.shape for k, v in weights.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got)) or sorted(k for k in got if got[k] != expected.get(k))
        raise RunDirError(f"{run.checkpoint_path(step)}: weights do not match the run's model ({missing[0]} ...)")


def probe_checkpoints(run, model, s, steps: list[int], key_freqs: list[int], threshold: float, chunk: int = 1,
                      workers: int = 1, bar=None) -> tuple[Any, list[int], list[dict]]:
    """Every probe for every checkpoint in `steps`: chunks of `chunk` checkpoints, `workers` chunks at a time.

    Each worker is a thread (torch releases the GIL); with one torch thread per worker they never wait on each
    other, which keeps a shared, busy machine from stalling them. Returns the probes, the steps probed and the
    skipped ones ({"step", "error"}), reported on stderr as they come. A checkpoint holding NaN or inf (a
    diverged run) is skipped like a corrupt one.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from interp import fourier

    expected = {k: v.shape for k, v in model.state_dict().items()}

    def work(chunk_steps: list[int]):
        states, ok, bad = [], [], []
        for step in chunk_steps:
            try:
                w = finite_weights(run, step)
                check_weights(run, step, w, expected)
            except RunDirError as e:
                bad.append({"step": step, "error": str(e)})
                continue
            states.append(w)
            ok.append(step)
        return ok, bad, fourier.probe_states(model, states, s, key_freqs, threshold) if states else None

    parts, done, skipped = [], [], []
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        for future in [pool.submit(work, steps[i : i + chunk]) for i in range(0, len(steps), chunk)]:
            ok, bad, probes = future.result()
            for b in bad:
                tqdm.write(f"analyses.fourier: skipping {b['error']}", file=sys.stderr)
            skipped += bad
            done += ok
            if probes is not None:
                parts.append(probes)
            if bar is not None:
                bar.update(len(ok) + len(bad))
    if not parts:
        raise RunDirError(f"{run.dir / 'ckpt'}: no readable checkpoint")
    return fourier.FourierProbes.concat(parts), done, skipped


def analyse(run, options: FourierOptions = FourierOptions()) -> FourierResult:
    """Every probe of `interp.fourier` over every checkpoint of `run` (a path or a Run), with the key frequencies
    from the reference checkpoint, and the phases. Checks every input first (the run's files, the reference
    checkpoint); a corrupt checkpoint elsewhere is skipped (reported on stderr and in `skipped`)."""
    return _analyse(run, options)[0]


@dataclasses.dataclass
class _Context:
    """What the figures and the printed summary need beside the result."""

    run: Any
    s: Any
    model: Any
    ref_probe: Any
    ref_weights: dict
    found: Any
    elapsed: float


def _analyse(run, options: FourierOptions) -> tuple[FourierResult, _Context]:
    require_run_dir(Path(run.dir if hasattr(run, "dir") else run))  # before torch loads: a wrong path answers at once
    import torch
    from tqdm.auto import tqdm

    from interp import fourier, phases

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over checkpoints instead (see probe_checkpoints)
    try:
        t0 = time.perf_counter()
        run, s, model, ref, ref_weights = open_fourier_run(run, options.ref_step)
        ref_probe = fourier.probe_states(model, [ref_weights], s, None, options.threshold)
        key_freqs = ref_probe.key_freqs
        steps = run.steps
        bar = tqdm(total=len(steps), disable=not options.progress, desc=f"fourier {run.dir.name}", unit="ckpt",
                   dynamic_ncols=True)
        chunk = options.chunk or auto_chunk(s, ref_probe.neuron_share.shape[1])
        probes, done, skipped = probe_checkpoints(run, model, s, steps, key_freqs, options.threshold, chunk,
                                                  options.workers, bar)
        bar.close()
    finally:
        torch.set_num_threads(threads)
    elapsed = time.perf_counter() - t0
    found = phases.detect_phases(run.metrics, done, probes.test_loss, probes.excluded_loss if key_freqs else None,
                                 run.data.d_vocab_out)
    result = build_result(run, s, ref, ref_probe, done, probes, found, skipped, elapsed, options.threshold)
    return result, _Context(run, s, model, ref_probe, ref_weights, found, elapsed)


def open_fourier_run(run, ref_step: int | None):
    """(run, structure, model, reference step, its weights), or the one-line error naming what is wrong."""
    from interp.modular import NotModularError, modular_structure
    from training.models.build import build_model
    from training.constants import CONFIG

    run = as_run(run)
    try:
        s = modular_structure(run.data)
    except NotModularError as e:
        raise NotModularError(f"{run.dir / CONFIG}: {e}") from None
    model = build_model(run.config.model, run.data, seed=run.config.train.seed)  # any model: probes use its interface
    steps = run.steps
    ref = steps[-1] if ref_step is None else ref_step
    if ref not in steps:
        raise RunDirError(f"{run.checkpoint_path(ref)}: no checkpoint at --ref-step {ref}")
    try:
        ref_weights = finite_weights(run, ref)
        check_weights(run, ref, ref_weights, {k: v.shape for k, v in model.state_dict().items()})
    except RunDirError as e:
        raise RunDirError(f"{e}; the key frequencies come from this checkpoint (choose another with --ref-step)") \
            from None
    return run, s, model, ref, ref_weights


def _num(x: Any, digits: int | None = None) -> float | None:
    x = float(x)
    return None if not math.isfinite(x) else (x if digits is None else round(x, digits))


def _list(a, digits: int | None = 6) -> list:
    """JSON list of a probe tensor (or array), floats rounded to `digits` (None: full precision)."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return json_safe(a.tolist())
    a = a.astype(np.float64)
    return json_safe((a if digits is None else np.round(a, digits)).tolist())


def build_result(run, s, ref: int, ref_probe, steps: list[int], probes, found, skipped: list[dict], elapsed: float,
                 threshold: float) -> FourierResult:
    from interp import fourier

    r = ref_probe
    key = r.key_freqs
    d_mlp = r.neuron_freq.shape[1]
    sizes = {int(k) + 1: int(v) for k, v in enumerate(r.cluster_sizes[0]) if v > 0}
    return FourierResult(
        run=str(run.dir), task=s.op, p=s.p, structure=s.to_dict(),
        ref_step=ref, threshold=threshold, min_cluster_size=fourier.min_cluster_size(d_mlp),
        key_frequencies=key,
        clusters={"sizes": {str(k): v for k, v in sizes.items()}, "key_sizes": {str(k): sizes.get(k, 0) for k in key},
                     "in_clusters": int(r.in_clusters[0]), "n_neurons": d_mlp,
                     "share_in_clusters": round(float(r.in_clusters[0]) / d_mlp, 4),
                  "neuron_freq": r.neuron_freq[0].tolist(), "neuron_share": _list(r.neuron_share[0], 4)},
        final={"logit_periodicity": _num(r.periodicity[0], 4),
                  "logit_periodicity_by_freq": {str(k): _num(r.periodicity_by_freq[0, k - 1], 4) for k in key},
                  "restricted_loss": _num(r.restricted_loss[0]), "excluded_loss": _num(r.excluded_loss[0]),
                  "train_loss": _num(r.train_loss[0]), "test_loss": _num(r.test_loss[0]),
                  "gini_embed": _num(r.gini_embed[0], 4), "gini_unembed": _num(r.gini_unembed[0], 4),
                  "weight_norm": _num(r.weight_norm[0], 4),
                  "attention_from_eq": None if r.attention is None else _list(r.attention[0], 4),
                  "embed_fourier_norms": _list(r.embed_norms[0], 5), "unembed_fourier_norms": _list(r.unembed_norms[0], 5),
               "basis": list(r.embed_names)},
        phases=found.to_dict(),
        checkpoints={
            # losses at full precision: a grokked run's reach 1e-7, where a fixed number of decimals keeps 3 digits
            "step": steps, "train_loss": _list(probes.train_loss, None), "test_loss": _list(probes.test_loss, None),
            "restricted_loss": _list(probes.restricted_loss, None), "excluded_loss": _list(probes.excluded_loss, None),
            "gini_embed": _list(probes.gini_embed, 5),
            "gini_unembed": _list(probes.gini_unembed, 5), "weight_norm": _list(probes.weight_norm, 5),
            "logit_periodicity": _list(probes.periodicity, 5), "in_clusters": probes.in_clusters.tolist(),
            "cluster_sizes_key": {str(k): probes.cluster_sizes[:, k - 1].tolist() for k in key},
            # the key frequencies each checkpoint would give on its own (its clusters)
            "key_frequencies": [probes.derived_key_frequencies(c) for c in range(len(steps))],
            "logit_periodicity_by_freq": _list(probes.periodicity_by_freq, 4),
            "embed_norms_by_freq": _list(fourier.frequency_norms(probes.embed_norms), 4),
            # mean over heads of the first layer's attention from '=' to [a, b, '=']
            "attention_from_eq": None if probes.attention is None else _list(probes.attention[:, 0].mean(1), 4),
        },
        skipped=skipped,
        seconds=round(elapsed, 2), ms_per_checkpoint=round(1000 * elapsed / max(len(steps), 1), 1),
    )


def print_summary(run, s, result: FourierResult, found, figures: list[Path], elapsed: float) -> None:
    key, c = result.key_frequencies, result.clusters
    n = len(result.checkpoints["step"])
    print(f"{s.description}")
    print(f"{n} checkpoints in {elapsed:.1f} s ({1000 * elapsed / max(n, 1):.0f} ms each); reference step "
          f"{result.ref_step}" + (f"; skipped {len(result.skipped)} corrupt" if result.skipped else ""))
    print(f"key frequencies: {', '.join(map(str, key)) if key else 'none (no neuron cluster; has the run grokked?)'}")
    sizes = ", ".join(f"{k}: {v}" for k, v in c["key_sizes"].items())
    print(f"neuron clusters (share >= {result.threshold}): {sizes or '-'}; {c['in_clusters']}/{c['n_neurons']} "
          f"neurons ({100 * c['share_in_clusters']:.1f}%) in clusters")
    f = result.final
    share = "n/a" if f["logit_periodicity"] is None else f"{100 * f['logit_periodicity']:.1f}%"
    print(f"logit periodicity: the key frequencies explain {share} of the logit variance; "
          f"restricted loss {_fmt(f['restricted_loss'])}, excluded loss {_fmt(f['excluded_loss'])}")
    print(f"phases: {found.describe()}")
    print(f"wrote {run.analyses_dir / FourierResult.FILE}, " + ", ".join(p.name for p in figures))


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


if __name__ == "__main__":
    sys.exit(main())
