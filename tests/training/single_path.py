"""Digests of 20 steps on the Trainer's "single" path (runs trained alone before the exact path), for
tests/training/test_single_path.py. `python -m tests.training.single_path` prints them as JSON (run it at one
thread); the fixture holds those of the code these runs were trained with."""

from __future__ import annotations

import hashlib
import json

import torch

from training.presets import get_preset
from training.tasks.build import build_task
from training.trainer import Trainer

STEPS = 20


def cases() -> dict:
    default = get_preset("default")
    return {"default, dropout 0.1, batch 256": default.replace(dropout=0.1, batch_size=256),
            "2 layers with LayerNorm": default.replace(n_layers=2, normalization_type="LN"),
            "mlp, dropout 0.1": get_preset("add-mlp-cpu").replace(dropout=0.1)}


def digests(path: str = "single", legacy: bool = True) -> dict[str, str]:
    """sha256 of each case's parameters after STEPS steps on `path`; legacy=False: the single path through the
    model's own (one) forward instead of the forward the runs trained with."""
    if not legacy:
        import training.trainer

        training.trainer.single_call = lambda model: None
    out = {}
    for name, cfg in cases().items():
        trainer = Trainer([cfg], [build_task(cfg.task)], path=path)
        for _ in range(STEPS):
            trainer.step()
        h = hashlib.sha256()
        for n, p in sorted(trainer.params.items()):
            h.update(n.encode())
            h.update(p.detach()[0].contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


if __name__ == "__main__":
    from tests.training.make_fixture import platform

    print(json.dumps({"platform": platform(torch.get_num_threads()), "digests": digests()}, indent=1))
