"""Omnigrok's norm constraint: every member rescaled to its target total norm after each step."""

from __future__ import annotations

import torch

from training.optim.transforms.base import Transform, member_norms


class NormConstraint(Transform):
    """Omnigrok's fixed-norm training: after every step, rescale each member's parameters to its target total
    norm (`constrain_norm` x its initial norm; a target of 0 leaves that member alone)."""

    name = "norm"

    def __init__(self, targets: torch.Tensor):
        self.targets = targets.to(torch.float64)  # [K], on the parameters' device

    @torch.no_grad()
    def on_params(self, params: list[torch.Tensor]) -> None:
        # the norm of the per-tensor norms, as set_weight_norm_ computes it for one model (vector_norm over dim 1
        # rounds a lone row as it rounds the same row among others, at any thread count: measured, unlike sum)
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


def build_norm_constraint(tr) -> NormConstraint:
    """The target comes from the seeded init, so a resumed run recomputes the same one; applied at once."""
    factors = torch.tensor([c.optim.constrain_norm for c in tr.cfgs], dtype=torch.float64, device=tr.device)
    norm = NormConstraint(factors * member_norms(tr.plist, tr.exact))
    norm.on_params(tr.plist)
    return norm
