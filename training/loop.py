"""The training loop: orchestration around `training.trainer.Trainer` (which owns the step).

`train(cfg, run_dir)` trains one run; `run_members(cfgs, run_dirs, ...)` trains K shape-compatible runs as one
Trainer (an ensemble, see `training.ensemble`), each into its own ordinary run directory. What lives here:
evaluation cadence, the checkpoint policy, the run directory, signals, progress, timings and the summary.

Determinism: deterministic algorithms (`training.trainer.deterministic`, set by every Trainer) plus the saved RNG
and optimiser state make a resumed run bit-identical to an uninterrupted one.
Ctrl-C (SIGINT) and SIGTERM finish the current step, save the resume state and return.
A loss that stops being finite (a member's step loss, or its evaluated train loss) ends that run at that step:
state, checkpoint and a summary with "diverged_at" are written (training.run exits with status 3); the other
members of an ensemble go on.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from training.runs.checkpointing import CheckpointPolicy
from training.cli import say_first_step
from training.config import ConfigError, RunConfig
from training.trainer import state_path
from training.registry import model_spec
from training.constants import EVAL_CHUNK  # noqa: F401  (re-exported: probes and tests use them)
from training.optim.losses import accuracy, compute_loss
from training.runs.milestones import first_step, generalised, s_gen
from training.models.base import plain_models
from training.runs.plots import plot_curves
from training.constants import CURVES, METRICS, STATE_DIR, STATE_FILE
from training.errors import RunDirError
from training.runs.format import checkpoint_steps, metadata, read_metrics
from training.runs.writer import RunWriter
from training.tasks.build import build_task
from training.tasks.data import TaskData
from training.trainer import Trainer
from training.numerics import governor_for, numerics, say_if_numerics_differ
from training.threads import Governor
from training.optim.transforms.base import set_weight_norm_, weight_norm  # noqa: F401  (re-exported)

STATE_EVERY_S = 10.0  # save resume state at least this often (and at every checkpoint)
HEADLINE = ("train_loss", "test_loss", "train_acc", "test_acc", "weight_norm")
# metrics.jsonl keys of sequence tasks (analyses.sequence reads the *_by_target dicts, keyed by target name)
SEQUENCE_KEYS = ("train_answer_acc", "test_answer_acc", "train_loss_by_target", "test_loss_by_target",
                 "train_acc_by_target", "test_acc_by_target")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, data: TaskData,
             float64: bool) -> tuple[float, float | None]:
    """Loss and accuracy of one (unstacked) model on x, y."""
    was_training = model.training
    model.eval()
    scored = getattr(model, "scored_logits", model)  # the positions the task's loss reads
    outs = [scored(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]
    model.train(was_training)
    out = torch.cat(outs)
    return compute_loss(out, y, data.loss, float64).item(), accuracy(out, y, data.loss)


def package_versions() -> dict[str, str]:
    from importlib.metadata import version  # importing transformer_lens to ask would cost more than torch's import

    import numpy
    import safetensors

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "transformer_lens": version("transformer-lens"), "safetensors": safetensors.__version__}


@dataclass
class Stop:
    """Set by SIGINT/SIGTERM; the loop checks it between steps, so a step is never cut in half."""

    signal: int | None = None


def state_meta(run_dir: Path) -> dict[str, Any] | None:
    """The saved state's counters (its step, the trainer's step path, ...), None without saved state; reads only
    the state file's header."""
    path = Path(run_dir) / STATE_DIR / STATE_FILE
    if not path.exists():
        return None
    return json.loads(metadata(path)["state"])


def state_step(run_dir: Path) -> int:
    """The step a resume of `run_dir` starts from (0 without saved state)."""
    meta = state_meta(run_dir)
    return meta["step"] if meta else 0


