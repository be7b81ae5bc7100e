"""The coset probe finds planted coset structure exactly and reports noise as no structure."""

import numpy as np
import pytest

from interp.cosets import (adjusted_rand, coset_partitions, coset_timeline, fit_cosets, group_rows)
from interp.groups import coset_labels, get_group, subgroups
from interp.irreps import char_kernels, logit_irreps, random_shares, row_shares


@pytest.fixture(scope="module")
def S5():
    return get_group("S5")


def planted(G, H, side, rng, d=24, noise=0.3):
    """Rows = a random centre per coset + isotropic noise."""
    labels = coset_labels(G, H, side)
    return rng.normal(size=(labels.max() + 1, d))[labels] + noise * rng.normal(size=(G.order, d))


def conjugate(G, H, g):
    els = np.sort(G.table[G.table[g, H.elements], G.inverse[g]])
    return next(s for s in subgroups(G) if np.array_equal(s.elements, els))


def identified(fit, H, side):
    p = fit.partition
    return fit.structure and p.subgroup is H and (p.side == side or (H.normal and p.side == "both"))


def test_candidates_are_every_left_and_right_coset_partition(S5):
    parts = coset_partitions(S5)
    assert len(parts) == 2 * 154 - 1  # proper nontrivial subgroups, both sides, the normal A5 once
    assert {p.side for p in parts if p.subgroup.normal} == {"both"}


def test_planted_cosets_of_random_subgroups_are_identified_exactly(S5):
    rng = np.random.default_rng(0)
    subs = [s for s in subgroups(S5) if 1 < s.order < 120]
    for H in rng.choice(subs, 6, replace=False):
        H2 = conjugate(S5, H, int(rng.integers(1, 120)))  # a random conjugate
        for sub, side in ((H, "left"), (H2, "left"), (H, "right"), (H2, "right")):
            fit = fit_cosets(planted(S5, sub, side, rng), S5, n_null=19, seed=1)
            assert identified(fit, sub, side), (sub.label(), side, fit.describe())
            assert fit.ari[fit.best] > 0.95 and fit.score[fit.best] > 0.8 and fit.p_value <= 0.05


@pytest.mark.parametrize("order", [2, 10, 24, 60])
def test_small_and_large_subgroups(S5, order):
    rng = np.random.default_rng(order)
    H = next(s for s in subgroups(S5) if s.order == order and not s.normal) if order != 60 else subgroups(S5)[-2]
    for side in ("left", "right"):
        fit = fit_cosets(planted(S5, H, side, rng), S5, n_null=19)
        assert identified(fit, H, side), fit.describe()


def test_exact_coset_means_pick_the_subgroup_not_its_subgroups(S5):
    """Rows constant on cosets of H are also constant on cosets of every K < H; H is the answer."""
    rng = np.random.default_rng(3)
    H = next(s for s in subgroups(S5) if s.order == 20)
    fit = fit_cosets(planted(S5, H, "left", rng, noise=0.0), S5, n_null=19)
    assert identified(fit, H, "left") and fit.score[fit.best] == pytest.approx(1.0)


@pytest.mark.parametrize("d", [4, 32, 128])
def test_noise_is_no_structure(S5, d):
    for seed in range(3):
        fit = fit_cosets(np.random.default_rng(seed).normal(size=(120, d)), S5, n_null=19)
        assert not fit.structure
        assert fit.ari.max() < 0.3 and abs(fit.score).max() < 0.3


def test_other_groups(S5):
    rng = np.random.default_rng(5)
    for name in ("D6", "A4", "S4"):
        G = get_group(name)
        H = next(s for s in subgroups(G) if 1 < s.order < G.order and not s.normal)
        fit = fit_cosets(planted(G, H, "right", rng), G, n_null=19)
        assert identified(fit, H, "right")


def test_adjusted_rand():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand(a, a) == 1.0 and adjusted_rand(a, (a + 1) % 3) == 1.0
    assert adjusted_rand(a, np.array([0, 1, 0, 1, 0, 1])) < 0


