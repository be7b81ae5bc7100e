"""Weight decay towards the initial weights."""

from __future__ import annotations

import torch

from training.optim.transforms.base import Transform, _per_member


class DecayToInit(Transform):
    """Weight decay towards the initial weights w0 instead of 0 (Power et al.): w <- w - lr wd (w - w0).
    The optimiser already decays towards 0, so this adds back lr wd w0 after a decoupled (AdamW) step, or removes
    wd w0 from the gradient before a coupled L2 one (Adam, SGD: g + wd w becomes g + wd (w - w0)). w0 is the
    seeded initialisation, which a resumed Trainer rebuilds from the seed, so it needs no saved state."""

    name = "decay_to_init"

    def __init__(self, params: list[torch.Tensor], on: list[bool], decoupled: bool):
        self.init = [p.detach().clone() for p in params]
        self.on, self.decoupled = [float(x) for x in on], decoupled
        self.lr, self.wd = [0.0] * len(on), [0.0] * len(on)

    def set_hyper(self, lr: list[float], wd: list[float]) -> None:
        self.lr, self.wd = lr, wd

    def on_grads(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.decoupled:
            return grads
        c = [w * on for w, on in zip(self.wd, self.on)]
        return [g - _per_member(c, g) * w0 for g, w0 in zip(grads, self.init)]

    @torch.no_grad()
    def on_params(self, params: list[torch.Tensor]) -> None:
        if self.decoupled:
            c = [lr * w * on for lr, w, on in zip(self.lr, self.wd, self.on)]
            for p, w0 in zip(params, self.init):
                p.add_(_per_member(c, p) * w0)

    def keep(self, idx: torch.Tensor) -> None:
        self.init = [w0[idx.to(w0.device)] for w0 in self.init]
        self.on = [self.on[i] for i in idx.tolist()]


def build_decay_to_init(tr) -> DecayToInit:
    o = [c.optim for c in tr.cfgs]
    return DecayToInit(tr.plist, [x.decay_to_init for x in o], decoupled=o[0].optimizer == "adamw")