class Member:
    """One run directory's side of training: its writer, checkpoint policy, metrics, counters and timings."""

    def __init__(self, cfg: RunConfig, run_dir: Path, data: TaskData, preset: str):
        self.cfg, self.dir, self.data, self.preset = cfg, Path(run_dir), data, preset
        self.writer = RunWriter(run_dir)
        self.policy = CheckpointPolicy(cfg.ckpt, cfg.train.steps, cfg.train.eval_every)
        self.start, self.elapsed, self.train_time, self.overhead_time = 0, 0.0, 0.0, 0.0
        self.saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        self.stopped_early = False
        self.diverged_at: int | None = None
        self.summary: dict[str, Any] | None = None
        self.stopped_at = 0
        self.governor: Governor | None = None  # a run by load: its thread governor

    def load(self, resume: bool) -> None:
        """Read the resume state, if resuming (nothing is written yet)."""
        self.saved = self.writer.load_state() if resume else None
        if self.saved is not None:
            meta = self.saved[1]
            self.start, self.elapsed = meta["step"], meta["elapsed"]
            self.train_time, self.overhead_time = meta["train_time"], meta["overhead_time"]

    def open(self, record: dict[str, Any]) -> None:
        """Forget what was written after the resume state, or start the directory afresh; a new run's config.json
        records `record` (`training.numerics.numerics`)."""
        if self.saved is not None:
            self.writer.truncate_after(self.start)
        else:
            self.writer.truncate_after(-1)
            self.writer.write_split(self.data.split_dict())
            # config.json last: it marks a whole run
            self.writer.write_config(self.cfg, {"preset": self.preset, "versions": package_versions(),
                                                "numerics": record})
        self.metrics = read_metrics(self.dir / METRICS)
        self.gen_step = s_gen(self.metrics)
        self.t0 = time.perf_counter() - self.elapsed

    def save_state(self, trainer: Trainer, k: int, step: int) -> None:
        tensors, tmeta = trainer.member_state(k)
        meta = {"step": step, "elapsed": time.perf_counter() - self.t0, "train_time": self.train_time,
                "overhead_time": self.overhead_time, "policy": self.policy.state_dict(), "trainer": tmeta}
        self.writer.save_state(tensors, meta)

    def record(self, trainer: Trainer, k: int, step: int, evaluated: dict[str, Any]) -> bool:
        """Append the evaluation of `step` to metrics.jsonl and checkpoint it if the policy wants it.
        Returns whether a checkpoint was written."""
        switch = trainer.switches[k]
        row = {"step": step, **{key: evaluated[key] for key in ("train_loss", "test_loss", "train_acc", "test_acc",
                                                               "weight_norm")},
               "lr": switch.lr(max(step - 1, 0)), "wd": switch.wd(step - 1),
               "time": round(time.perf_counter() - self.t0, 3)}
        if evaluated.get("softmax_collapse") is not None:  # share of train examples with float32 CE loss 0
            row["softmax_collapse"] = evaluated["softmax_collapse"]
        for key in SEQUENCE_KEYS:  # sequence tasks: whole-answer accuracy and per-target dicts
            if key in evaluated:
                row[key] = evaluated[key]
        self.writer.append_metrics(row)
        self.metrics.append(row)
        trainer.observe(k, step, row)
        if self.gen_step is None and generalised(row):
            self.gen_step = step
        if self.policy.want(step, row):
            self.policy.saved(row, self.writer.save_checkpoint(step, trainer.weights(k), {h: row[h] for h in HEADLINE}))
            return True
        return False

    def done(self, step: int) -> bool:
        """Reached its steps, diverged, or stopped `stop_after_gen` steps after S_gen."""
        if self.diverged_at is None and not math.isfinite(self.metrics[-1]["train_loss"]):
            self.diverged_at = step
        if self.diverged_at is not None:
            return True
        after = self.cfg.train.stop_after_gen
        if after >= 0 and self.gen_step is not None and step >= self.gen_step + after:
            self.stopped_early = True
        return step >= self.cfg.train.steps or self.stopped_early

    def finish(self, trainer: Trainer, k: int, step: int) -> dict[str, Any]:
        if not self.metrics or self.metrics[-1]["step"] != step:  # stopped between evaluations
            self.record(trainer, k, step, trainer.evaluate([k])[0])
        if step not in checkpoint_steps(self.dir):
            row = self.metrics[-1]
            self.policy.saved(row, self.writer.save_checkpoint(step, trainer.weights(k), {h: row[h] for h in HEADLINE}))
        self.save_state(trainer, k, step)
        summary = summarise(self.metrics, checkpoint_steps(self.dir), self.policy, step, time.perf_counter() - self.t0,
                            self.train_time, self.overhead_time, self.stopped_early)
        summary.update(trainer.switches[k].summary())
        if self.governor is not None:
            summary["steps_by_threads"] = {str(n): c for n, c in sorted(self.governor.steps.items())}
        if self.diverged_at is not None:
            summary["diverged_at"] = self.diverged_at
        self.writer.write_summary(summary)
        title = f"{self.dir.name}: {self.data.structure.get('op', self.data.name)}"
        plot_curves(self.metrics, summary, self.dir / CURVES, title=title)
        self.summary = summary
        return summary


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, progress: bool = True, preset: str = "",
          data: TaskData | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `cfg` (which has passed `training.config.validate`) into `run_dir` (which the caller has created and
    locked). Returns the summary dict."""
    return run_members([cfg], [run_dir], datas=[data] if data is not None else None, resume=[resume],
                       progress=progress, preset=preset, log=log)[0]


def _setup(cfgs: list[RunConfig]) -> torch.device:
    device = pick_device(cfgs[0].train.device)
    # deterministic cuBLAS needs a fixed workspace; it must be set before the first CUDA matmul
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


def run_members(cfgs: list[RunConfig], run_dirs: list[Path], *, datas: list[TaskData] | None = None,
                resume: list[bool] | None = None, progress: bool = True, preset: str = "",
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train K validated configs as one Trainer, each into its run directory (created and locked by the caller).

    The configs must share `training.ensemble.shape_key` and resume from the same step (`train_ensemble` groups
    them so). Returns each run's summary, or {"interrupted": True, "step": s} for runs stopped by a signal.
    """
    device = _setup(cfgs)
    datas = datas if datas is not None else [build_task(c.task) for c in cfgs]
    members = [Member(c, d, data, preset) for c, d, data in zip(cfgs, run_dirs, datas)]
    for m, r in zip(members, resume or [False] * len(cfgs)):
        m.load(r)
    if len({m.start for m in members}) > 1:
        raise ValueError("the runs resume from different steps; train them as separate ensembles")
    step = members[0].start
    path = _resumed_path(members, len(cfgs) > 1)
    with plain_models():  # its copies need parameters and a forward only: no TransformerLens import
        governor = governor_for(lambda k: Trainer(cfgs[:k], datas[:k], device, path=path), len(cfgs), device, log)
        new = numerics(device, "exact" if model_spec(cfgs[0].model.model).batched else "single", governor)
        for m in members:
            m.open(new)
            m.governor = governor
        say_if_numerics_differ([m.dir for m in members if m.saved is not None], new, log)
        trainer = Trainer(cfgs, datas, device, metrics=[m.metrics for m in members], path=path)
    for k, m in enumerate(members):
        if m.saved is not None:
            try:  # training.run checked the state first (rundir.check_resume); this covers other callers
                trainer.load_member_state(k, *m.saved)
                m.policy.load_state_dict(m.saved[1]["policy"])
            except (KeyError, ValueError, TypeError, RuntimeError) as e:
                raise RunDirError(f"{m.dir}/state: does not fit this run ({e})") from None
    stop = Stop()
    handlers = {s: signal.signal(s, lambda signum, frame: setattr(stop, "signal", signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    desc = members[0].dir.name if len(members) == 1 else f"{len(members)} runs"
    bar = tqdm(total=max(c.train.steps for c in cfgs), initial=step, disable=not progress, desc=desc, unit="step",
               dynamic_ncols=True)
    try:
        active = _train(trainer, members, step, stop, bar, device, governor)
    finally:
        bar.close()
        for s, h in handlers.items():
            signal.signal(s, h)
    if active:
        step = members[active[0]].stopped_at
        for i, k in enumerate(active):
            members[k].save_state(trainer, i, step)
        where = members[active[0]].dir if len(members) == 1 else f"{len(active)} run directories"
        log(f"interrupted at step {step}; state saved. Continue with: python -m training.run --resume {where}")
    return [m.summary if m.summary is not None else {"interrupted": True, "step": m.stopped_at} for m in members]


def _resumed_path(members: list[Member], ensemble: bool) -> str | None:
    """The Trainer's step path: a resumed run keeps the path its state records (`state_path`), so that its resume
    is bit-identical; None (new runs): the Trainer's default, "exact" for every model with a batched forward."""
    paths = {state_path(m.saved[1]) for m in members if m.saved is not None}
    if not paths:
        return None
    if len(paths) > 1:
        raise ValueError("the runs were trained on different step paths; train them as separate ensembles")
    path = paths.pop()
    if path is None:  # a state from before the record: an ensemble trained batched, a run alone single
        return "batched" if ensemble else "single"
    return path


def _train(trainer: Trainer, members: list[Member], step: int, stop: Stop, bar, device,
           governor: Governor | None = None) -> list[int]:
    """Step until every member is done or a signal arrives; returns the members still active (interrupted).
    `governor` (a run by load, `training.threads`) sets each step's thread count and is told its time."""
    active = list(range(len(members)))  # member indices, in the trainer's order
    if step == 0:
        t = time.perf_counter()
        for i, row in enumerate(trainer.evaluate()):
            members[i].record(trainer, i, 0, row)
        for m in members:
            m.overhead_time += time.perf_counter() - t
    active = _retire(trainer, members, active, list(range(len(active))), step)
    writer = members[0].writer  # test-only kill point (GROKSCOPE_KILL_AT_STEP), the same for every member
    say_first_step()
    t_seg = time.perf_counter()
    last_state = time.perf_counter()
    while active and stop.signal is None:
        if governor is not None:
            governor.next()
        t_step = time.perf_counter()
        losses = trainer.backward()
        diverged = [i for i, loss in enumerate(losses.tolist()) if not math.isfinite(loss)]
        for i in diverged:  # stopped before the update: its weights stay as they were at `step`
            members[active[i]].diverged_at = step
        active = _retire(trainer, members, active, diverged, step)
        if not active:
            break
        trainer.apply()
        if governor is not None:
            governor.timed(time.perf_counter() - t_step)
        step += 1
        due = [i for i, k in enumerate(active) if step % members[k].cfg.train.eval_every == 0
               or step == members[k].cfg.train.steps]
        if not due:
            continue
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for k in active:
            members[k].train_time += t - t_seg
        ckpt = False
        for i, row in zip(due, trainer.evaluate(due)):
            ckpt |= members[active[i]].record(trainer, i, step, row)
        _progress(bar, members, active, due, step)
        if step == writer.kill_at and writer.kill_during in ("", "state"):  # tests: die after this step's writes
            for i, k in enumerate(active):
                members[k].save_state(trainer, i, step)
            os.kill(os.getpid(), signal.SIGKILL)
        active = _retire(trainer, members, active, due, step)
        since = time.perf_counter() - last_state
        if active and ((ckpt and since > 1.0) or since > STATE_EVERY_S):
            for i, k in enumerate(active):  # all together: a killed ensemble resumes from one step
                members[k].save_state(trainer, i, step)
            last_state = time.perf_counter()
        for k in active:
            members[k].overhead_time += time.perf_counter() - t
        t_seg = time.perf_counter()
    for k in active:
        members[k].train_time += time.perf_counter() - t_seg
        members[k].stopped_at = step
    return active


def _retire(trainer: Trainer, members: list[Member], active: list[int], due: list[int], step: int) -> list[int]:
    """Finish the members among `due` that are done (summary, last checkpoint) and drop them from the trainer."""
    done = [i for i in due if members[active[i]].done(step)]
    for i in done:
        members[active[i]].finish(trainer, i, step)
    keep = [i for i in range(len(active)) if i not in done]
    if done and keep:
        trainer.keep(keep)
    return [active[i] for i in keep]


def _progress(bar, members: list[Member], active: list[int], due: list[int], step: int) -> None:
    bar.update(step - bar.n)
    row = members[active[due[0]]].metrics[-1]
    fmt = lambda acc, loss: f"{row[acc]:.3f}" if row[acc] is not None else f"{row[loss]:.2e}"  # noqa: E731
    bar.set_postfix(train=fmt("train_acc", "train_loss"), test=fmt("test_acc", "test_loss"))


def summarise(metrics, ckpt_steps, policy, step, wall, train_time, overhead_time, stopped_early) -> dict[str, Any]:
    s_mem, s_gen_ = first_step(metrics, "train_acc"), first_step(metrics, "test_acc")
    s_10 = first_step(metrics, "test_acc", 0.1)
    final = metrics[-1]
    return {
        "S_mem": s_mem, "S_gen": s_gen_, "gen_over_mem": round(s_gen_ / s_mem, 2) if s_mem and s_gen_ else None,
        "steps": step, "stopped_early": stopped_early,
        "final": {k: final[k] for k in HEADLINE},
        "wall_time_s": round(wall, 2), "train_time_s": round(train_time, 2),
        "eval_ckpt_time_s": round(overhead_time, 2),
        "eval_ckpt_fraction": round(overhead_time / train_time, 4) if train_time > 0 else None,
        "n_checkpoints": len(ckpt_steps), "checkpoint_mb": round(policy.bytes / 2**20, 2),
        # checkpoints from the first step with test accuracy >= 10% up to the one reaching 99%
        "checkpoints_in_transition": sum(1 for c in ckpt_steps if s_10 is not None and s_10 <= c <= (s_gen_ or step)),
    }
