"""Loss against weight norm: Omnigrok's LU picture (Liu, Michaud, Tegmark 2023).

Training loss against the weight norm w is "L"-shaped (high below some norm, ~0 above it) and test loss is
"U"-shaped (lowest at w_c). A network started at w >> w_c fits the training set at once and generalises only
when weight decay has carried its norm down to w_c: grokking. The probes:

- `landscape_slice(model, data, norms)`: rescale all parameters (or a named group) of one checkpoint to each
  norm and evaluate train/test loss and accuracy: the loss along the ray through that checkpoint.
- `reduced_landscape(curves)`: Omnigrok's reduced landscape, read off the curves of
  `training.fixed_norm.train_fixed_norm(cfg, data, alphas)` (for each init scale alpha, training with the norm
  held at its initial value, no weight decay; all alphas as one ensemble on the training step): the best train
  and test loss per alpha.
- `critical_norm(norms, test_loss)`: w_c, where test loss is lowest (refined by a parabola in log-log).
- `curve_shape(y)`, `diagnose(norms, train_loss, test_loss)`: "L" / "U" / "flat" / "rising", and a sentence.
- `norm_trajectory(metrics, w_c)`: a run's weight norm over training relative to w_c.

Norms are total L2 norms over all parameters (biases included), as Omnigrok measures them.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
from torch.func import functional_call

from training.constants import EVAL_CHUNK
from training.optim.losses import accuracy, compute_loss
from training.models.build import scoring_module
from training.tasks.data import TaskData

if TYPE_CHECKING:  # the curves' type only: interp reads training's results, it never trains
    from training.fixed_norm import FixedNormCurves

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 1, 11))  # Omnigrok: 10^linspace(-1, 1, 11)
REL_FLOOR = 1e-4  # losses below 1e-4 x the smallest-norm loss count as zero when reading shapes


# --- parameter groups and rescaling ----------------------------------------------------------------------------


def group_names(names: Sequence[str], group: str | Sequence[str] | None = None) -> list[str]:
    """The parameter names a group selects: None or "all" = every parameter; otherwise one regular expression or a
    list of them, matched with `re.search` (e.g. "W_U|b_U", ["embed", "pos_embed"], r"^layers\\.0\\.")."""
    if group is None or group == "all":
        return list(names)
    patterns = [group] if isinstance(group, str) else list(group)
    chosen = [n for n in names if any(re.search(p, n) for p in patterns)]
    if not chosen:
        raise ValueError(f"parameter group {patterns} matches no parameter (have: {', '.join(names)})")
    return chosen


def joint_norm(tensors: Iterable[torch.Tensor]) -> float:
    """L2 norm of the tensors taken as one vector (float64)."""
    return math.sqrt(sum(float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64) ** 2) for t in tensors))


def rescaled(weights: dict[str, torch.Tensor], norm: float,
             group: str | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """A copy of `weights` with the group's joint norm set to `norm` (direction kept); other tensors untouched."""
    names = group_names(list(weights), group)
    scale = norm / joint_norm(weights[n] for n in names)
    return {k: v * scale if k in names else v for k, v in weights.items()}


# --- the landscape slice ---------------------------------------------------------------------------------------


@dataclass
class LandscapeSlice:
    """Train/test loss and accuracy along the ray through one set of weights.

    Attributes:
        step: checkpoint step (None if not from a run).
        group: the rescaled parameter names.
        base_norm, base_group_norm: total norm and group norm of the weights as they are.
        group_norms: [n] the group norm at each point; total_norms: [n] the total norm there (x axis).
        train_loss, test_loss: [n]; train_acc, test_acc: [n] or None for regression tasks.
    """

    step: int | None
    group: list[str]
    base_norm: float
    base_group_norm: float
    group_norms: np.ndarray
    total_norms: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray | None
    test_acc: np.ndarray | None

    @property
    def w_c(self) -> float:
        return critical_norm(self.total_norms, self.test_loss)

    def to_dict(self) -> dict[str, Any]:
        d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        d["w_c"] = self.w_c
        return d


