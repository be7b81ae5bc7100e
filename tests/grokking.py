"""A tiny modular-addition run that groks in a few seconds (shared by the interp and analyses tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tests.conftest import tiny_config
from training.loop import train
from training.runs.reader import Run

# p = 23, half the pairs for training: memorises by ~60 steps, groks (test accuracy 99%) by ~500. Whether a run
# this small crosses 99% within its 2500 steps and stays there turns on its last bits, so on the CPU it lands on: on
# the Intel Xeon development machine, d_model 32 and d_mlp 64 held at 98.5-98.9% for seeds 0-3 (it groked on the
# AMD EPYC one); these widths groked for seeds 0 and 1 (seed 0 falling back to 73% within 100 steps) and not 2, 3.
GROKKING = dict(p=23, frac=0.5, lr=1e-2, wd=2.0, d_model=48, n_heads=4, d_head=8, d_mlp=128, steps=2500,
                stop_after_gen=100, ckpt_floor=8, ckpt_max=60)
SEEDS = 4  # the first seed whose run groks is the fixture: the tests need a run that did, not a given seed's


def train_grokking_run(path: Path) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and immune to a busy machine
    try:
        for seed in range(SEEDS):
            shutil.rmtree(path, ignore_errors=True)
            summary = train(tiny_config(**GROKKING, seed=seed), path, progress=False)
            if summary["S_gen"] is not None and Run(path).metrics[-1]["test_acc"] >= 0.99:  # groked, and held
                return summary
    finally:
        torch.set_num_threads(threads)
    raise AssertionError(f"the tiny run did not grok for seeds 0-{SEEDS - 1}")
