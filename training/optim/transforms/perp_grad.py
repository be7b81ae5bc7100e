"""⊥Grad (Prieto et al. 2025)."""

from __future__ import annotations

import torch

from training.optim.transforms.base import Transform, member_sums


class PerpGrad(Transform):
    """⊥Grad (Prieto et al. 2025): each parameter tensor's gradient loses its component along that tensor's
    current weights, g <- g - (g.w / w.w) w, per member (their code's 1e-30 guards w = 0). Members with the switch
    off keep their gradient."""

    name = "perp_grad"

    def __init__(self, on: list[bool], rowwise: bool = True):
        self.on = [float(x) for x in on]
        self.rowwise = rowwise  # member_sums' arithmetic (False: runs trained before the exact path)

    @torch.no_grad()
    def on_grads(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for p, g in zip(params, grads):
            w, gf = p.detach().flatten(1), g.flatten(1)
            on = torch.tensor(self.on, dtype=w.dtype, device=w.device)
            proj = member_sums(w * gf, self.rowwise) / (member_sums(w * w, self.rowwise) + 1e-30) * on
            out.append(g - proj.view(-1, *[1] * (g.dim() - 1)) * p.detach())
        return out

    def keep(self, idx: torch.Tensor) -> None:
        self.on = [self.on[i] for i in idx.tolist()]


def build_perp_grad(tr) -> PerpGrad:
    return PerpGrad([c.optim.perp_grad for c in tr.cfgs], tr.exact)
