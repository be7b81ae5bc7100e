"""AdamW, Adam and SGD over stacked parameters [K, ...], with per-member hyperparameters.

The update is torch.optim's own: either its single-tensor functional form (`torch.optim.adamw.adamw(...,
foreach=False)`, what `torch.optim.AdamW` runs on a CPU, so a single run is bit-identical to one trained with
torch.optim, including runs started before this class), or its fused kernel (`torch._fused_adamw_`, `_fused_adam_`,
`_fused_sgd_`: one pass over each tensor instead of ~10, the maths of `AdamW(fused=True)`; ensembles use it).
Members are grouped by their current
hyperparameters (lr with its warmup, wd with the memorisation switch, betas, momentum, step count): a group that
holds every member updates the whole stacked tensors in one call, a smaller group updates its members' slices
[k] (contiguous views). So a member's update is the same elementwise arithmetic alone or in any ensemble.
Member k's state is the slice [k] of every buffer, saved in torch.optim's layout.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.optim.adam import adam as _adam
from torch.optim.adamw import adamw as _adamw
from torch.optim.sgd import sgd as _sgd

EPS = 1e-8
VEC = 16  # elements per vector step of the fused kernels (64 bytes of float32)


def vector_storage(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of t whose memory runs on, zero-filled, to a whole number of vector steps: the exact
    update then reaches its last elements in place (`_vector_pieces`) instead of copying them out and back."""
    n = t.numel()
    if n % VEC == 0:
        return t.detach().clone(memory_format=torch.contiguous_format)
    out = t.new_zeros(n - n % VEC + VEC)[:n].view(t.shape)
    out.copy_(t.detach())
    return out


def _tail_in_place(t: torch.Tensor, cut: int) -> torch.Tensor | None:
    """The vector step that holds t's last elements, as a view, when t's memory runs on to it (`vector_storage`)."""
    if t.is_contiguous() and t.storage_offset() == 0 and t.untyped_storage().nbytes() == (cut + VEC) * t.element_size():
        return t.as_strided((VEC,), (1,), cut)
    return None


def _vector_pieces(ts: list[torch.Tensor], members: list[int] | None, write: bool) -> tuple[list[torch.Tensor],
                                                                                          Callable[[], None]]:
    """The members (None: all) of each stack as the pieces one fused call takes, and how to write the results
    back. The fused kernels take a scalar path for a tensor's last len % VEC elements (other rounding), which in a
    plain stack only the last member's tail would take; so each stack (or each member's slice of it) goes in as its
    flat body of whole vector steps (a view, updated in place) and its last elements padded to a whole vector
    step: in place where its memory runs on (`vector_storage`), else a zero-padded copy (written back if `write`).
    Every element of every member takes the vector path, alone or in any group: the kernels' lanes do not mix, so
    where a member's elements fall among the vector steps does not change their bits."""
    pieces: list[torch.Tensor] = []
    tails: list[tuple[torch.Tensor, torch.Tensor]] = []
    for t in ts:
        for part in ([t] if members is None else [t[k] for k in members]):
            flat = part.view(-1)
            n = flat.numel()
            cut = n - n % VEC
            if cut:
                pieces.append(flat[:cut])
            if cut == n:
                continue
            # in place only for a whole stack the optimiser writes (a member's slice is followed by other members)
            tail = _tail_in_place(part, cut) if write and part is t else None
            if tail is None:
                tail = F.pad(flat[cut:], (0, cut + VEC - n))
                if write:
                    tails.append((flat[cut:], tail))
            pieces.append(tail)

    def write_back() -> None:
        for dst, tail in tails:
            dst.copy_(tail[: dst.numel()])

    return pieces, write_back


