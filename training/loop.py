"""The training loop: full-batch or minibatch steps, periodic evaluation, adaptive checkpoints, exact resume.

Determinism: `torch.use_deterministic_algorithms(True)` (the embedding backward is otherwise nondeterministic
on CPU) plus saved RNG and optimiser state make a resumed run bit-identical to an uninterrupted one.
Ctrl-C (SIGINT) and SIGTERM finish the current step, save the resume state and return.
A loss that stops being finite (the step's loss, or the evaluated train loss) ends the run at that step: state,
checkpoint and a summary with "diverged_at" are written, and training.run exits with status 3.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from training.checkpointing import CheckpointPolicy
from training.config import ConfigError, RunConfig, validate
from training.models import build_model
from training.plots import plot_curves
from training.rundir import CURVES, METRICS, RunDirError, RunWriter, checkpoint_steps, read_metrics
from training.schedule import MemorisationSwitch
from training.tasks import TaskData, build_task

EVAL_CHUNK = 16384
STATE_EVERY_S = 10.0  # save resume state at least this often (and at every checkpoint)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def compute_loss(out: torch.Tensor, labels: torch.Tensor, kind: str, float64: bool) -> torch.Tensor:
    if float64:
        out = out.double()
    if kind == "ce":
        return F.cross_entropy(out, labels)
    if kind == "mse":
        target = F.one_hot(labels, out.shape[-1]).to(out.dtype) if labels.dtype == torch.long else labels.to(out.dtype)
        return ((out - target) ** 2).sum(-1).mean()
    if kind == "hinge":  # binary labels in {0, 1}, one output
        y = labels.to(out.dtype) * 2 - 1
        return torch.clamp(1 - y * out.squeeze(-1), min=0).mean()
    raise ConfigError(f"unknown loss '{kind}'")


def accuracy(out: torch.Tensor, labels: torch.Tensor, kind: str) -> float | None:
    if labels.dtype != torch.long:
        return None  # regression
    if kind == "hinge":
        return ((out.squeeze(-1) > 0).long() == labels).float().mean().item()
    return (out.argmax(-1) == labels).float().mean().item()


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, data: TaskData, float64: bool) -> tuple[float, float | None]:
    was_training = model.training
    model.eval()
    outs = [model(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]
    model.train(was_training)
    out = torch.cat(outs)
    return compute_loss(out, y, data.loss, float64).item(), accuracy(out, y, data.loss)


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    params = list(model.parameters())
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.wd, betas=(o.beta1, o.beta2))
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.wd, betas=(o.beta1, o.beta2))
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.wd, momentum=o.momentum)


def lr_at(step: int, cfg: RunConfig) -> float:
    """Linear warmup: update number `step` (0-based) uses lr * min(1, (step + 1) / warmup_steps)."""
    w = cfg.optim.warmup_steps
    return cfg.optim.lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)


def weight_norm(model: torch.nn.Module) -> float:
    return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))


@torch.no_grad()
def set_weight_norm_(params: list[torch.Tensor], target: float) -> None:
    """Rescale `params` in place so that their joint L2 norm is `target` (Omnigrok's fixed-norm projection)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p, dtype=torch.float64) for p in params]))
    torch._foreach_mul_(params, (target / norm).item())


def first_step(metrics: list[dict[str, Any]], key: str, threshold: float = 0.99) -> int | None:
    return next((r["step"] for r in metrics if r.get(key) is not None and r[key] >= threshold), None)


def package_versions() -> dict[str, str]:
    import numpy
    import safetensors
    import transformer_lens

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "4.x"), "safetensors": safetensors.__version__}


# --- resume state: everything as tensors in one safetensors file, counters in its metadata ---------------------


