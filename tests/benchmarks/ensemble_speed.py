"""Ensembles against runs one after another: per-member step time of K members as one Trainer, against one run
alone, side by side in one process (rounds interleaved, best of each, so drifts in machine load hit both).

    python -m tests.benchmarks.ensemble_speed [--presets parity-blog,default,nanda2023] [--ks 1,8,32,128]
                                              [--steps 10] [--rounds 3] [--device cpu] [--clock wall|cpu]

Prints, per preset and K: the member chunk the Trainer tuned itself to (training.trainer.ChunkTuner), ms per
ensemble step, ms per member step, and the throughput ratio
(K x one run's step time) / (the ensemble's step time): > 1 means the ensemble beats K runs one after another.
The reference row "module" is the plain single-model step (the model's own forward, torch.optim.AdamW/SGD), so
K = 1 through the Trainer can be read against it. Members differ in seed (as a seed sweep does).
Trainer steps are those of a run by load at this process's thread count (`training.threads.stepping_by_load`).
`--paths exact,old` also times the paths of runs trained before the exact path (K = 1 on the single path,
ensembles on the batched one) in the same rounds, each ratio against its own path's K = 1.
"""

from __future__ import annotations

import argparse
import os

import torch

from tests.benchmarks.step_speed import CLOCK_HELP, CLOCKS, by_load, time_steps
from training.optim.losses import compute_loss
from training.models.build import build_model
from training.presets import get_preset
from training.tasks.build import build_task
from training.trainer import Trainer

NANDA_MAX_K = 32  # nanda2023 at K = 128 needs ~10 GB of activations and minutes per step on a CPU


def module_step(cfg, data, device):
    """One run as the model's own forward + torch.optim: the reference for K = 1."""
    model = build_model(cfg.model, data, seed=0).to(device).train()
    o = cfg.optim
    opt = (torch.optim.SGD(model.parameters(), lr=o.lr, weight_decay=o.wd, momentum=o.momentum) if o.optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.wd, betas=(o.beta1, o.beta2)))
    x, y = data.inputs[data.train_idx].to(device), data.labels[data.train_idx].to(device)
    B, g = o.batch_size, torch.Generator().manual_seed(0)

    def step():
        idx = torch.randperm(len(x), generator=g)[:B] if 0 < B < len(x) else slice(None)
        loss = compute_loss(model.answer_logits(x[idx]), y[idx], data.loss, o.float64_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="parity-blog,default,nanda2023")
    ap.add_argument("--ks", default="1,8,32,128")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paths", default="exact", help="exact, or exact,old: also the paths of runs trained before")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help=CLOCK_HELP)
    args = ap.parse_args()
    device, clock = torch.device(args.device), CLOCKS[args.clock]
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in args.presets.split(","):
        cfg = get_preset(name).replace(device=args.device)
        data = build_task(cfg.task)
        # K = 1 (one run through the Trainer) is always measured: it is what "K runs alone" is against
        ks = sorted({1} | {k for k in map(int, args.ks.split(","))
                           if name != "nanda2023" or device.type != "cpu" or k <= NANDA_MAX_K})
        steps, chunk = {"module": module_step(cfg, data, device)}, {}
        for path in args.paths.split(","):
            for K in ks:
                old = "single" if K == 1 else "batched"
                trainer = Trainer([cfg.replace(seed=s) for s in range(K)], [data] * K, device,
                                  path="exact" if path == "exact" else old)
                step = by_load(trainer.step)
                while trainer.batched and not trainer.chunks.best:  # the Trainer's own chunk tuning, before timing
                    step()
                steps[(path, K)] = step
                chunk[(path, K)] = trainer.chunks.best or K
        best: dict = {}
        for _ in range(args.rounds):
            for key, step in steps.items():
                n = max(2, args.steps // (key[1] if key != "module" and key[1] > 8 else 1))
                best[key] = min(best.get(key, float("inf")), time_steps(step, n, device, clock))
        print(f"\n{name}: batch {cfg.optim.batch_size or len(data.train_idx)}, "
              f"module step {best['module'] * 1e3:.2f} ms")
        print(f"{'path':>6} {'K':>5} {'chunk':>6} {'ms/step':>10} {'ms/member':>10} {'throughput vs K runs alone':>28}")
        for path in args.paths.split(","):
            one = best[(path, 1)]
            for K in ks:
                t = best[(path, K)]
                print(f"{path:>6} {K:>5} {chunk[(path, K)]:>6} {t * 1e3:>10.2f} {t / K * 1e3:>10.3f} "
                      f"{K * one / t:>27.2f}x")


if __name__ == "__main__":
    main()