def test_timeline_finds_when_structure_appears(S5):
    rng = np.random.default_rng(7)
    H = next(s for s in subgroups(S5) if s.order == 10)
    structured = planted(S5, H, "left", rng)
    Xs = [rng.normal(size=(120, 24)) * (1 - w) + structured * w for w in (0, 0, 0.1, 0.7, 1, 1)]
    steps = [0, 100, 200, 300, 400, 500]
    tl = coset_timeline(np.stack(Xs), steps, S5, n_null=9)
    best = fit_cosets(Xs[-1], S5, n_null=19).best
    assert tl.appears_at(best) in (200, 300) and tl.top_from(best) in (200, 300)
    assert tl.ari[0, best] < 0.3 < 0.9 < tl.ari[-1, best] and tl.score[-1, best] > 0.8


@pytest.mark.parametrize("kind", ["transformer", "mlp", "lstm"])
def test_group_rows_of_each_model_layout(kind):
    from training.config import ModelConfig, TaskConfig
    from training.models.build import build_model
    from training.tasks.build import build_task

    data = build_task(TaskConfig(task="add", p=5, frac=0.5))
    model = build_model(ModelConfig(model=kind, d_model=4, n_heads=1, d_head=4, d_mlp=8), data)
    rows = group_rows(model, 5)
    assert np.allclose(rows["W_U"], model.W_U.detach().numpy().T)
    if kind == "mlp":
        assert set(rows) == {"W_U", "W_E_x", "W_E_y"} and rows["W_E_y"].shape == (5, 4)
        assert np.allclose(rows["W_E_y"], model.W_E[1, :5].detach().numpy())
    else:
        assert set(rows) == {"W_U", "W_E"} and rows["W_E"].shape == (5, 4)  # the '=' token is dropped
        assert np.allclose(rows["W_E"], model.embed_matrix[:5].detach().numpy())


# --- representation view ------------------------------------------------------------------------------------


def gcr_logits(G, weights, noise, rng):
    a, b = (x.ravel() for x in np.meshgrid(np.arange(G.order), np.arange(G.order), indexing="ij"))
    answers = G.table[a, b]
    K = char_kernels(G)
    L = sum(w * K[n][answers] for n, w in weights.items()) + noise * rng.normal(size=(len(answers), G.order))
    return L, answers


def test_gcr_logits_give_their_key_irreps(S5):
    rng = np.random.default_rng(0)
    L, answers = gcr_logits(S5, {"sign": 3.0, "standard": 1.0}, 0.5, rng)
    r = logit_irreps(L, answers, S5)
    assert r.key == ["sign", "standard"]
    # variance: sign 9 per entry, standard 1 (sum_c chi^2 = |G|), noise 0.25
    assert r.key_char_explained == pytest.approx(10 / 10.25, abs=0.01)
    assert r.char_explained[r.names.index("sign")] == pytest.approx(9 / 10.25, abs=0.01)
    assert r.variance_share.sum() == pytest.approx(1.0) and r.restricted_acc == 1.0
    assert r.restricted_loss <= r.loss  # dropping the noise components


def _cosine_with_trace_cube(L, answers, G, rep):
    """Chughtai et al.'s logit trace similarity, written out: the centred logits and tr rho(f(a,b) c^-1) for
    every (pair, c), flattened, and their cosine (the matrices' traces, not the character table)."""
    trace = np.einsum("gii->g", rep.matrices)[G.table[answers[:, None], G.inverse[None, :]]]
    Lc = L - L.mean(1, keepdims=True)
    return (Lc * trace).sum() / np.linalg.norm(Lc) / np.linalg.norm(trace)


