"""Grokfast's gradient filters (Lee et al. 2024): EMA and moving average."""

from __future__ import annotations

import torch

from training.optim.transforms.base import Transform, _per_member


class GrokfastEMA(Transform):
    """Grokfast-EMA (Lee et al. 2024): h <- alpha h + (1 - alpha) g, then g <- g + lamb h, with h = g on the first
    step (their gradfilter_ema starts its filter at the first gradient). Per-member alpha and lamb."""

    name = "grokfast"

    def __init__(self, params: list[torch.Tensor], alphas: list[float], lambs: list[float]):
        self.ema = [torch.zeros_like(p) for p in params]
        self.alphas, self.lambs = list(alphas), list(lambs)
        self.started = [False] * len(alphas)

    @torch.no_grad()
    def on_grads(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        alphas = [a if s else 0.0 for a, s in zip(self.alphas, self.started)]  # alpha 0: h = g on the first step
        for h, g in zip(self.ema, grads):
            a = _per_member(alphas, g)
            h.copy_(h * a + g * (1 - a))
        self.started = [True] * len(self.started)
        return [g + _per_member(self.lambs, g) * h for g, h in zip(grads, self.ema)]

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        out = {f"transform.grokfast.{i}": h[k] for i, h in enumerate(self.ema)}
        out["transform.grokfast.started"] = torch.tensor(float(self.started[k]))
        return out

    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        for i, h in enumerate(self.ema):
            h[k].copy_(tensors[f"transform.grokfast.{i}"])
        self.started[k] = bool(tensors["transform.grokfast.started"])

    def keep(self, idx: torch.Tensor) -> None:
        self.ema = [h[idx.to(h.device)] for h in self.ema]
        pick = lambda xs: [xs[i] for i in idx.tolist()]  # noqa: E731
        self.alphas, self.lambs, self.started = pick(self.alphas), pick(self.lambs), pick(self.started)


class GrokfastMA(Transform):
    """Grokfast-MA (Lee et al. 2024): g <- g + lamb mean(last w gradients), applied once w gradients are held
    (their gradfilter_ma with warmup). The window is a ring buffer [K, w, ...] per parameter; its slot order is
    part of the state, so the mean sums in the same order after a resume. The window fixes a shape, so it is the
    same for every member of an ensemble (training.ensemble.shape_key); lamb is per member."""

    name = "grokfast"

    def __init__(self, params: list[torch.Tensor], window: int, lambs: list[float]):
        self.window, self.lambs = window, list(lambs)
        self.buf = [p.new_zeros((p.shape[0], window, *p.shape[1:])) for p in params]
        self.count = [0] * len(lambs)  # gradients seen, per member (all members step together)

    @torch.no_grad()
    def on_grads(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        slot, full = self.count[0] % self.window, self.count[0] + 1 >= self.window
        for b, g in zip(self.buf, grads):
            b[:, slot] = g
        self.count = [c + 1 for c in self.count]
        if not full:
            return grads
        return [g + _per_member(self.lambs, g) * (b.sum(1) / self.window) for g, b in zip(grads, self.buf)]

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        out = {f"transform.grokfast.{i}": b[k] for i, b in enumerate(self.buf)}
        out["transform.grokfast.count"] = torch.tensor(self.count[k], dtype=torch.int64)
        return out

    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        for i, b in enumerate(self.buf):
            b[k].copy_(tensors[f"transform.grokfast.{i}"])
        self.count[k] = int(tensors["transform.grokfast.count"])

    def keep(self, idx: torch.Tensor) -> None:
        self.buf = [b[idx.to(b.device)] for b in self.buf]
        self.lambs = [self.lambs[i] for i in idx.tolist()]
        self.count = [self.count[i] for i in idx.tolist()]


def build_grokfast(tr) -> Transform:
    """The filter kind and (for "ma") its window are the same for every member (training.registry.ensemble_key)."""
    o = [c.optim for c in tr.cfgs]
    if o[0].grokfast == "ema":
        return GrokfastEMA(tr.plist, [x.grokfast_alpha for x in o], [x.grokfast_lamb for x in o])
    return GrokfastMA(tr.plist, o[0].grokfast_window, [x.grokfast_lamb for x in o])
