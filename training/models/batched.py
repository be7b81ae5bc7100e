"""What forward passes over K models at once are built from: parameters stacked with a leading member dimension
[K, ...], one bmm for K members instead of K small matmuls or a vmap.

A model with positions or tokens to gather writes its one forward with these pieces (`Transformer.batched_forward`,
`MLPModel.batched_forward`): training runs it on K stacked members, and the model's own `forward` runs it on its
parameters as K = 1, with TransformerLens' hook sites. `forward_for(template)` picks that forward, or a generic
`functional_call` for any other model, which trains alone (K = 1).

Inputs are [K, batch, ...] (each member its own examples). Dropout masks come from one `torch.Generator` per
member, drawn member by member exactly as `F.dropout` draws them, so a member of an ensemble sees the masks it
would see alone.

exact=True (the Trainer's "exact" path): every matmul over members is `member_mm`, whose products, forward and
backward, give a member the same bits whatever K is and wherever the member sits (see `aligned_bmm`); the Trainer
pads each member's rows to a multiple of 32, which aligns the attention products as well. In a run by load
(`training.threads`) the sums a second thread would split (a lone member's weight gradients, the softmax
backward) keep one thread's bits (`weight_grad_bmm`, `softmax`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.func import functional_call

from training.threads import by_load


Params = dict[str, torch.Tensor]


class Dropout:
    """Per-member dropout: rates p [K] (python floats) and one generator per member."""

    def __init__(self, rates: list[float], generators: list[torch.Generator]):
        self.rates, self.generators = rates, generators
        self.on = any(p > 0 for p in rates)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, ...]: member k's slice times its own mask; F.dropout's maths (bernoulli(1-p) / (1-p))."""
        if not self.on:
            return x
        masks = []
        for p, g, xk in zip(self.rates, self.generators, x):
            if p > 0:
                mask = torch.empty(xk.shape, dtype=xk.dtype, device=g.device).bernoulli_(1 - p, generator=g)
                masks.append(mask.div_(1 - p).to(xk.device))  # a CPU generator's masks, moved (CUDA)
            else:
                masks.append(torch.ones_like(xk))
        return x * torch.stack(masks)


def no_dropout(x: torch.Tensor) -> torch.Tensor:
    return x


ALIGN = 16  # float32 elements in 64 bytes
LN_EPS = 1e-5


