"""Speed of the Fourier analysis: the batched probes against a naive per-checkpoint loop, in one process.

    python -m tests.benchmarks.fourier_speed RUN_DIR [--naive 4] [--no-end-to-end]

RUN_DIR is a one-layer modular-addition run (the nanda2023 preset is the case that matters). Naive, per
checkpoint: build the model, `run_with_cache` on all p^2 inputs, the full 2-D Fourier transform of the neuron
activations by basis matmuls, the ablations one key frequency at a time (the demo's code), and the logit
periodicity with one [p, p, p] table cos(w(a+b-c)) per frequency (the demo's 56 x p^3 cube, a slice at a time).
Batched: `interp.fourier.probe_states` over chunks of checkpoints, as `python -m analyses.fourier` runs it.
Both compute the same numbers (checked here). Then the whole command on a copy of the run, end to end.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from analyses.fourier import auto_chunk, probe_checkpoints
from interp import fourier
from interp.modular import modular_structure
from training.models.build import build_model
from training.runs.reader import Run


WORKERS = os.cpu_count() or 1


@torch.no_grad()
def naive_probe(run: Run, step: int, s, key: list[int], threshold: float) -> dict[str, float]:
    """Everything for one checkpoint the straightforward way (additive one-layer transformer)."""
    n = s.n
    model = run.model(step)
    logits, cache = model.run_with_cache(s.tokens)
    logits = logits[:, -1]  # the answer's
    acts = cache["blocks.0.mlp.hook_post"][:, -1]
    resid = cache["blocks.0.hook_resid_mid"][:, -1]
    W_out, b_out, W_U = model.blocks[0].mlp.W_out, model.blocks[0].mlp.b_out, model.unembed.W_U
    basis = fourier.fourier_basis(n)
    F, freqs = basis.matrix, basis.freqs

    centred = (acts - acts.mean(0)).reshape(n, n, -1)
    spectrum = torch.einsum("fa,gb,abm->fgm", F, F, centred).double()  # full 2-D transform
    total = spectrum.pow(2).sum((0, 1))
    share = torch.stack([spectrum[(freqs == 0) | (freqs == k)][:, (freqs == 0) | (freqs == k)].pow(2).sum((0, 1))
                         for k in range(1, n // 2 + 1)]) / total
    in_clusters = int((share.max(0).values >= threshold).sum())

    a = torch.arange(n)[:, None]
    b = torch.arange(n)[None, :]
    key_part = torch.zeros_like(acts)
    for k in key:  # the demo's loop: project onto cos/sin(w(a+b)), normalised
        for fn in (torch.cos, torch.sin):
            vec = fn(2 * math.pi * k / n * (a + b)).flatten()[:, None]
            vec = vec / vec.norm()
            key_part += (acts * vec).sum(0) * vec
    W_L = W_out @ W_U
    restricted = (acts.mean(0) + key_part) @ W_L
    restricted += logits.mean(0, keepdim=True) - restricted.mean(0, keepdim=True)
    excluded = (resid + (acts - key_part) @ W_out + b_out) @ W_U

    def loss(lg, rows):
        return -torch.log_softmax(lg[rows].double(), -1).gather(-1, s.labels[rows][:, None]).mean().item()

    train, test = s.train, ~s.train
    L = logits.double()
    L = L - L.mean(1, keepdim=True)
    L = (L - L.mean(0, keepdim=True)).reshape(n, n, n)
    c = torch.arange(n)[None, None, :]
    explained = []
    for k in range(1, n // 2 + 1):
        cube = torch.cos(2 * math.pi * k / n * (a[:, :, None] + b[:, :, None] - c).double())
        explained.append(((cube * L).sum() / cube.norm()).item() ** 2 / L.pow(2).sum().item())

    embed = (F @ model.embed.W_E[:n]).norm(dim=-1)
    unembed = (F @ W_L.T).norm(dim=-1)
    return {"restricted_loss": loss(restricted, test), "excluded_loss": loss(excluded, train),
            "test_loss": loss(logits, test), "periodicity": sum(explained[k - 1] for k in key),
            "in_clusters": in_clusters, "gini_embed": fourier.gini(embed).item(), "gini_unembed": fourier.gini(unembed).item()}


def batched(run: Run, steps: list[int], s, key: list[int], threshold: float) -> fourier.FourierProbes:
    """As `python -m analyses.fourier` runs it: chunks of checkpoints, one thread per core."""
    model = build_model(run.config.model, run.data, seed=run.config.train.seed)
    return probe_checkpoints(run, model, s, steps, key, threshold, auto_chunk(s, model.cfg.d_mlp), WORKERS)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--naive", type=int, default=4, help="checkpoints timed with the naive loop (evenly spread)")
    ap.add_argument("--no-end-to-end", action="store_true", help="skip timing the whole command")
    args = ap.parse_args()
    threads = torch.get_num_threads()  # the naive loop gets torch's own threads; the batched one, one per worker
    run = Run(args.run_dir)
    s = modular_structure(run.data)
    steps = run.steps
    threshold = fourier.CLUSTER_THRESHOLD
    model = build_model(run.config.model, run.data, seed=run.config.train.seed)
    key = fourier.probe_states(model, [run.weights(steps[-1])], s, None, threshold).key_freqs
    some = [steps[i] for i in np.linspace(0, len(steps) - 1, args.naive).round().astype(int)]
    print(f"{run.dir}: {s.op} mod {s.p}, {len(steps)} checkpoints, d_mlp {model.cfg.d_mlp}; key frequencies {key}")
    print(f"torch {torch.__version__}; naive: {threads} threads, batched: {WORKERS} workers x 1 thread; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    naive_probe(run, some[0], s, key, threshold)  # warm-up
    t = time.perf_counter()
    naive = [naive_probe(run, step, s, key, threshold) for step in some]
    t_naive = (time.perf_counter() - t) / len(some)
    torch.set_num_threads(1)
    batched(run, some[:1], s, key, threshold)
    t = time.perf_counter()
    fast_some = batched(run, some, s, key, threshold)
    t_fast_some = (time.perf_counter() - t) / len(some)
    t = time.perf_counter()
    batched(run, steps, s, key, threshold)
    t_fast = (time.perf_counter() - t) / len(steps)

    worst, worst_at = 0.0, ""
    for i, ref in enumerate(naive):
        for name in ("restricted_loss", "excluded_loss", "test_loss", "periodicity", "gini_embed", "gini_unembed"):
            got = float(getattr(fast_some, name)[i])
            diff = abs(got - ref[name]) / max(abs(ref[name]), 1e-3)  # relative, absolute below 1e-3
            if diff > worst:
                worst, worst_at = diff, f"{name} at step {some[i]}"
        assert int(fast_some.in_clusters[i]) == ref["in_clusters"], (some[i], ref["in_clusters"])
    print(f"{'naive loop, %d checkpoints' % len(some):40s}: {t_naive * 1e3:8.1f} ms/checkpoint")
    print(f"{'batched, the same %d checkpoints' % len(some):40s}: {t_fast_some * 1e3:8.1f} ms/checkpoint")
    print(f"{'batched, all %d checkpoints' % len(steps):40s}: {t_fast * 1e3:8.1f} ms/checkpoint "
          f"({t_fast * len(steps):.1f} s; {t_fast * 250:.1f} s for 250)")
    print(f"{'speed-up batched / naive':40s}: {t_naive / t_fast:8.1f}x "
          f"(largest difference of the results {worst:.1e}: {worst_at})")

    if not args.no_end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(shutil.copytree(run.dir, Path(tmp) / run.dir.name, ignore=shutil.ignore_patterns("analyses")))
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "analyses.fourier", str(copy), "--no-progress"],
                               capture_output=True, text=True, env={**os.environ})
            wall = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(r.stderr)
        print(f"{'python -m analyses.fourier, end to end':40s}: {wall:8.1f} s for {len(steps)} checkpoints "
              f"(start-up, imports and figures included; {wall + (250 - len(steps)) * t_fast:.1f} s with 250)")
        print("  " + r.stdout.splitlines()[1])


if __name__ == "__main__":
    main()
