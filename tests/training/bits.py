"""Bit-identity of two run directories: what "the same run" means for grouping, sweeps and resume.

Same code on the same machine at the same torch thread count, so the comparison is exact: every metrics.jsonl row
less its wall-clock column (compared as JSON text, so that a diverged run's NaN equals itself), the same checkpoint
steps, and every tensor of every checkpoint equal in dtype, shape and value.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from training.runs.reader import Run
from training.tasks.build import build_task
from training.trainer import Trainer


def metrics_rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in Run(run_dir).metrics]


def checkpoints(run_dir: Path) -> dict[int, dict[str, torch.Tensor]]:
    return {s: load_file(Path(run_dir) / "ckpt" / f"step_{s}.safetensors") for s in Run(run_dir).steps}


def assert_same_bits(a: Path, b: Path) -> None:
    ra, rb = metrics_rows(a), metrics_rows(b)
    assert len(ra) == len(rb), (a, b, len(ra), len(rb))
    for x, y in zip(ra, rb):
        assert json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True), (a, b, x, y)
    ca, cb = checkpoints(a), checkpoints(b)
    assert list(ca) == list(cb), (a, b)
    for step in ca:
        wa, wb = ca[step], cb[step]
        assert wa.keys() == wb.keys()
        for k in wa:
            assert wa[k].dtype == wb[k].dtype and torch.equal(wa[k], wb[k]), (a, b, step, k)


def round_tripped_member_states(cfgs, steps: int = 7) -> list[tuple[tuple, tuple]]:
    """Per member, (its `member_state` in a Trainer after 2 x `steps` steps, in one loaded from that Trainer's
    `state_dict` after `steps` and stepped alongside): a lossless state makes each pair bit-identical."""
    data = [build_task(c.task) for c in cfgs]
    a = Trainer(cfgs, data)
    for _ in range(steps):
        a.step()
    b = Trainer(cfgs, data)
    b.load_state_dict(a.state_dict())
    for _ in range(steps):
        a.step()
        b.step()
    return [(a.member_state(k), b.member_state(k)) for k in range(len(cfgs))]
