"""Sequence probes: induction scores on planted circuits (and against TransformerLens' head detector), phase
changes on synthetic curves with known change points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp import sequence as sq
from tests.interp import planted_induction as pi
from training.config import ModelConfig
from training.models.transformer import Transformer


@pytest.fixture(scope="module")
def batch() -> sq.RepeatBatch:
    return sq.batch_for({"bos": 0}, pi.V, pi.N, n_batch=16, seed=3)


def scores_of(model, batch) -> dict[str, np.ndarray]:
    return sq.induction_scores(model, batch)


# --- the repeated sequences ----------------------------------------------------------------------------------


def test_batch_is_bos_then_two_copies_of_distinct_content_tokens(batch):
    t = batch.tokens
    assert t.shape == (16, pi.N) and batch.half_len == (pi.N - 1) // 2 and batch.first == 1
    assert (t[:, 0] == 0).all() and (t[:, 1:] >= 1).all() and (t[:, 1:] < pi.V).all()
    R = t[:, 1: 1 + batch.half_len]
    assert torch.equal(R, t[:, 1 + batch.half_len:])
    assert all(len(set(r.tolist())) == batch.half_len for r in R)
    assert torch.equal(sq.batch_for({"bos": 0}, pi.V, pi.N, n_batch=16, seed=3).tokens, t)  # seeded
    assert not torch.equal(sq.batch_for({"bos": 0}, pi.V, pi.N, n_batch=16, seed=4).tokens, t)
    # the stripe's keys hold the token after the query's earlier occurrence
    q, k = batch.stripe_q, batch.stripe_k
    assert torch.equal(t[:, k - 1], t[:, q])


def test_batch_for_a_task_without_bos_or_with_bos_at_the_top():
    b = sq.batch_for({"bos": None}, 12, 18, n_batch=2, seed=0)
    assert b.tokens.shape == (2, 18) and b.first == 0 and int(b.tokens.max()) < 12
    top = sq.batch_for({"bos": 10}, 12, 13, n_batch=2, seed=0)  # max_element: START = n_values
    assert (top.tokens[:, 0] == 10).all() and int(top.tokens[:, 1:].max()) < 10
    with pytest.raises(ValueError):
        sq.batch_for({"bos": 0}, 12, 13, half_len=7)
    # the repeat task: R as long as the task's copies lie apart, which fits in the context
    assert sq.batch_for({"bos": 0, "repeat_interval": 28}, 128, 85, n_batch=1).tokens.shape == (1, 57)
    assert sq.batch_for({"bos": 0, "repeat_interval": 50}, 128, 85, n_batch=1).half_len == 42


# --- planted circuits -----------------------------------------------------------------------------------------


def test_planted_induction_circuit_scores_as_induction_on_every_measure(batch):
    s = scores_of(pi.induction_model(), batch)
    most = batch.repeated.float().mean().item()  # the share of rows that can match: detect_head's ceiling
    assert s["prefix_matching"][1, 0] > 0.95
    assert s["stripe"][1, 0] > 0.95
    assert s["induction_detect"][1, 0] > 0.95 * most
    assert s["copying"][1, 0] > 0.95 and s["copying_eigen"][1, 0] > 0.95
    assert s["previous_token"][0, 0] > 0.9 * (pi.N - 1) / pi.N  # row 0 has no previous token
    for name in ("prefix_matching", "stripe"):
        others = np.delete(s[name].ravel(), 2)  # every head but L1H0
        assert others.max() < 0.3, name
    onset = sq.induction_onset_steps([100], s["prefix_matching"][None], 0.5)
    assert onset == [[None, None], [100, None]]


def test_planted_induction_circuit_predicts_the_repeated_tokens(batch):
    model = pi.induction_model()
    with torch.no_grad():
        logits = model(batch.tokens)
    q = batch.stripe_q[:-1]  # every later-copy position but the last predicts the next token of R
    assert torch.equal(logits[:, q].argmax(-1), batch.tokens[:, q + 1])
    first_copy = torch.arange(batch.first, batch.first + batch.half_len - 1)
    hits = (logits[:, first_copy].argmax(-1) == batch.tokens[:, first_copy + 1]).float().mean()
    assert hits < 0.5  # nothing to copy from in the first copy


def test_uniform_attention_is_no_induction_head_even_when_it_copies(batch):
    s = scores_of(pi.uniform_model(), batch)
    assert s["copying"][1, 0] > 0.95  # its OV circuit copies ...
    for name in ("prefix_matching", "stripe", "previous_token"):
        assert s[name].max() < 0.25, name  # ... but it attends to nothing in particular
    most = batch.repeated.float().mean().item()
    assert s["induction_detect"].max() < 0.25 * most


def test_previous_token_head_alone_is_previous_token_but_not_induction(batch):
    s = scores_of(pi.previous_token_model(), batch)
    assert s["previous_token"][0, 0] > 0.9 * (pi.N - 1) / pi.N
    assert s["previous_token"][1].max() < 0.25 and s["previous_token"][0, 1] < 0.25
    for name in ("prefix_matching", "stripe"):
        assert s[name].max() < 0.25, name
    assert s["copying"].max() < 0.05  # its OV writes PREV, which W_U does not read


def test_suppressing_ov_circuit_scores_negative_copying(batch):
    s = scores_of(pi.induction_model(sign=-1.0), batch)
    assert s["prefix_matching"][1, 0] > 0.95  # attention unchanged
    assert s["copying"][1, 0] < 0.1 and s["copying_eigen"][1, 0] < -0.95


# --- against TransformerLens' head detector and the definitions written out -----------------------------------


def random_model(seed: int = 0) -> Transformer:
    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=3, d_head=8, d_mlp=4)
    model = Transformer(cfg, pi.V, pi.V, pi.N)
    model.init_weights(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # sharper attention than at initialisation
    return model.eval()


def test_detect_scores_equal_transformer_lens_head_detector(batch):
    from transformer_lens.head_detector import (compute_head_attention_similarity_score,
                                                get_induction_head_detection_pattern,
                                                get_previous_token_head_detection_pattern)

    model = random_model()
    s = scores_of(model, batch)
    patterns = sq.attention_patterns(model, batch.tokens)  # [L, B, H, q, k]
    for name, make in (("induction_detect", get_induction_head_detection_pattern),
                       ("previous_token", get_previous_token_head_detection_pattern)):
        for layer in range(2):
            for head in range(3):
                tl = np.mean([compute_head_attention_similarity_score(
                    patterns[layer, b, head], make(batch.tokens[b: b + 1]), exclude_bos=False,
                    exclude_current_token=False, error_measure="mul") for b in range(len(batch.tokens))])
                assert s[name][layer, head] == pytest.approx(tl, rel=1e-5, abs=1e-7), (name, layer, head)


def test_stripe_and_prefix_matching_follow_their_definitions(batch):
    model = random_model(1)
    s = scores_of(model, batch)
    A = sq.attention_patterns(model, batch.tokens).double()
    t = batch.tokens
    n = batch.half_len
    for layer in range(2):
        for head in range(3):
            stripe, prefix = [], []
            for b in range(len(t)):
                for q in range(t.shape[1]):
                    earlier = [j for j in range(q) if t[b, j] == t[b, q]]
                    if earlier:
                        prefix.append(sum(A[layer, b, head, q, j + 1].item() for j in earlier))
                    if q >= batch.first + n:
                        stripe.append(A[layer, b, head, q, q - (n - 1)].item())
            assert s["stripe"][layer, head] == pytest.approx(np.mean(stripe), rel=1e-6)
            assert s["prefix_matching"][layer, head] == pytest.approx(np.mean(prefix), rel=1e-6)


def test_scores_over_checkpoints_and_onsets():
    batch = sq.batch_for({"bos": 0}, pi.V, pi.N, n_batch=4, seed=0)
    models = [(0, pi.uniform_model()), (10, pi.previous_token_model()), (20, pi.induction_model())]
    steps, scores = sq.scores_over_checkpoints(models, batch)
    assert steps == [0, 10, 20] and scores["prefix_matching"].shape == (3, 2, 2)
    onset = sq.induction_onset_steps(steps, scores["prefix_matching"], 0.5)
    assert onset[1][0] == 20 and onset[0] == [None, None] and onset[1][1] is None
    assert sq.induction_onset_steps(steps, scores["previous_token"], 0.5)[0][0] == 10


def test_score_rise_finds_where_a_head_forms_without_a_threshold():
    steps = np.arange(0, 3001, 50)
    rng = np.random.default_rng(0)
    scores = np.zeros((len(steps), 2, 2))
    scores[:, 1, 0] = 0.05 + 0.2 / (1 + np.exp(-(steps - 1200) / 60)) + rng.normal(0, 0.005, len(steps))
    scores[:, 1, 1] = 0.05 + 0.8 / (1 + np.exp(-(steps - 2000) / 100))
    scores[:, 0, 0] = 0.05 + rng.normal(0, 0.005, len(steps))  # never forms
    scores[:, 0, 1] = 0.9 - 0.8 / (1 + np.exp(-(steps - 500) / 50))  # fades: no rise
    rise = sq.induction_rise_steps(steps, scores)
    assert abs(rise[1][0].step - 1200) <= 50 and abs(rise[1][1].step - 2000) <= 50
    assert rise[1][0].plateau == pytest.approx(0.05, abs=0.02) and rise[1][0].final == pytest.approx(0.25, abs=0.02)
    assert rise[0][0] is None and rise[0][1] is None
    # a threshold misses the weak head that the rise rule still places
    assert sq.induction_onset_steps(steps, scores, 0.4)[1][0] is None


# --- per-target curves and phase changes on synthetic curves --------------------------------------------------


def drop_curve(steps, t0, width, hi=4.8, lo=1.2, noise=0.03, seed=0, transient=True):
    """A loss falling from `hi` to `lo` around t0 (a logistic in log loss, halfway exactly at t0), with
    multiplicative noise and a short initialisation transient above the plateau."""
    rng = np.random.default_rng(seed)
    s = np.asarray(steps, float)
    log = math.log10(lo) + (math.log10(hi) - math.log10(lo)) / (1 + np.exp((s - t0) / width))
    log = log + rng.normal(0, noise, len(s))
    if transient:
        log[:3] += [0.8, 0.4, 0.15]
    return 10**log


@pytest.mark.parametrize("t0,width,seed", [(800, 30, 0), (1500, 80, 1), (300, 10, 2), (2500, 150, 3)])
def test_phase_change_found_at_the_known_step(t0, width, seed):
    steps = np.arange(0, 4001, 20)
    pc = sq.phase_change(steps, drop_curve(steps, t0, width, seed=seed))
    assert pc is not None
    assert abs(pc.step - t0) <= 40 + width / 4
    assert pc.start < pc.step < pc.end
    assert pc.start >= t0 - 6 * width - 60 and pc.end <= t0 + 6 * width + 60
    assert pc.plateau == pytest.approx(4.8, rel=0.15) and pc.final == pytest.approx(1.2, rel=0.15)


def test_phase_change_survives_outliers_and_missing_values():
    steps = np.arange(0, 3001, 10)
    loss = drop_curve(steps, 1200, 40, seed=5)
    loss[[50, 51, 200]] = [50.0, 1e-3, 1e-4]  # isolated spikes on both sides
    loss[[10, 250]] = [math.nan, math.inf]
    pc = sq.phase_change(steps, loss)
    assert abs(pc.step - 1200) <= 50


def test_no_phase_change_when_the_loss_stays_flat_or_rises():
    steps = np.arange(0, 2001, 10)
    rng = np.random.default_rng(0)
    flat = 4.8 * 10 ** rng.normal(0, 0.05, len(steps))
    assert sq.phase_change(steps, flat) is None
    rising = 10 ** np.linspace(0, 1, len(steps))
    assert sq.phase_change(steps, rising) is None
    assert sq.phase_change([0, 10], [1.0, 0.1]) is None  # too few evaluations to tell


def test_grokking_shaped_test_loss_changes_where_it_falls():
    steps = np.arange(0, 20001, 100)
    log = np.where(steps < 2000, np.log10(2.3) + steps / 2000 * (np.log10(8.2) - np.log10(2.3)),
                   np.log10(0.2) + (np.log10(8.2) - np.log10(0.2)) / (1 + np.exp((steps - 11400) / 500)))
    pc = sq.phase_change(steps, 10**log)
    assert abs(pc.step - 11400) <= 300 and pc.final == pytest.approx(0.2, rel=0.2)


def test_per_target_curves_and_one_phase_change_per_digit():
    steps = list(range(0, 3001, 25))
    changes = {"s5": 300, "s4": 500, "s3": 1500, "s2": 1450, "s1": 1000, "s0": 1700}
    curves = {name: drop_curve(steps, t0, 30, hi=2.3, lo=0.01, seed=i) for i, (name, t0) in enumerate(changes.items())}
    rows = []
    for i, step in enumerate(steps):
        row = {"step": step, "train_loss": 1.0, "test_loss": 1.0, "train_acc": 0.5, "test_acc": 0.5}
        if i != 7:  # a row written before per-target metrics existed
            row["test_loss_by_target"] = {n: float(c[i]) for n, c in curves.items()}
            row["train_loss_by_target"] = {n: float(c[i]) * 0.9 for n, c in curves.items()}
            row["test_acc_by_target"] = {n: 0.1 for n in curves}
        rows.append(row)
    tc = sq.per_target_curves(rows)
    assert tc.names == list(changes) and tc.test_loss.shape == (6, len(steps))
    assert math.isnan(tc.test_loss[0, 7]) and np.isnan(tc.train_acc).all()
    assert tc.overall["test_loss"][0] == 1.0
    found = sq.phase_change_steps(tc.steps, tc.test_loss, tc.names)
    for name, t0 in changes.items():
        assert abs(found[name].step - t0) <= 50, name
    assert sq.per_target_curves(rows, names=["s0"]).test_loss.shape == (1, len(steps))
