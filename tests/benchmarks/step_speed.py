"""Canonical full-batch training step (nanda2023: 3830 x [a, b, =], d_model 128, d_mlp 512): our lean transformer
against `TransformerBridge.boot_native` holding the same weights, side by side in one process.

    python -m tests.benchmarks.step_speed [--steps 20] [--device cpu] [--clock wall|cpu]

Prints seconds per step, the ratio, and GFLOP/s (2 x multiply-adds, forward + backward = 3 x forward) next to a
plain fp32 matmul measured in the same process. The bridge computes everything at all three positions; ours
projects block 0's q, k, v once per (position, token) and the rest only at '=' (the loss is read there in both).
Two more rows time the step `training.run` takes for the same run by load at this process's thread count,
`training.trainer.Trainer` with K = 1: on the exact path (every new run) and on the single path (the model's own
forward and torch.optim's single-tensor update: runs alone trained before the exact path), interleaved with the
others.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from training.models.bridge import to_bridge
from training.models.build import build_model
from training.presets import get_preset
from training.tasks.build import build_task
from training.threads import stepping_by_load
from training.trainer import Trainer


def step_flops(cfg, n: int, d_vocab: int, d_vocab_out: int, n_ctx: int, lean: bool) -> int:
    """2 x multiply-adds of one training step (forward + backward = 3 x forward).

    bridge: q, k, v at every position of every example, then attention output, MLP and unembedding at all n_ctx
    positions. ours: q, k, v projected once from the (position, token) table, the rest at the last position only.
    """
    d, hd, m = cfg.d_model, cfg.n_heads * cfg.d_head, cfg.d_mlp
    after_attn = hd * d + 2 * d * m + d * d_vocab_out  # attention output, MLP in + out, unembedding
    if lean:
        forward = n_ctx * d_vocab * d * 3 * hd + n * after_attn
    else:
        forward = n * n_ctx * (d * 3 * hd + after_attn)
    return 3 * 2 * forward


def by_load(step):
    """`step` as a run by load takes it at this process's thread count (`training.threads.stepping_by_load`)."""
    def stepped():
        with stepping_by_load(torch.get_num_threads()):
            step()
    return stepped


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK_HELP = ("wall: elapsed time; cpu: the process's CPU time, which at one thread is the time the step ran, "
              "not inflated by other processes' turns on a busy machine (at more threads it counts spin-waits)")


def time_steps(step, n: int, device, clock=time.perf_counter) -> float:
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = clock()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - t) / n


def matmul_gflops(device, n: int = 1024, reps: int = 20, clock=time.perf_counter) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / time_steps(lambda: a @ b, reps, device, clock) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help=CLOCK_HELP)
    args = ap.parse_args()
    device, clock = torch.device(args.device), CLOCKS[args.clock]
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)

    cfg = get_preset("nanda2023")
    data = build_task(cfg.task)
    x, y = data.inputs[data.train_idx].to(device), data.labels[data.train_idx].to(device)
    ours = build_model(cfg.model, data).to(device)
    bridge = to_bridge(ours).to(device).train()

    def stepper(model, forward):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))

        def step():
            loss = F.cross_entropy(forward(model).double(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    step_ours = stepper(ours, lambda m: m.answer_logits(x))
    step_bridge = stepper(bridge, lambda m: m(x)[:, -1])
    paths = ("exact", "single")
    step_run = {path: by_load(Trainer([cfg.replace(device=str(device))], [data], device, path=path).step)
                for path in paths}
    t_ours, t_bridge, peak = [], [], []
    t_run: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits all of them
        peak.append(matmul_gflops(device, clock=clock))
        t_ours.append(time_steps(step_ours, args.steps, device, clock))
        t_bridge.append(time_steps(step_bridge, args.steps, device, clock))
        for path in paths:
            t_run[path].append(time_steps(step_run[path], args.steps, device, clock))
    a, b, p = min(t_ours), min(t_bridge), max(peak)
    c = {path: min(t) for path, t in t_run.items()}
    n = len(x)
    f_ours = step_flops(cfg.model, n, data.d_vocab, data.d_vocab_out, data.n_ctx, lean=True)
    f_bridge = step_flops(cfg.model, n, data.d_vocab, data.d_vocab_out, data.n_ctx, lean=False)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {n}, {args.clock} clock, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"plain fp32 matmul 1024^3       : {p:8.1f} GFLOP/s")
    print(f"ours   (lean)                  : {a * 1e3:8.1f} ms/step  {f_ours / 1e9:5.2f} GFLOP/step  "
          f"{f_ours / a / 1e9:6.1f} GFLOP/s ({f_ours / a / 1e9 / p:.0%} of matmul)")
    print(f"bridge (TransformerBridge)     : {b * 1e3:8.1f} ms/step  {f_bridge / 1e9:5.2f} GFLOP/step  "
          f"{f_bridge / b / 1e9:6.1f} GFLOP/s ({f_bridge / b / 1e9 / p:.0%} of matmul)")
    for path in paths:
        print(f"Trainer K=1, {path:6} path      : {c[path] * 1e3:8.1f} ms/step  {f_ours / c[path] / 1e9:6.1f} GFLOP/s "
              f"({f_ours / c[path] / 1e9 / p:.0%} of matmul)")
    print(f"speed-up ours / bridge         : {b / a:8.2f}x")
    print(f"exact path / single path       : {c['exact'] / c['single']:8.3f} (time per step; < 1 is faster)")


if __name__ == "__main__":
    main()
