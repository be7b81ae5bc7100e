"""Ablations in Fourier space (restricted and excluded loss), the float64 row losses and logit periodicity."""

import math

import pytest
import torch

from interp import fourier_ablations as fa
from interp.grid import GridActivations
from interp.modular import additive_structure, modular_structure
from training.config import TaskConfig
from training.tasks.build import build_task


def test_logit_periodicity_recovers_planted_shares():
    n = 13
    s = additive_structure(n)
    c = torch.arange(n)
    wave = lambda k: torch.cos(2 * math.pi * k * (s.answer[:, None] - c[None]) / n)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(s.grid_size, n, generator=g)
    noise -= noise.mean(1, keepdim=True) + noise.mean(0, keepdim=True) - noise.mean()
    for k in range(1, n // 2 + 1):  # noise orthogonal to every wave, so the shares are known exactly
        noise -= (noise * wave(k)).sum() / wave(k).pow(2).sum() * wave(k)
    logits = 3 * wave(2) + 1 * wave(5) + noise * 0.5 + 7.0  # the offset must not matter
    per = fa.logit_periodicity(logits[None], s)[0]
    total = (3 * wave(2) + wave(5) + 0.5 * noise).pow(2).sum()
    assert per[1].item() == pytest.approx((9 * wave(2).pow(2).sum() / total).item(), rel=1e-4)
    assert per[4].item() == pytest.approx((wave(5).pow(2).sum() / total).item(), rel=1e-4)
    others = [k for k in range(n // 2) if k not in (1, 4)]
    assert per[others].sum() < 1e-6


def test_row_losses_keep_the_losses_below_float32_resolution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, 13, generator=g)
    labels = torch.randint(0, 13, (50,), generator=g)
    logits[1].scatter_(-1, labels[:, None], 40.0)  # a grokked model: losses ~1e-16
    # the reference, all in float64: relative to the label's logit, log1p of the others' sum when the label is the
    # largest (a plain log-softmax rounds 1 + 1e-16 to 1 even in float64), else the ordinary cross-entropy
    x = logits.double()
    rel = x - x.gather(-1, labels.expand(2, -1)[..., None])
    others = rel.exp().scatter(-1, labels.expand(2, -1)[..., None], 0.0).sum(-1)
    plain = torch.nn.functional.cross_entropy(x.transpose(1, 2), labels.expand(2, -1), reduction="none")
    expected = torch.where(rel.max(-1).values <= 0, torch.log1p(others), plain)
    got = fa.row_losses(logits, labels)
    assert got.dtype == torch.float64 and (expected[1] > 0).all() and (expected[1] < 1e-14).all()
    # row_losses forms x - max in float32: at |x - max| ~ 40 that rounds by half an ulp of 40 (1.9e-6), which exp
    # turns into a relative error of 1.9e-6 in each term; 1e-5 allows for that and the float32 sum of 12 terms
    assert torch.allclose(got, expected, rtol=1e-5, atol=0)
    assert (plain[1] == 0).any()  # what the shortcut is for


@pytest.mark.parametrize("freqs", [[2], [1, 4]])
def test_the_linear_shortcut_equals_running_the_readout(freqs):
    """A readout linear in the neurons gives the same restricted and excluded losses through `linear_ablations`
    (from the key components alone) and through the general path that runs the readout on ablated activations;
    the two differ in float32 summation order only."""
    s = modular_structure(build_task(TaskConfig(task="add", p=11, frac=0.5, split_seed=0)))
    g = torch.Generator().manual_seed(1)
    C, d = 2, 6
    acts = torch.randn(C, s.grid_size, d, generator=g).relu()
    W_L = torch.randn(C, s.n, d, generator=g)
    bias = torch.randn(C, 1, s.n, generator=g)
    logits = acts @ W_L.transpose(1, 2) + bias
    linear = GridActivations(acts, logits, W_L, None)
    general = GridActivations(acts, logits, W_L, None, linear=False, resid=torch.zeros(C, s.grid_size, 1),
                              finish=lambda c, a, r: a @ W_L[c].T + bias[c])
    a, b = fa.fourier_ablations(linear, s, freqs), fa.fourier_ablations(general, s, freqs)
    for name in ("train_loss", "test_loss", "restricted_loss", "excluded_loss"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-4), name
    assert not torch.allclose(a.restricted_loss, a.test_loss, rtol=1e-2)  # the ablation did change something


def test_key_directions_are_orthonormal_and_orthogonal_to_the_constant():
    s = additive_structure(12)
    Q = fa.key_directions(s, [1, 6])  # k = 6 = n/2 has no sine
    assert Q.shape == (144, 3)
    assert torch.allclose(Q.T @ Q, torch.eye(3), atol=1e-5)
    assert Q.sum(0).abs().max() < 1e-4
    assert fa.key_directions(s, []).shape == (144, 0)