class StackedOptimizer:
    """kind: "adamw", "adam" or "sgd"; params: stacked leaf tensors; beta1, beta2, momentum: one float per member."""

    BUFFERS = {"adamw": ("exp_avg", "exp_avg_sq"), "adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}

    def __init__(self, kind: str, params: list[torch.Tensor], beta1: list[float], beta2: list[float],
                 momentum: list[float], fused: bool = True, exact: bool = False):
        self.kind, self.fused, self.exact = kind, fused, exact
        self.beta1, self.beta2, self.momentum = list(beta1), list(beta2), list(momentum)
        self.steps = [0] * len(beta1)  # updates done, per member (torch.optim's state["step"])
        names = self.BUFFERS[kind] if kind != "sgd" or any(self.momentum) else ()
        self.state: dict[str, list[torch.Tensor]] = {n: [vector_storage(torch.zeros_like(p)) for p in params]
                                                     for n in names}

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: list[float], wd: list[float]) -> None:
        """lr, wd: this update's values per member. grads must be contiguous, like params (flat memory)."""
        self.steps = [s + 1 for s in self.steps]
        groups: dict[tuple, list[int]] = {}
        for k in range(len(lr)):
            key = (lr[k], wd[k], self.beta1[k], self.beta2[k], self.momentum[k], self.steps[k])
            groups.setdefault(key, []).append(k)
        for (lr_k, wd_k, b1, b2, mom, step), members in groups.items():
            whole = len(members) == len(lr)
            backs: list[Callable[[], None]] = []
            if self.exact:  # every member element on the kernels' vector path, in any group (_vector_pieces)
                def pick(ts, write=True, idx=None if whole else members, backs=backs):
                    pieces, back = _vector_pieces(ts, idx, write)
                    backs.append(back)
                    return pieces
            else:
                pick = (lambda ts, write=True: list(ts)) if whole else (  # noqa: E731
                    lambda ts, write=True: [t[k] for t in ts for k in members])
            ps, gs = pick(params), pick(grads, write=False)
            bufs = {n: pick(b) for n, b in self.state.items()}
            if not self.fused:
                self._torch_step(ps, gs, bufs, lr=lr_k, wd=wd_k, b1=b1, b2=b2, mom=mom, step=step)
            elif self.kind == "sgd":
                torch._fused_sgd_(ps, gs, bufs["momentum_buffer"] if mom else [], weight_decay=wd_k, momentum=mom,
                                  lr=lr_k, dampening=0.0, nesterov=False, maximize=False, is_first_step=step == 1)
            else:
                fused = torch._fused_adamw_ if self.kind == "adamw" else torch._fused_adam_
                steps = [torch.tensor(float(step), device=ps[0].device)] * len(ps)
                fused(ps, gs, bufs["exp_avg"], bufs["exp_avg_sq"], [], steps, lr=lr_k, beta1=b1, beta2=b2,
                      weight_decay=wd_k, eps=EPS, amsgrad=False, maximize=False)
            for back in backs:
                back()

    def _torch_step(self, ps, gs, bufs, *, lr, wd, b1, b2, mom, step) -> None:
        """torch.optim's single-tensor update (it advances the step tensors itself: they start at step - 1)."""
        if self.kind == "sgd":
            _sgd(ps, gs, bufs["momentum_buffer"] if mom else [None] * len(ps), foreach=False,
                                fused=False, weight_decay=wd, momentum=mom, lr=lr, dampening=0.0, nesterov=False,
                                maximize=False)
            return
        steps = [torch.tensor(float(step - 1)) for _ in ps]
        fn = _adamw if self.kind == "adamw" else _adam
        fn(ps, gs, bufs["exp_avg"], bufs["exp_avg_sq"], [], steps, foreach=False, fused=False, amsgrad=False,
           beta1=b1, beta2=b2, lr=lr, weight_decay=wd, eps=EPS, maximize=False)

    def keep(self, idx: torch.Tensor) -> None:
        """Keep only the members `idx` (the others left the ensemble)."""
        pick = lambda xs: [xs[i] for i in idx.tolist()]  # noqa: E731
        self.beta1, self.beta2, self.momentum, self.steps = (pick(self.beta1), pick(self.beta2), pick(self.momentum),
                                                             pick(self.steps))
        self.state = {n: [vector_storage(b[idx.to(b.device)]) for b in bufs] for n, bufs in self.state.items()}

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
        steps = [float(v) for key, v in tensors.items() if key.startswith("opt.") and key.endswith("step")]
        self.steps[k] = int(steps[0]) if steps else 0
        for name, bufs in self.state.items():
            for i, b in enumerate(bufs):
                saved = tensors.get(f"opt.{i}.{name}")  # absent: SGD saved before its first momentum step
                b[k].copy_(saved if saved is not None else torch.zeros_like(b[k]))
