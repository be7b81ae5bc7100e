"""Fixed-norm training from many init scales at once: the training behind Omnigrok's reduced landscape.

For each init scale alpha, `cfg`'s model starts from the same seeded init times alpha and trains with its total
norm held at that initial value (the norm constraint at 1x, rescaling after every step) and weight decay `wd`
(Omnigrok: 0). All alphas are members of one `training.trainer.Trainer`, so this is the same step as a run
alone with `--init-scale alpha --constrain-norm 1` and equals it to float rounding. The curves go to
`interp.landscape.ReducedLandscape.from_curves`, which reads the landscape off them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from training.config import RunConfig
from training.tasks.build import build_task
from training.tasks.data import TaskData
from training.trainer import Trainer
from training.optim.transforms.norm import NormConstraint


@dataclass
class FixedNormCurves:
    """Per alpha (rows, sorted by alpha) the losses and accuracies at `eval_steps` (columns).

    norms: [n] the norm each run is held at; train_acc/test_acc: None for regression tasks.
    """

    alphas: np.ndarray
    norms: np.ndarray
    eval_steps: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray | None
    test_acc: np.ndarray | None
    steps: int
    wd: float
    lr: float
    optimizer: str
    extra: dict[str, Any] = field(default_factory=dict)


def alpha_configs(cfg: RunConfig, alphas: Sequence[float], steps: int, eval_every: int, wd: float) -> list[RunConfig]:
    """The run config of each alpha: init scale alpha, norm held at 1x its initial value."""
    return [cfg.replace(init_scale=float(a), constrain_norm=1.0, wd=wd, steps=steps, eval_every=eval_every)
            for a in alphas]


def train_fixed_norm(cfg: RunConfig, data: TaskData | None = None, alphas: Sequence[float] = (1.0,),
                     steps: int = 10_000, eval_every: int | None = None, wd: float = 0.0,
                     device: str | torch.device = "cpu",
                     progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> FixedNormCurves:
    """Train `cfg`'s model from each alpha at fixed norm for `steps` steps, weight decay `wd`, the rest of
    `cfg.optim` as given, model seed `cfg.train.seed`; evaluate (float64 loss) every `eval_every` steps
    (default steps / 200). progress: optional wrapper over the step range, e.g. `tqdm`."""
    data = data if data is not None else build_task(cfg.task)
    alphas = np.asarray(sorted(float(a) for a in alphas), dtype=float)
    if len(alphas) == 0 or (alphas <= 0).any():
        raise ValueError("alphas must be positive")
    eval_every = eval_every or max(1, steps // 200)
    trainer = Trainer(alpha_configs(cfg, alphas, steps, eval_every, wd), [data] * len(alphas), device)
    norms = next(t for t in trainer.transforms if isinstance(t, NormConstraint)).targets.cpu().numpy()
    rows = [(0, trainer.evaluate(float64=True))]
    for step in range(steps) if progress is None else progress(range(steps)):
        trainer.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            rows.append((step + 1, trainer.evaluate(float64=True)))
    curve = lambda key: np.array([[r[key] for r in ev] for _, ev in rows], dtype=float).T  # noqa: E731
    has_acc = rows[0][1][0]["train_acc"] is not None
    return FixedNormCurves(
        alphas=alphas, norms=norms, eval_steps=np.array([s for s, _ in rows]),
        train_loss=curve("train_loss"), test_loss=curve("test_loss"),
        train_acc=curve("train_acc") if has_acc else None, test_acc=curve("test_acc") if has_acc else None,
        steps=steps, wd=wd, lr=cfg.optim.lr, optimizer=cfg.optim.optimizer,
        extra={"task": data.name, "model": cfg.model.model, "seed": cfg.train.seed,
               "norm_at_alpha_1": float(norms[0] / alphas[0])})
