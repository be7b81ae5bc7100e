"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.config import CheckpointConfig, ModelConfig, OptimConfig, RunConfig, TaskConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**flat) -> RunConfig:
    cfg = RunConfig(
        task=TaskConfig(task="add", p=11, frac=0.5, split_seed=0),
        model=ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32),
        optim=OptimConfig(lr=3e-3, wd=1.0, warmup_steps=5),
        train=TrainConfig(steps=60, eval_every=10, device="cpu"),
        ckpt=CheckpointConfig(ckpt_floor=5, ckpt_max=50),
    )
    return cfg.replace(**flat) if flat else cfg


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m training.run ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "training.run", "--no-progress", *args], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine torch's default (one per core, each
    spinning) made the landscape tests 13x slower (4 s -> 58 s measured); one thread keeps every test's time
    independent of how busy the machine is."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny() -> RunConfig:
    return tiny_config()