def pack_state(model, opt, batch_gen: torch.Generator, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    tensors["rng.batch"] = batch_gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors, {"param_groups": sd["param_groups"], "opt_scalars": scalars}


def unpack_state(tensors, meta, model, opt, batch_gen: torch.Generator, device: torch.device) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v.to(device) if name != "step" else v
    for k, v in meta["opt_scalars"].items():
        idx, name = k.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    batch_gen.set_state(tensors["rng.batch"])
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


@dataclass
class Stop:
    """Set by SIGINT/SIGTERM; the loop checks it between steps, so a step is never cut in half."""

    signal: int | None = None


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, progress: bool = True, preset: str = "",
          data: TaskData | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (which the caller has created and locked). Returns the summary dict."""
    validate(cfg)
    data = data if data is not None else build_task(cfg.task)
    device = pick_device(cfg.train.device)
    # deterministic cuBLAS needs a fixed workspace; it must be set before the first CUDA matmul
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.train.batch_seed)  # dropout draws from the global generator
    model = build_model(cfg.model, data, seed=cfg.train.seed).to(device)
    # fixed-norm training: the target comes from the seeded init, so a resumed run recomputes the same one
    target_norm = cfg.optim.constrain_norm * weight_norm(model)
    if target_norm:
        set_weight_norm_(list(model.parameters()), target_norm)
    opt = make_optimizer(model, cfg)
    batch_gen = torch.Generator().manual_seed(cfg.train.batch_seed)
    policy = CheckpointPolicy(cfg.ckpt, cfg.train.steps, cfg.train.eval_every)
    writer = RunWriter(run_dir)

    start, elapsed, train_time, overhead_time = 0, 0.0, 0.0, 0.0
    saved = writer.load_state() if resume else None
    if saved is not None:
        tensors, meta = saved
        try:  # training.run checked the state first (rundir.check_resume); this covers callers of train()
            unpack_state(tensors, meta, model, opt, batch_gen, device)
            policy.load_state_dict(meta["policy"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise RunDirError(f"{run_dir}/state: does not fit this run ({e})") from None
        start, elapsed = meta["step"], meta["elapsed"]
        train_time, overhead_time = meta["train_time"], meta["overhead_time"]
        writer.truncate_after(start)
    else:
        writer.truncate_after(-1)
        writer.write_split(data.split_dict())
        writer.write_config(cfg, {"preset": preset, "versions": package_versions()})  # last: marks a whole run

    x_tr, y_tr = data.inputs[data.train_idx].to(device), data.labels[data.train_idx].to(device)
    x_te, y_te = data.inputs[data.test_idx].to(device), data.labels[data.test_idx].to(device)
    n_train, B = len(x_tr), cfg.optim.batch_size
    full_batch = B == 0 or B >= n_train
    f64 = cfg.optim.float64_loss
    steps, eval_every = cfg.train.steps, cfg.train.eval_every
    metrics = read_metrics(run_dir / METRICS)
    gen_step = next((r["step"] for r in metrics if (r.get("test_acc") or 0) >= 0.99), None)
    switch = MemorisationSwitch(cfg, metrics, lambda update: lr_at(update, cfg))
    switch.apply(opt)  # a resumed run that had already switched

    stop = Stop()
    handlers = {s: signal.signal(s, lambda signum, frame: setattr(stop, "signal", signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    last_state = time.perf_counter()
    t0 = time.perf_counter() - elapsed

    def save_state(step: int) -> None:
        nonlocal last_state
        tensors, meta = pack_state(model, opt, batch_gen, device)
        meta.update(step=step, elapsed=time.perf_counter() - t0, train_time=train_time,
                    overhead_time=overhead_time, policy=policy.state_dict())
        writer.save_state(tensors, meta)
        last_state = time.perf_counter()

    def on_eval(step: int) -> dict[str, Any]:
        train_loss, train_acc = evaluate(model, x_tr, y_tr, data, f64)
        test_loss, test_acc = evaluate(model, x_te, y_te, data, f64)
        row = {"step": step, "train_loss": train_loss, "test_loss": test_loss, "train_acc": train_acc,
               "test_acc": test_acc, "weight_norm": weight_norm(model), "lr": switch.lr(max(step - 1, 0)),
               "wd": switch.wd(step - 1), "time": round(time.perf_counter() - t0, 3)}
        writer.append_metrics(row)
        metrics.append(row)
        switch.observe(step, row, opt)
        if policy.want(step, row):
            ckpt_meta = {k: row[k] for k in ("train_loss", "test_loss", "train_acc", "test_acc", "weight_norm")}
            policy.saved(row, writer.save_checkpoint(step, model.state_dict(), ckpt_meta))
            if time.perf_counter() - last_state > 1.0 or step == steps:
                save_state(step)
        elif time.perf_counter() - last_state > STATE_EVERY_S:
            save_state(step)
        return row

    bar = tqdm(total=steps, initial=start, disable=not progress, desc=run_dir.name, unit="step", dynamic_ncols=True)
    step = start
    stopped_early = False
    diverged_at: int | None = None
    try:
        if start == 0:
            t = time.perf_counter()
            on_eval(0)
            overhead_time += time.perf_counter() - t
        model.train()
        t_seg = time.perf_counter()
        while step < steps and stop.signal is None:
            for group in opt.param_groups:
                group["lr"] = switch.lr(step)
            if full_batch:
                xb, yb = x_tr, y_tr
            else:
                idx = torch.randperm(n_train, generator=batch_gen)[:B].to(device)
                xb, yb = x_tr[idx], y_tr[idx]
            loss = compute_loss(model(xb), yb, data.loss, f64)
            if not math.isfinite(loss.item()):  # diverged: stop before the update, weights as they were at `step`
                diverged_at = step
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if target_norm:
                set_weight_norm_(list(model.parameters()), target_norm)
            step += 1
            if step % eval_every == 0 or step == steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                train_time += t - t_seg
                row = on_eval(step)
                overhead_time += time.perf_counter() - t
                writer.kill_point(step, save_state)
                if not math.isfinite(row["train_loss"]):
                    diverged_at = step
                    break
                bar.update(step - bar.n)
                bar.set_postfix(train=f"{row['train_acc']:.3f}" if row["train_acc"] is not None else f"{row['train_loss']:.2e}",
                                test=f"{row['test_acc']:.3f}" if row["test_acc"] is not None else f"{row['test_loss']:.2e}")
                if gen_step is None and (row["test_acc"] or 0) >= 0.99:
                    gen_step = step
                if cfg.train.stop_after_gen >= 0 and gen_step is not None and step >= gen_step + cfg.train.stop_after_gen:
                    stopped_early = True
                    break
                t_seg = time.perf_counter()
        train_time += 0 if step % eval_every == 0 or step == steps else time.perf_counter() - t_seg
    finally:
        bar.close()
        for s, h in handlers.items():
            signal.signal(s, h)

    if stop.signal is not None and step < steps and diverged_at is None:
        save_state(step)
        log(f"interrupted at step {step}; state saved. Continue with: python -m training.run --resume {run_dir}")
        return {"interrupted": True, "step": step}

    if not metrics or metrics[-1]["step"] != step:  # early stop between evaluations: evaluate the last step too
        on_eval(step)
    if step not in checkpoint_steps(run_dir):
        row = metrics[-1]
        policy.saved(row, writer.save_checkpoint(step, model.state_dict(), {k: row[k] for k in ("train_loss", "test_loss", "train_acc", "test_acc", "weight_norm")}))
    save_state(step)
    summary = summarise(metrics, checkpoint_steps(run_dir), policy, step, time.perf_counter() - t0, train_time, overhead_time, stopped_early)
    summary.update(switch.summary())
    if diverged_at is not None:
        summary["diverged_at"] = diverged_at
    writer.write_summary(summary)
    plot_curves(metrics, summary, run_dir / CURVES, title=f"{run_dir.name}: {data.structure.get('op', data.name)}")
    return summary


def summarise(metrics, ckpt_steps, policy, step, wall, train_time, overhead_time, stopped_early) -> dict[str, Any]:
    s_mem, s_gen = first_step(metrics, "train_acc"), first_step(metrics, "test_acc")
    s_10 = first_step(metrics, "test_acc", 0.1)
    final = metrics[-1]
    return {
        "S_mem": s_mem, "S_gen": s_gen, "gen_over_mem": round(s_gen / s_mem, 2) if s_mem and s_gen else None,
        "steps": step, "stopped_early": stopped_early,
        "final": {k: final[k] for k in ("train_loss", "test_loss", "train_acc", "test_acc", "weight_norm")},
        "wall_time_s": round(wall, 2), "train_time_s": round(train_time, 2),
        "eval_ckpt_time_s": round(overhead_time, 2),
        "eval_ckpt_fraction": round(overhead_time / train_time, 4) if train_time > 0 else None,
        "n_checkpoints": len(ckpt_steps), "checkpoint_mb": round(policy.bytes / 2**20, 2),
        # checkpoints from the first step with test accuracy >= 10% up to the one reaching 99%
        "checkpoints_in_transition": sum(1 for c in ckpt_steps if s_10 is not None and s_10 <= c <= (s_gen or step)),
    }