@torch.no_grad()
def _outputs(model: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The logits the task's loss reads (the answer's; every position for sequence tasks) with `params`."""
    scored = scoring_module(model)
    return torch.cat([functional_call(scored, params, (x[i: i + EVAL_CHUNK],)) for i in range(0, len(x), EVAL_CHUNK)])


@torch.no_grad()
def landscape_slice(model: torch.nn.Module, data: TaskData, norms: Sequence[float] | None = None,
                    scales: Sequence[float] | None = None, group: str | Sequence[str] | None = None,
                    step: int | None = None) -> LandscapeSlice:
    """Rescale the group (default: all parameters) to each of `norms` (group norms), or by each of `scales`
    (default 10^linspace(-1, 1, 21)), and evaluate train/test loss (float64) and accuracy on the whole split.

    model: any of our models (its own weights are not changed); data: its task.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    weights = {k: v.detach() for k, v in model.named_parameters()}
    names = group_names(list(weights), group)
    g0 = joint_norm(weights[n] for n in names)
    total0 = joint_norm(weights.values())
    if norms is not None:
        scales = np.asarray(norms, dtype=float) / g0
    elif scales is None:
        scales = np.logspace(-1, 1, 21)
    scales = np.asarray(scales, dtype=float)
    split = {s: (data.inputs[idx].to(device), data.labels[idx].to(device))
             for s, idx in (("train", data.train_idx), ("test", data.test_idx))}
    res: dict[str, list] = {f"{s}_{m}": [] for s in split for m in ("loss", "acc")}
    for c in scales:
        params = {k: v * float(c) if k in names else v for k, v in weights.items()}
        for s, (x, y) in split.items():
            out = _outputs(model, params, x)
            res[f"{s}_loss"].append(compute_loss(out, y, data.loss, float64=True).item())
            res[f"{s}_acc"].append(accuracy(out, y, data.loss))
    model.train(was_training)
    acc = {k: (np.array(v) if v and v[0] is not None else None) for k, v in res.items() if k.endswith("acc")}
    return LandscapeSlice(step=step, group=names, base_norm=total0, base_group_norm=g0,
                          group_norms=scales * g0, total_norms=np.sqrt(total0**2 - g0**2 + (scales * g0) ** 2),
                          train_loss=np.array(res["train_loss"]), test_loss=np.array(res["test_loss"]),
                          train_acc=acc["train_acc"], test_acc=acc["test_acc"])


# --- the reduced landscape: training at fixed norm -------------------------------------------------------------


