"""AdamW, Adam and SGD over stacked parameters [K, ...], with per-member hyperparameters.

The maths is torch.optim's single-tensor implementation (the one it uses on CPU), step for step: decoupled decay
`p *= 1 - lr * wd` (AdamW) or L2 `g += wd * p` (Adam, SGD), `m.lerp_(g, 1 - beta1)`, `v = beta2 v + (1 - beta2) g^2`,
bias corrections from each member's own step count, `p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`; SGD's
momentum buffer starts as the first gradient. Scalars are computed in float64 per member and rounded to the
parameters' dtype, as torch.optim rounds its python-float scalars, so a member matches torch.optim to float
rounding. Member k's state is the slice [k] of every buffer.
"""

from __future__ import annotations

import torch

EPS = 1e-8


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[K] -> [K, 1, ...] broadcasting against `like`, in its dtype."""
    return v.to(like.dtype).view(-1, *[1] * (like.dim() - 1))


class StackedOptimizer:
    """kind: "adamw", "adam" or "sgd"; params: stacked leaf tensors; betas/momentum: [K] float64 tensors."""

    BUFFERS = {"adamw": ("exp_avg", "exp_avg_sq"), "adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}

    def __init__(self, kind: str, params: list[torch.Tensor], beta1: torch.Tensor, beta2: torch.Tensor,
                 momentum: torch.Tensor):
        self.kind = kind
        self.beta1, self.beta2, self.momentum = beta1, beta2, momentum
        self.steps = torch.zeros(len(beta1), dtype=torch.float64)  # per member, as torch.optim's state["step"]
        self.use_momentum = kind == "sgd" and bool((momentum != 0).any())
        names = self.BUFFERS[kind] if kind != "sgd" or self.use_momentum else ()
        self.state: dict[str, list[torch.Tensor]] = {n: [torch.zeros_like(p) for p in params] for n in names}

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: torch.Tensor, wd: torch.Tensor) -> None:
        """lr, wd: [K] float64, this update's values per member."""
        self.steps += 1
        if self.kind == "sgd":
            return self._sgd(params, grads, lr, wd)
        b1, b2 = self.beta1, self.beta2
        bc1, bc2_sqrt = 1 - b1 ** self.steps, (1 - b2 ** self.steps).sqrt()
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
            if self.kind == "adamw":
                p.mul_(_col(1 - lr * wd, p))
            else:
                g = g + _col(wd, p) * p
            m.lerp_(g, _col(1 - b1, p))
            v.mul_(_col(b2, p)).addcmul_(g, g * _col(1 - b2, p))
            denom = (v.sqrt() / _col(bc2_sqrt, p)).add_(EPS)
            p.add_(m * _col(-lr / bc1, p) / denom)

    def _sgd(self, params, grads, lr, wd) -> None:
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + _col(wd, p) * p
            if self.use_momentum:  # a zero buffer times momentum plus the first gradient is the first gradient
                buf = self.state["momentum_buffer"][i]
                buf.mul_(_col(self.momentum, p)).add_(g)
                g = buf
            p.add_(g * _col(-lr, p))

    def keep(self, idx: torch.Tensor) -> None:
        """Keep only the members `idx` (the others left the ensemble)."""
        self.beta1, self.beta2, self.momentum = self.beta1[idx], self.beta2[idx], self.momentum[idx]
        self.steps = self.steps[idx]
        self.state = {n: [b[idx.to(b.device)] for b in bufs] for n, bufs in self.state.items()}

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """torch.optim's state layout, opt.<param index>.<buffer>, plus the step count opt.step (a state file
        written by torch.optim before this class, with opt.<i>.step, loads too)."""
        out = {"opt.step": torch.tensor(float(self.steps[k]))}
        for name, bufs in self.state.items():
            for i, b in enumerate(bufs):
                out[f"opt.{i}.{name}"] = b[k]
        return out

    @torch.no_grad()
    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        steps = [float(v) for key, v in tensors.items() if key.startswith("opt.") and key.endswith(".step")]
        self.steps[k] = steps[0] if steps else 0.0
        for name, bufs in self.state.items():
            for i, b in enumerate(bufs):
                saved = tensors.get(f"opt.{i}.{name}")  # absent: SGD saved before its first momentum step
                b[k].copy_(saved if saved is not None else torch.zeros_like(b[k]))