def test_chughtai_key_rule_and_logits_explained_beside_ours(S5):
    """A weak 5d_b term and an anti-correlated 6d term: below our 5% rule, above Chughtai et al.'s 0.005
    similarity (5d_b), and in their "percent logits explained" whatever the sign (6d)."""
    from interp.groups import irreps

    rng = np.random.default_rng(3)
    L, answers = gcr_logits(S5, {"sign": 3.0, "standard": 1.0, "5d_b": 0.3, "6d": -0.3}, 0.5, rng)
    r = logit_irreps(L, answers, S5)
    sims = {rep.name: _cosine_with_trace_cube(L, answers, S5, rep) for rep in irreps(S5) if rep.name != "trivial"}
    assert np.allclose([r.char_similarity[r.names.index(n)] for n in sims], list(sims.values()))
    assert r.key == ["sign", "standard"]
    assert r.key_chughtai == [n for n, v in sims.items() if v > 0.005] and "5d_b" in r.key_chughtai
    assert "6d" not in r.key_chughtai and sims["6d"] < -0.005
    assert r.chughtai_logits_explained == pytest.approx(sum(v**2 for v in sims.values()))
    assert r.chughtai_logits_explained > r.key_char_explained + sims["6d"] ** 2 * 0.99
    assert r.label("5d_b") == "5d_b (3,2)"


def test_ablation_removes_an_irreps_component_and_tells_carrying_from_correlating(S5):
    """Sign explains most of the logit variance, but the answer is carried by the standard term alone: removing
    sign costs little, removing standard loses the answer. The removal matches a projection built from the irrep's
    own matrix coefficients."""
    from interp.groups import irreps

    rng = np.random.default_rng(4)
    L, answers = gcr_logits(S5, {"sign": 3.0, "standard": 1.5}, 0.3, rng)
    r = logit_irreps(L, answers, S5)
    assert r.char_explained[r.names.index("sign")] > 0.5
    for rep in irreps(S5):
        B, _ = np.linalg.qr(rep.matrices.reshape(S5.order, -1))  # orthonormal basis of rho's matrix coefficients
        kept = L - (L @ B) @ B.T
        z = kept - kept.max(1, keepdims=True)
        ce = -(z[np.arange(len(z)), answers] - np.log(np.exp(z).sum(1))).mean()
        assert r.ablation_loss[r.names.index(rep.name)] == pytest.approx(ce, rel=1e-9)
    loss = dict(zip(r.names, r.ablation_loss))
    acc = dict(zip(r.names, r.ablation_acc))
    assert loss["trivial"] == pytest.approx(r.loss)  # a constant over c changes no softmax
    assert acc["sign"] == 1.0 and loss["sign"] < 0.5 * loss["standard"]
    assert acc["standard"] < 0.1
    assert r.excluded_loss == pytest.approx(np.log(120), rel=0.05)  # only noise left: near a uniform guess


def test_random_logits_have_no_key_irreps(S5):
    rng = np.random.default_rng(1)
    L = rng.normal(size=(2000, 120))
    r = logit_irreps(L, rng.integers(120, size=2000), S5)
    assert r.key == [] and r.key_char_explained == 0.0
    shares = dict(zip(r.names, r.variance_share))
    for name, expected in random_shares(S5).items():
        assert shares[name] == pytest.approx(expected, abs=0.03)


def test_row_shares_of_irrep_coefficients(S5):
    from interp.groups import irreps

    rep = {r.name: r for r in irreps(S5)}["standard"]
    X = rep.matrices.reshape(120, -1)  # rows: rho(g) flattened -> entirely in the standard component
    shares = row_shares(X, S5)
    assert shares["standard"] == pytest.approx(1.0) and sum(shares.values()) == pytest.approx(1.0)


def test_pcs_scores_what_a_pca_plot_shows(S5):
    """A strong sign split (the two cosets of A5) along one direction, buried under many noise dimensions."""
    rng = np.random.default_rng(2)
    A5 = subgroups(S5)[-2]
    sign = np.where(coset_labels(S5, A5, "left") == 0, 1.0, -1.0)
    X = rng.normal(size=(120, 300))
    X[:, 0] += 3 * sign
    full = fit_cosets(X, S5, n_null=19)
    fit = fit_cosets(X, S5, n_null=19, pcs=2)
    assert identified(fit, A5, "both")
    i = fit.best
    assert full.score[i] < 0.1 < 0.5 < fit.score[i]  # the split is a small share of all variance, most of the plane's