@dataclass
class ReducedLandscape:
    """Omnigrok's reduced landscape: one fixed-norm training per init scale alpha.

    Attributes:
        alphas: [n] init scales; norms: [n] the norm each run is held at (= alpha x the alpha-1 init norm).
        best_train_loss, best_test_loss: [n] lowest loss seen over training (each minimised separately).
        final_train_loss, final_test_loss: [n] at the last step.
        best_train_acc, best_test_acc, final_train_acc, final_test_acc: [n] or None for regression tasks.
        eval_steps: [m] steps evaluated; train_curves, test_curves: [n, m] losses there.
        steps, wd, lr, optimizer: how each run was trained.
    """

    alphas: np.ndarray
    norms: np.ndarray
    best_train_loss: np.ndarray
    best_test_loss: np.ndarray
    final_train_loss: np.ndarray
    final_test_loss: np.ndarray
    best_train_acc: np.ndarray | None
    best_test_acc: np.ndarray | None
    final_train_acc: np.ndarray | None
    final_test_acc: np.ndarray | None
    eval_steps: np.ndarray
    train_curves: np.ndarray
    test_curves: np.ndarray
    steps: int
    wd: float
    lr: float
    optimizer: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def w_c(self) -> float:
        return critical_norm(self.norms, self.best_test_loss)

    def diagnosis(self, ratio: float = 3.0) -> dict[str, Any]:
        return diagnose(self.norms, self.best_train_loss, self.best_test_loss, ratio=ratio)

    def to_dict(self) -> dict[str, Any]:
        d = {k: (_nan_to_none(v.tolist()) if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        d["w_c"] = self.w_c
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReducedLandscape:
        names = {f.name for f in cls.__dataclass_fields__.values()}
        kw = {k: v for k, v in d.items() if k in names}
        for k, v in kw.items():
            if isinstance(v, list):
                kw[k] = np.array([np.nan if x is None else x for x in v] if v and not isinstance(v[0], list)
                                 else [[np.nan if x is None else x for x in row] for row in v], dtype=float)
        return cls(**kw)


def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def reduced_landscape(curves: FixedNormCurves) -> ReducedLandscape:
    """The reduced landscape read off fixed-norm training curves (`training.fixed_norm.train_fixed_norm`, which
    trains every alpha on the training step): best and final train/test loss and accuracy per alpha."""
    tr_acc, te_acc = curves.train_acc, curves.test_acc
    return ReducedLandscape(
        alphas=curves.alphas, norms=curves.norms,
        best_train_loss=_nanmin(curves.train_loss), best_test_loss=_nanmin(curves.test_loss),
        final_train_loss=curves.train_loss[:, -1], final_test_loss=curves.test_loss[:, -1],
        best_train_acc=_nanmax(tr_acc), best_test_acc=_nanmax(te_acc),
        final_train_acc=None if tr_acc is None else tr_acc[:, -1],
        final_test_acc=None if te_acc is None else te_acc[:, -1],
        eval_steps=curves.eval_steps, train_curves=curves.train_loss, test_curves=curves.test_loss,
        steps=curves.steps, wd=curves.wd, lr=curves.lr, optimizer=curves.optimizer, extra=dict(curves.extra),
    )


def _nanmin(a: np.ndarray) -> np.ndarray:
    """Row minimum ignoring NaN (a diverged run); NaN where a row has no finite value."""
    a = np.where(np.isfinite(a), a, np.inf)
    m = a.min(axis=1)
    return np.where(np.isfinite(m), m, np.nan)


def _nanmax(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.where(np.isfinite(a), a, -np.inf)
    m = a.max(axis=1)
    return np.where(np.isfinite(m), m, np.nan)


# --- w_c, shapes, trajectory -------------------------------------------------------------------------------------


def critical_norm(norms: Sequence[float], test_loss: Sequence[float]) -> float:
    """w_c: the norm where test loss is lowest. At an interior grid minimum, refined by the vertex of a parabola
    through the three points around it in (log w, log loss); at an end of the grid, that end."""
    w, y = np.asarray(norms, dtype=float), np.asarray(test_loss, dtype=float)
    ok = np.isfinite(y) & (y > 0) & (w > 0)
    w, y = w[ok], y[ok]
    if len(w) == 0:
        return float("nan")
    order = np.argsort(w)
    w, y = w[order], y[order]
    i = int(np.argmin(y))
    if 0 < i < len(w) - 1:
        lx, ly = np.log(w[i - 1: i + 2]), np.log(y[i - 1: i + 2])
        c2, c1, _ = np.polyfit(lx, ly, 2)
        if c2 > 0:
            vertex = -c1 / (2 * c2)
            if lx[0] <= vertex <= lx[2]:
                return float(np.exp(vertex))
    return float(w[i])


def floored(y: np.ndarray, rel_floor: float = REL_FLOOR) -> np.ndarray:
    """y plus a floor of rel_floor x its smallest-norm value (about the loss of a network too small to fit
    anything), so that losses fitted to within that fraction count as zero instead of as noise to rank."""
    scale = y[0] if np.isfinite(y[0]) and y[0] > 0 else np.nanmax(np.abs(y))
    return y + rel_floor * scale


def curve_shape(y: Sequence[float], ratio: float = 3.0, rel_floor: float = REL_FLOOR) -> str:
    """Classify a loss curve over increasing norm: "U" (interior minimum, both ends >= ratio x it), "L" (the
    small-norm end >= ratio x the minimum, the large-norm end within ratio of it), "rising" (the mirror image),
    "flat" (neither end that far above the minimum). See `floored` for what counts as zero."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return "too few points"
    z = floored(y, rel_floor)
    i = int(np.argmin(z))
    left, right = z[0] / z[i], z[-1] / z[i]
    if 0 < i < len(z) - 1 and left >= ratio and right >= ratio:
        return "U"
    if left >= ratio:
        return "L"
    if right >= ratio:
        return "rising"
    return "flat"


def diagnose(norms: Sequence[float], train_loss: Sequence[float], test_loss: Sequence[float],
             ratio: float = 3.0) -> dict[str, Any]:
    """Shapes of the train and test curves against norm, w_c, and a one-sentence reading of them."""
    w = np.asarray(norms, dtype=float)
    order = np.argsort(w)
    w, tr, te = w[order], np.asarray(train_loss, float)[order], np.asarray(test_loss, float)[order]
    train_shape, test_shape = curve_shape(tr, ratio), curve_shape(te, ratio)
    w_c = critical_norm(w, te)
    ok_te = np.isfinite(te)
    i_min = int(np.nanargmin(np.where(ok_te, te, np.nan))) if ok_te.any() else 0
    # the L's corner: the smallest norm from which train loss stays within `ratio` of its floor
    z = floored(tr)
    low = np.isfinite(z) & (z <= ratio * np.nanmin(z))
    corner = next((float(w[i]) for i in range(len(w)) if low[i:].all()), float("nan"))
    parts = [f"train loss is {_shape_words(train_shape)}"]
    if train_shape == "L":
        parts[0] += f" (x{z[0] / np.nanmin(z):.3g} lower at large norm; within {ratio:g}x of its floor from " \
                    f"w={corner:.3g} on)"
    te_words = f"test loss is {_shape_words(test_shape)} (minimum {te[i_min]:.3g} at w_c={w_c:.3g}"
    if ok_te.any():
        te_words += f"; {te[0] / te[i_min]:.3g}x higher at w={w[0]:.3g}, {te[-1] / te[i_min]:.3g}x at w={w[-1]:.3g})"
    parts.append(te_words)
    lu = train_shape == "L" and test_shape == "U"
    if lu:
        reading = ("the LU mechanism: a network started at w > w_c fits the training set at once and generalises "
                   "only when its norm comes down to w_c")
    elif test_shape == "L" or (test_shape == "flat" and train_shape in ("L", "flat")):
        reading = "no U: large norms do not hurt test loss here, so this landscape predicts no grokking"
    else:
        reading = "not the LU picture"
    return {"train_shape": train_shape, "test_shape": test_shape, "lu": lu, "w_c": w_c,
            "test_min": float(te[i_min]) if ok_te.any() else float("nan"), "train_corner": corner,
            "text": "; ".join(parts) + ": " + reading + "."}


def _shape_words(shape: str) -> str:
    return {"L": "L-shaped", "U": "U-shaped", "flat": "flat", "rising": "rising with norm"}.get(shape, shape)


def norm_trajectory(metrics: list[dict[str, Any]], w_c: float, tol: float = 0.1) -> dict[str, Any]:
    """A run's weight norm over training against w_c.

    metrics: the run's metrics rows (step, weight_norm, ...). Returns steps [m], weight_norm [m], ratio [m]
    (= norm / w_c), start/end/max ratio, and `step_at_wc`: the first step at which the norm is within `tol`
    (relative) of w_c or has crossed it (None if it never gets there).
    """
    rows = [r for r in metrics if r.get("weight_norm") is not None]
    steps = np.array([r["step"] for r in rows])
    norms = np.array([r["weight_norm"] for r in rows], dtype=float)
    ratio = norms / w_c
    reach = None
    if len(ratio):
        side = np.sign(ratio[0] - 1)
        for s, r in zip(steps, ratio):
            if abs(r - 1) <= tol or np.sign(r - 1) != side:
                reach = int(s)
                break
    return {"steps": steps.tolist(), "weight_norm": norms.tolist(), "ratio": ratio.tolist(), "w_c": w_c,
            "start_ratio": float(ratio[0]) if len(ratio) else None,
            "end_ratio": float(ratio[-1]) if len(ratio) else None,
            "max_ratio": float(ratio.max()) if len(ratio) else None, "step_at_wc": reach}
