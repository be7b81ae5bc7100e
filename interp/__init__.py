"""Probes: pure functions over a model, its weights or its activations (no printing, no plotting).

    >>> import interp
    >>> run = interp.load_run("checkpoints/default")
    >>> interp.fourier.key_frequencies(run.model(run.steps[-1]), run)

Submodules are imported on first use (module `__getattr__`), so `import interp.phases` does not pull in torch,
the training loop or matplotlib through its siblings.
"""

from __future__ import annotations

import importlib
from typing import Any

SUBMODULES = ("cosets", "fourier", "fourier_ablations", "fourier_basis", "grid", "groups", "irreps", "landscape",
              "modular", "phases", "sequence", "sparsity", "views")
__all__ = [*SUBMODULES, "load_run"]


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"interp.{name}")
    if name == "load_run":
        from training.runs.reader import Run

        return Run
    raise AttributeError(f"module 'interp' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
