"""The three phases of grokking (Nanda et al. 2023): memorisation, circuit formation, cleanup.

Rule (each boundary is the first step, in order, at which the event happens; `None` when it never does):

1. memorisation ends at the peak of the test loss between S_mem (train accuracy >= 99%) and S_gen (test
   accuracy >= 99%, or the last step): from here on the training set is fitted and what changes is how.
2. circuit formation ends when, after (1), the excluded loss (training loss with the key frequencies removed
   from the neuron activations) first exceeds ln(classes), the loss of a uniform guess: the training set is
   then carried by the key frequencies, and the memorised table left alone does no better than chance.
3. cleanup ends when, after (2) (or (1) if (2) never happens), the test loss first falls below 1% of ln(classes): held-out predictions are
   then confident and right (Nanda et al.'s run: 0.012 at ~14k), and what follows is the slow tail that weight
   decay drives on train and test loss alike.

S_mem, S_gen and the test-loss peak come from metrics.jsonl (every evaluation); the excluded and test losses of
(2) and (3) from the Fourier probes at each checkpoint, so those boundaries are checkpoint steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from training.runs import milestones

CLEANUP_FRACTION = 0.01  # cleanup ends when the test loss is below this fraction of ln(classes)


@dataclass
class Phases:
    """Phase boundaries (steps) and the evidence each was read from."""

    memorisation_end: int | None
    circuit_formation_end: int | None
    cleanup_end: int | None
    s_mem: int | None
    s_gen: int | None
    rule: str = "test-loss peak after S_mem / excluded loss > ln(classes) / test loss < ln(classes) / 100"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        f = lambda x: "-" if x is None else str(x)  # noqa: E731
        return (f"memorisation ends {f(self.memorisation_end)}, circuit formation ends "
                f"{f(self.circuit_formation_end)}, cleanup ends {f(self.cleanup_end)}")


def detect_phases(metrics: list[dict[str, Any]], ckpt_steps: Sequence[int], test_loss: Sequence[float],
                  excluded_loss: Sequence[float] | None, n_classes: int) -> Phases:
    """Phase boundaries from metrics.jsonl rows and, per checkpoint, the test and excluded losses from the
    probes (on the operand grid they analyse). `excluded_loss` is None when the model has no key frequencies:
    there is then no circuit whose formation could end."""
    steps = [r["step"] for r in metrics]
    s_mem, s_gen = milestones.s_mem(metrics), milestones.s_gen(metrics)
    if s_mem is None:
        return Phases(None, None, None, s_mem, s_gen)
    end = s_gen if s_gen is not None else steps[-1]
    window = [r for r in metrics if s_mem <= r["step"] <= end]
    mem_end = max(window, key=lambda r: r["test_loss"])["step"]

    ck = np.asarray(ckpt_steps)
    test = np.asarray(test_loss, float)
    formation_end = None
    if excluded_loss is not None:
        crossed = np.nonzero((ck >= mem_end) & (np.asarray(excluded_loss, float) > math.log(n_classes)))[0]
        formation_end = int(ck[crossed[0]]) if len(crossed) else None
    start = formation_end if formation_end is not None else mem_end
    met = np.nonzero((ck >= start) & (test < CLEANUP_FRACTION * math.log(n_classes)))[0]
    cleanup_end = int(ck[met[0]]) if len(met) else None
    return Phases(mem_end, formation_end, cleanup_end, s_mem, s_gen)
