"""The real Fourier basis of Z_n, transforms in it, frequency norms and the Gini coefficient."""

import math

import pytest
import torch

from interp import fourier_basis as fb


@pytest.mark.parametrize("n", [7, 8, 23, 96, 113])
def test_basis_is_orthonormal_and_named(n):
    b = fb.fourier_basis(n)
    assert torch.allclose(b.matrix @ b.matrix.T, torch.eye(n), atol=1e-5)
    assert b.names[0] == "const" and b.names[1] == "cos 1" and b.names[2] == "sin 1" and len(b.names) == n
    assert b.freqs.max() == n // 2 and (b.freqs == 1).sum() == 2
    # row "cos k" really is cos(2 pi k x / n), normalised
    x = torch.arange(n, dtype=torch.float64)
    cos3 = torch.cos(2 * math.pi * 3 * x / n)
    assert torch.allclose(b.matrix[b.names.index("cos 3")].double(), cos3 / cos3.norm(), atol=1e-6)


def test_transforms_invert_and_act_on_the_right_axes():
    x = torch.randn(11, 5, 11)
    X = fb.fourier_transform_2d(x, dims=(0, 2))
    F = fb.fourier_basis(11).matrix
    assert torch.allclose(X, torch.einsum("fa,gb,aib->fig", F, F, x), atol=1e-5)
    assert torch.allclose(torch.einsum("fa,gb,fig->aib", F, F, X), x, atol=1e-5)  # orthonormal: F^T inverts
    norms = fb.frequency_norms(torch.tensor([[3.0, 1.0, 2.0, 0.0, 4.0]]))  # n = 5: const, c1, s1, c2, s2
    assert torch.allclose(norms, torch.tensor([[math.sqrt(5), 4.0]]))


def test_gini_extremes_and_scale_invariance():
    assert fb.gini(torch.ones(10)).item() == pytest.approx(0.0, abs=1e-12)
    one_hot = torch.zeros(10)
    one_hot[3] = 5.0
    assert fb.gini(one_hot).item() == pytest.approx(0.9)  # 1 - 1/N
    x = torch.rand(3, 20)
    assert torch.allclose(fb.gini(x), fb.gini(7 * x))
    assert (fb.gini(x**4) > fb.gini(x)).all()  # more concentrated, higher


@pytest.mark.parametrize("n", [7, 12])
def test_dft_tables_are_the_basis_rows_unnormalised(n):
    cos, sin = fb.dft_tables(n)
    b = fb.fourier_basis(n)
    for k in range(1, n // 2 + 1):
        c = b.matrix[b.names.index(f"cos {k}")].double()
        assert torch.allclose(cos[k - 1] / cos[k - 1].norm(), c, atol=1e-6)
        if 2 * k != n:
            s = b.matrix[b.names.index(f"sin {k}")].double()
            assert torch.allclose(sin[k - 1] / sin[k - 1].norm(), s, atol=1e-6)
        else:  # sin(pi t) vanishes at every integer t
            assert sin[k - 1].abs().max() < 1e-9
