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


NOISE_SEED_OFFSET = 0x9E3779B97F4A7C15  # keeps the noise stream apart from the minibatch stream of the same seed


class WeightNoise(Transform):
    """Power et al.'s weight noise: each training forward sees w + N(0, sigma_k^2) per weight, drawn from member k's
    own generator (CPU, seeded from its batch seed), and the clean weights are restored bit-exactly after the
    backward, so the optimiser updates the clean weights with the gradient taken at the noisy ones."""

    name = "noise"

    def __init__(self, sigmas: list[float], batch_seeds: list[int]):
        self.sigmas = list(sigmas)
        self.gens = [torch.Generator().manual_seed((s + NOISE_SEED_OFFSET) % 2**64) for s in batch_seeds]
        self._clean: list[torch.Tensor] | None = None

    @torch.no_grad()
    def before_forward(self, params: list[torch.Tensor]) -> None:
        self._clean = [p.detach().clone() for p in params]
        for k, (sigma, g) in enumerate(zip(self.sigmas, self.gens)):
            if sigma > 0:
                for p in params:
                    p[k].add_(torch.randn(p.shape[1:], generator=g, dtype=p.dtype).to(p.device), alpha=sigma)

    @torch.no_grad()
    def after_backward(self, params: list[torch.Tensor]) -> None:
        for p, c in zip(params, self._clean):
            p.copy_(c)  # a copy, not a subtraction: (w + n) - n is not always w in floating point
        self._clean = None

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        return {"transform.noise.rng": self.gens[k].get_state()}

    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        self.gens[k].set_state(tensors["transform.noise.rng"])

    def keep(self, idx: torch.Tensor) -> None:
        self.sigmas = [self.sigmas[i] for i in idx.tolist()]
        self.gens = [self.gens[i] for i in idx.tolist()]


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


# --- building the transforms a Trainer's configs switch on (their specs: training.transform_specs) ------------


def build_transforms(trainer) -> list[Transform]:
    """The transforms any member's config switches on, in the order they act (their specs' `order`). Those that
    change the initial weights (`sets_init`: the norm constraint) are built first, so that the others (decay to
    init) keep the weights of step 0."""
    specs = [s for s in transform_specs() if any(s.active(c.optim) for c in trainer.cfgs)]
    built = {s.name: s.build(trainer) for s in sorted(specs, key=lambda s: not s.sets_init)}
    return [built[s.name] for s in specs]


def build_weight_noise(tr) -> WeightNoise:
    return WeightNoise([c.optim.weight_noise for c in tr.cfgs], [c.train.batch_seed for c in tr.cfgs])


def build_grokfast(tr) -> Transform:
    """The filter kind and (for "ma") its window are the same for every member (training.registry.ensemble_key)."""
    o = [c.optim for c in tr.cfgs]
    if o[0].grokfast == "ema":
        return GrokfastEMA(tr.plist, [x.grokfast_alpha for x in o], [x.grokfast_lamb for x in o])
    return GrokfastMA(tr.plist, o[0].grokfast_window, [x.grokfast_lamb for x in o])


def build_perp_grad(tr) -> PerpGrad:
    return PerpGrad([c.optim.perp_grad for c in tr.cfgs], tr.exact)


def build_decay_to_init(tr) -> DecayToInit:
    o = [c.optim for c in tr.cfgs]
    return DecayToInit(tr.plist, [x.decay_to_init for x in o], decoupled=o[0].optimizer == "adamw")


def build_norm_constraint(tr) -> NormConstraint:
    """The target comes from the seeded init, so a resumed run recomputes the same one; applied at once."""
    factors = torch.tensor([c.optim.constrain_norm for c in tr.cfgs], dtype=torch.float64, device=tr.device)
    norm = NormConstraint(factors * member_norms(tr.plist, tr.exact))
    norm.on_params(tr.plist)
    return norm