def aligned_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.bmm, each member's output block starting on a 64-byte boundary. MKL rounds a block by where it starts
    (another kernel for an unaligned one: measured, a member's product then differs with its place in the batch),
    and a one-row or one-column product of a lone member goes to a matrix-vector kernel. So b gets zero columns up
    to the fewest (at least 2) that align every block, a gets a second row if it has one, and the product is cut
    back: the same shapes, so the same kernels, for a member alone or anywhere in any batch."""
    if a.shape[1] == 1:
        return aligned_bmm(F.pad(a, (0, 0, 0, 1)), b)[:, :1]
    m, n = a.shape[1], b.shape[2]
    step = ALIGN // math.gcd(m, ALIGN)
    wide = -(-max(n, 2) // step) * step
    return torch.bmm(a, b) if wide == n else torch.bmm(a, F.pad(b, (0, wide - n)))[..., :n]


@contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread for the block when the run trains by load (`training.threads`): a run by load has the bits
    of one thread at every count, and a few kernels split a sum between threads. Measured on an Intel Xeon (AVX-512),
    a step at two threads against one, op by op: MKL splits a weight gradient's sum over the batch rows (all four of
    nanda2023's; none of its other products), and torch's softmax backward rounds otherwise over long rows
    (digits5, repeat-infinite). A run at a count chosen by the user keeps that count's bits, as it always has."""
    threads = torch.get_num_threads()
    if threads == 1 or not by_load():
        yield
        return
    torch.set_num_threads(1)  # a fraction of a microsecond each way
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_SPLIT_KEEPS_BITS: dict[tuple, bool] = {}  # (shapes, strides, threads, dtype) -> the split gave one thread's bits


def weight_grad_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`aligned_bmm` of a weight gradient, a [K, k, m] @ b [K, m, n]: a sum over the m batch rows, which MKL splits
    between threads for a lone member. By load (`_one_thread`) a lone member's gradient is cut into one block of
    rows per thread, a batch of products MKL gives a thread each (as fast as MKL's own split: 2.2 ms against 4.6 at
    one thread for nanda2023's largest, on the Intel Xeon); the first product of each shape and stride is also
    taken on one thread, and the split kept only if it gave the same bits (a gradient of ones broadcast from a
    scalar did not). An ensemble of at least one member per thread is such a batch already; the rest take one
    thread."""
    threads, (K, k, m) = torch.get_num_threads(), a.shape
    if threads == 1 or not by_load() or K >= threads:
        return aligned_bmm(a, b)
    key = (a.shape, a.stride(), b.shape, b.stride(), threads, a.dtype)  # a kernel is picked by shape and stride
    if K == 1 and k % threads == 0 and k // threads > 1 and _SPLIT_KEEPS_BITS.get(key, True):
        split = aligned_bmm(a.reshape(threads, k // threads, m), b.expand(threads, m, b.shape[2])).reshape(1, k, -1)
        if key in _SPLIT_KEEPS_BITS:
            return split
        with _one_thread():
            one = aligned_bmm(a, b)
        _SPLIT_KEEPS_BITS[key] = torch.equal(split, one)
        return one
    with _one_thread():
        return aligned_bmm(a, b)


class _MemberMM(torch.autograd.Function):
    """bias [K, 1, n] (or None) + a [K, m, k] @ b [K, k, n] with its gradients, every product through `aligned_bmm`
    (the bias added inside the product by baddbmm, as torch's own path does), the weight gradient by `weight_grad_bmm`.
    The bias' gradient is the output's, which autograd sums over the rows as it does for baddbmm."""

    @staticmethod
    def forward(ctx, bias: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return aligned_bmm(a, b) if bias is None else torch.baddbmm(bias, a, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        a, b = ctx.saved_tensors
        ga = aligned_bmm(g, b.transpose(1, 2)) if ctx.needs_input_grad[1] else None
        gb = weight_grad_bmm(a.transpose(1, 2), g) if ctx.needs_input_grad[2] else None
        return (g if ctx.needs_input_grad[0] else None), ga, gb


def member_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _MemberMM.apply(None, a, b)


def _native(m: int, k: int, n: int) -> bool:
    """Whether torch's own bmm and its backward are already exact for a [K, m, k] @ [K, k, n] product: every
    member block of the product and of both gradients aligned, none of them one row or one column wide."""
    return min(m, k, n) > 1 and (m * n) % ALIGN == 0 and (m * k) % ALIGN == 0 and (k * n) % ALIGN == 0


class _Softmax(torch.autograd.Function):
    """torch.softmax with torch's own backward (SoftmaxBackward0's `_softmax_backward_data`), on one thread by load
    (`_one_thread`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int) -> torch.Tensor:
        y = torch.softmax(x, dim)
        ctx.save_for_backward(y)
        ctx.dim, ctx.dtype = dim, x.dtype
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (y,) = ctx.saved_tensors
        with _one_thread():
            return torch._softmax_backward_data(g, y, ctx.dim, ctx.dtype), None


def softmax(x: torch.Tensor, dim: int, exact: bool = False) -> torch.Tensor:
    """torch.softmax over `dim`; on the exact path its backward is on one thread by load."""
    return _Softmax.apply(x, dim) if exact else torch.softmax(x, dim)


def gather_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table [N, d] at the rows idx [...]: [..., d]. table[idx] with index_select's row copies (several times
    faster than advanced indexing here); its backward adds the rows in the same order, so the bits are the same."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[-1])


def mm(x: torch.Tensor, w: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """x [K, ..., a] @ w [K, a, b] as one bmm over the flattened middle dimensions."""
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    return (member_mm if exact else torch.bmm)(x3, w).view(*x.shape[:-1], w.shape[-1])


def affine(b: torch.Tensor, x: torch.Tensor, w: torch.Tensor, exact: bool) -> torch.Tensor:
    """b [K, n] + x [K, m, a] @ w [K, a, n] (the bias added inside the product where torch's bmm is exact)."""
    if not exact:
        return torch.baddbmm(b.unsqueeze(1), x, w)
    if _native(x.shape[1], *w.shape[1:]):
        return _MemberMM.apply(b.unsqueeze(1), x, w)
    return member_mm(x, w) + b.unsqueeze(1)


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, site: Callable | None = None) -> torch.Tensor:
    """LayerNorm over the last dimension, gain w and bias b already shaped to broadcast against x. With `site`
    (a hooked run), step by step, so that TransformerLens' hook_scale and hook_normalized see its parts: `site(name,
    t)` returns what the hook made of t ("hook_scale" [..., 1], then "hook_normalized", before the gain)."""
    if site is None:
        return F.layer_norm(x, x.shape[-1:], eps=LN_EPS) * w + b
    x = x - x.mean(-1, keepdim=True)
    scale = site("hook_scale", (x.pow(2).mean(-1, keepdim=True) + LN_EPS).sqrt())
    return site("hook_normalized", x / scale) * w + b


def generic_forward(model: torch.nn.Module, call: Callable | None = None) -> Callable:
    """Any module, one member (K = 1): `functional_call` on the module (or `call(params, x, training)`), its own
    dropout (the global generator, swapped with the member's so that the member's stream is the one saved and
    restored)."""
    run = call or (lambda q, x, training: functional_call(model, q, (x,)))

    def forward(p: Params, x: torch.Tensor, dropout=no_dropout) -> torch.Tensor:
        assert x.shape[0] == 1, "a generic model trains alone"
        if model.training != (dropout is not no_dropout):  # train() walks every module: only on a change
            model.train(dropout is not no_dropout)
        if dropout is no_dropout or not dropout.on:
            return run({k: v[0] for k, v in p.items()}, x[0], model.training)[None]
        g = dropout.generators[0]
        get, put = ((torch.get_rng_state, torch.set_rng_state) if x.device.type == "cpu" else
                    (lambda: torch.cuda.get_rng_state(x.device), lambda s: torch.cuda.set_rng_state(s, x.device)))
        saved = get()
        put(g.get_state())
        try:
            out = run({k: v[0] for k, v in p.items()}, x[0], model.training)[None]
            g.set_state(get())
        finally:
            put(saved)
        return out

    return forward


def forward_for(model: torch.nn.Module, exact: bool = False) -> tuple[Callable, bool]:
    """(forward, batched): the model's own forward over stacked members (`model.batched_forward(exact)`, the one
    forward of the MLP and the transformer, which their modules run too), else the generic one (K = 1 only)."""
    own = getattr(model, "batched_forward", None)
    if own is not None:
        return own(exact), True
    return generic_forward(model), False
