"""Gradient and parameter transforms: one class each, with its own state, applied by the Trainer in order.

A transform sees the stacked parameters [K, ...] of all members; `on_grads` may change the gradients before the
optimiser step, `on_params` the parameters after it. Its buffers go into each member's resume state through
`member_state(k)` / `load_member_state(k, tensors)` (keys `transform.<name>.*`), and `keep(idx)` cuts them when
members leave an ensemble, so a new trick (Grokfast's gradient filter, weight noise, decay to init) is one class
here and resume stays bit-identical without touching the loop (tests/training/test_trainer.py builds one).
"""

from __future__ import annotations

import math

import torch

from training.registry import transform_specs


class Transform:
    name = "transform"

    def set_hyper(self, lr: list[float], wd: list[float]) -> None:
        """This update's lr and wd per member, before `on_grads` (decay to init needs them)."""

    def before_forward(self, params: list[torch.Tensor]) -> None:
        """Before the training forward (weight noise perturbs the weights here)."""

    def after_backward(self, params: list[torch.Tensor]) -> None:
        """After the training backward, before `on_grads` (weight noise restores the clean weights here)."""

    def on_grads(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        return grads

    def on_params(self, params: list[torch.Tensor]) -> None:
        pass

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        return {}

    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def keep(self, idx: torch.Tensor) -> None:
        """Keep only the members `idx` (the others left the ensemble)."""


REDUCE_GRAIN = 32768  # torch's internal GRAIN_SIZE: a reduction over at least this many elements may use threads


def member_sums(t: torch.Tensor, rowwise: bool = True) -> torch.Tensor:
    """[K, ...] -> [K]: each member's sum over its own elements, the same arithmetic for any K.

    torch sums the rows of a [K, N] tensor each in one pass (rows shared out among threads), but a reduction to a
    single number over at least REDUCE_GRAIN elements is cut into one partial sum per thread: other rounding. So a
    lone member (K = 1) with threads is summed beside a row of zeros, the way it is summed among other members.
    rowwise=False: the plain sum (runs trained before the exact path resume with it)."""
    flat = t.flatten(1)
    if rowwise and flat.shape[0] == 1 and flat.shape[1] >= REDUCE_GRAIN and torch.get_num_threads() > 1:
        return torch.cat([flat, torch.zeros_like(flat)]).sum(1)[:1]
    return flat.sum(1)


def member_norms(params: list[torch.Tensor], rowwise: bool = True) -> torch.Tensor:
    """[K] float64: each member's total L2 norm over all its parameters (summed as `weight_norm` sums)."""
    return sum(member_sums(p.detach().double() ** 2, rowwise) for p in params).sqrt()


def weight_norm(model: torch.nn.Module) -> float:
    return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))


@torch.no_grad()
def set_weight_norm_(params: list[torch.Tensor], target: float) -> None:
    """Rescale `params` in place so that their joint L2 norm is `target` (one model, unstacked)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p, dtype=torch.float64) for p in params]))
    torch._foreach_mul_(params, (target / norm).item())


def _per_member(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """[K, 1, ..., 1] of per-member floats, broadcastable against a stacked tensor `like` [K, ...]."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *[1] * (like.dim() - 1))


# --- building the transforms a Trainer's configs switch on (their specs: training.optim.transforms.specs) ------------


def build_transforms(trainer) -> list[Transform]:
    """The transforms any member's config switches on, in the order they act (their specs' `order`). Those that
    change the initial weights (`sets_init`: the norm constraint) are built first, so that the others (decay to
    init) keep the weights of step 0."""
    specs = [s for s in transform_specs() if any(s.active(c.optim) for c in trainer.cfgs)]
    built = {s.name: s.build(trainer) for s in sorted(specs, key=lambda s: not s.sets_init)}
    return [built[s.name] for s in specs]
