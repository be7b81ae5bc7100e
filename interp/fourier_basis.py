"""The real Fourier basis of Z_n and transforms in it (Nanda et al. 2023, "Progress measures for grokking").

    fourier_basis(n)        orthonormal rows const, cos_1, sin_1, ..., (cos_{n/2} if n is even)
    fourier_transform(_2d)  coefficients along one or two axes
    frequency_norms         per-row norms folded into one norm per frequency
    gini                    how concentrated a set of norms is
    dft_tables              cos/sin tables for the O(n^2) shortcuts of the neuron spectra and logit periodicity
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class FourierBasis:
    """Orthonormal real Fourier basis of Z_n.

    Attributes:
        n: group order.
        matrix: [n, n], row r is basis vector r evaluated at x = 0..n-1 (const, cos_1, sin_1, cos_2, ...).
        names: ["const", "cos 1", "sin 1", ...].
        freqs: [n] long, frequency of each row (0 for const).
    """

    n: int
    matrix: torch.Tensor
    names: tuple[str, ...]
    freqs: torch.Tensor


@lru_cache(maxsize=16)
def fourier_basis(n: int) -> FourierBasis:
    """const/sqrt(n), then sqrt(2/n) cos(2 pi k x/n) and sqrt(2/n) sin(2 pi k x/n) for k = 1..(n-1)//2, and for
    even n the alternating vector (-1)^x / sqrt(n) as "cos n/2"."""
    x = torch.arange(n, dtype=torch.float64)
    rows, names, freqs = [torch.ones(n) / math.sqrt(n)], ["const"], [0]
    for k in range(1, n // 2 + 1):
        w = 2 * math.pi * k / n
        if 2 * k == n:
            rows.append(torch.cos(w * x) / math.sqrt(n))
            names.append(f"cos {k}")
            freqs.append(k)
            continue
        rows += [torch.cos(w * x) * math.sqrt(2 / n), torch.sin(w * x) * math.sqrt(2 / n)]
        names += [f"cos {k}", f"sin {k}"]
        freqs += [k, k]
    return FourierBasis(n, torch.stack(rows).float(), tuple(names), torch.tensor(freqs))


def fourier_transform(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Coefficients of `x` in the Fourier basis along `dim` (x.shape[dim] = n); same shape as x."""
    F = fourier_basis(x.shape[dim]).matrix.to(x.dtype)
    return torch.movedim(torch.tensordot(F, torch.movedim(x, dim, 0), dims=([1], [0])), 0, dim)


def fourier_transform_2d(x: torch.Tensor, dims: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """2-D transform over two axes, e.g. a [p, p, d_mlp] activation table over (a, b)."""
    return fourier_transform(fourier_transform(x, dims[0]), dims[1])


def frequency_norms(component_norms: torch.Tensor) -> torch.Tensor:
    """[..., n] norms per basis row -> [..., n // 2] per frequency, sqrt(|cos_k|^2 + |sin_k|^2)."""
    n = component_norms.shape[-1]
    freqs = fourier_basis(n).freqs.to(component_norms.device)
    out = torch.zeros(*component_norms.shape[:-1], n // 2 + 1, dtype=component_norms.dtype)
    out.index_add_(-1, freqs, component_norms**2)
    return out[..., 1:].sqrt()


def gini(x: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of non-negative values over the last axis (Hurley & Rickard 2009): 0 = all equal,
    -> 1 = all mass on one entry. G = 1 - 2 sum_k (x_(k) / |x|_1) (N - k + 1/2) / N with x sorted ascending."""
    x = x.double().sort(dim=-1).values
    N = x.shape[-1]
    k = torch.arange(1, N + 1, dtype=torch.float64)
    total = x.sum(-1, keepdim=True).clamp_min(1e-300)
    return 1 - 2 * ((x / total) * (N - k + 0.5) / N).sum(-1)


def dft_tables(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(2 pi k t / n), sin(...) for k = 1..n//2 (rows) and t = 0..n-1 (columns)."""
    k = torch.arange(1, n // 2 + 1, dtype=torch.float64)[:, None]
    t = torch.arange(n, dtype=torch.float64)[None]
    return torch.cos(2 * math.pi * k * t / n), torch.sin(2 * math.pi * k * t / n)
