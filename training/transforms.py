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


class Transform:
    name = "transform"

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


def member_norms(params: list[torch.Tensor]) -> torch.Tensor:
    """[K] float64: each member's total L2 norm over all its parameters (summed as `weight_norm` sums)."""
    return sum((p.detach().double() ** 2).flatten(1).sum(1) for p in params).sqrt()


class NormConstraint(Transform):
    """Omnigrok's fixed-norm training: after every step, rescale each member's parameters to its target total
    norm (`constrain_norm` x its initial norm; a target of 0 leaves that member alone)."""

    name = "norm"

    def __init__(self, targets: torch.Tensor):
        self.targets = targets.to(torch.float64)  # [K], on the parameters' device

    @torch.no_grad()
    def on_params(self, params: list[torch.Tensor]) -> None:
        # the norm of the per-tensor norms, as set_weight_norm_ computes it for one model
        per_tensor = [torch.linalg.vector_norm(p.flatten(1), dim=1, dtype=torch.float64) for p in params]
        norms = torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)
        scale = torch.where(self.targets > 0, self.targets / norms, torch.ones_like(norms))
        for p in params:
            p.mul_(scale.to(p.dtype).view(-1, *[1] * (p.dim() - 1)))

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        return {"transform.norm.target": self.targets[k].reshape(1).cpu()}

    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        if "transform.norm.target" in tensors:  # older state files: the target recomputed from the seeded init
            self.targets[k] = tensors["transform.norm.target"][0]

    def keep(self, idx: torch.Tensor) -> None:
        self.targets = self.targets[idx.to(self.targets.device)]


def weight_norm(model: torch.nn.Module) -> float:
    return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))


@torch.no_grad()
def set_weight_norm_(params: list[torch.Tensor], target: float) -> None:
    """Rescale `params` in place so that their joint L2 norm is `target` (one model, unstacked)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p, dtype=torch.float64) for p in params]))
    torch._foreach_mul_(params, (target / norm).item())
