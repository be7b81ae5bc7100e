"""interp.landscape: rescaling, the slice, the batched fixed-norm (reduced) landscape, w_c, shapes, trajectory."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from interp.landscape import (critical_norm, curve_shape, diagnose, group_names, joint_norm, landscape_slice,
                              norm_trajectory, rescaled)
from interp.landscape import reduced_landscape as read_landscape
from tests.conftest import tiny_config
from training.fixed_norm import train_fixed_norm
from training.config import ModelConfig, OptimConfig, RunConfig, TaskConfig, TrainConfig
from training.loop import evaluate, train
from training.models.build import build_model
from training.runs.reader import Run
from training.tasks.build import build_task

# In a pre-LN transformer every write into the residual stream passes through a LayerNorm before it is read,
# so scaling all the writers together (embeddings, W_O, W_out, b_out) leaves the logits unchanged.
RESIDUAL_WRITERS = [r"^embed\.W_E$", r"^pos_embed\.W_pos$", r"attn\.W_O$", r"mlp\.W_out$", r"mlp\.b_out$"]


def ln_transformer():
    data = build_task(TaskConfig(task="add", p=11, frac=0.5))
    model = build_model(ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32, n_layers=2,
                                    normalization_type="LN"), data, seed=2).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)  # not the global generator: its state depends on the tests before
        for name, p in model.named_parameters():
            if name.endswith("b_out") or ".ln" in name or name.startswith("ln"):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)  # away from their zero / one init
    return model, data


def test_rescaling_a_scale_invariant_group_preserves_predictions():
    model, data = ln_transformer()
    weights = {k: v.detach() for k, v in model.named_parameters()}
    names = group_names(list(weights), RESIDUAL_WRITERS)
    assert len(names) == 2 + 2 * 3  # W_E, W_pos, and per block W_O, W_out, b_out
    ref = model.answer_logits(data.inputs)
    g0 = joint_norm(weights[n] for n in names)
    for norm in (2 * g0, 5 * g0, 50 * g0):  # (below ~1x, LayerNorm's eps starts to show)
        new = rescaled(weights, norm, RESIDUAL_WRITERS)
        assert abs(joint_norm(new[n] for n in names) - norm) < 1e-4 * norm
        with torch.no_grad():
            out = functional_call(model, new, (data.inputs,))[:, -1]
        assert (out - ref).abs().max() < 1e-4 * ref.abs().max()
    sl = landscape_slice(model, data, scales=[2.0, 1.0, 10.0], group=RESIDUAL_WRITERS)
    assert np.allclose(sl.test_loss, sl.test_loss[1], rtol=1e-4) and np.allclose(sl.train_acc, sl.train_acc[1])


def test_rescaling_everything_changes_predictions():
    model, data = ln_transformer()
    sl = landscape_slice(model, data, scales=[0.3, 1.0, 3.0])
    assert np.ptp(sl.test_loss) > 0.1 * sl.test_loss.min()  # the unembedding and LN gains scale the logits
    # a tanh MLP with biases: rescaling changes which class wins, not only the margins
    mlp = build_model(ModelConfig(model="mlp", n_layers=2, d_model=8, d_mlp=32, act_fn="tanh"), data, seed=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)  # not the global generator: its state depends on the tests before
        for name, p in mlp.named_parameters():
            if name.endswith("b_in"):
                p.copy_(torch.randn(p.shape, generator=g))
        w = {k: v.detach() for k, v in mlp.named_parameters()}
        preds = [functional_call(mlp, rescaled(w, s * joint_norm(w.values())), (data.inputs,)).argmax(-1)
                 for s in (0.3, 1.0, 3.0)]
    assert (preds[0] != preds[1]).any() and (preds[2] != preds[1]).any()


def test_homogeneous_relu_mlp_keeps_its_predictions_and_scales_its_logits():
    data = build_task(TaskConfig(task="add", p=11, frac=0.5))
    mlp = build_model(ModelConfig(model="mlp", n_layers=2, d_model=8, d_mlp=32), data, seed=1)  # zero biases
    w = {k: v.detach() for k, v in mlp.named_parameters()}
    n0 = joint_norm(w.values())
    with torch.no_grad():
        ref = mlp(data.inputs)
        out = functional_call(mlp, rescaled(w, 2 * n0), (data.inputs,))
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    assert torch.allclose(out, ref * 2**4, rtol=1e-4, atol=1e-5)  # W_E, two W_in, W_U: degree 4


def test_slice_at_scale_one_matches_the_loops_evaluation():
    cfg = tiny_config()
    data = build_task(cfg.task)
    model = build_model(cfg.model, data, seed=0)
    sl = landscape_slice(model, data, scales=[1.0])
    loss, acc = evaluate(model, data.inputs[data.test_idx], data.labels[data.test_idx], data, True)
    # two evaluations of one float32 model (possibly in different batch shapes), each loss summed in float64:
    # they agree to float32 rounding of the logits, not bit for bit
    assert sl.test_loss[0] == pytest.approx(loss, rel=1e-6) and sl.test_acc[0] == acc
    assert abs(sl.total_norms[0] - sl.base_norm) < 1e-9


def test_group_names():
    names = ["embed.W_E", "blocks.0.mlp.W_in", "unembed.W_U"]
    assert group_names(names, None) == names and group_names(names, "W_U") == ["unembed.W_U"]
    with pytest.raises(ValueError, match="matches no parameter"):
        group_names(names, "nothing")


def teacher_cfg(**flat) -> RunConfig:
    cfg = RunConfig(task=TaskConfig(task="teacher", n_train=10, n_test=50),
                    model=ModelConfig(model="mlp", n_layers=2, d_mlp=32, act_fn="tanh"),
                    optim=OptimConfig(optimizer="adam", lr=1e-2, wd=0.0, warmup_steps=0, float64_loss=False),
                    train=TrainConfig(device="cpu", seed=1))
    return cfg.replace(**flat) if flat else cfg


def reduced_landscape(cfg, **kw):
    return read_landscape(train_fixed_norm(cfg, **kw))


def test_batched_alphas_equal_separate_fixed_norm_runs_of_the_loop(tmp_path):
    cfg = teacher_cfg(lr=3e-3)
    both = reduced_landscape(cfg, alphas=[0.5, 3.0], steps=30, eval_every=10)
    for i, alpha in enumerate([0.5, 3.0]):
        one = reduced_landscape(cfg, alphas=[alpha], steps=30, eval_every=10)
        assert np.allclose(both.test_curves[i], one.test_curves[0], rtol=1e-4)
        # the same thing through the training loop: init scale alpha, norm held at 1x the initial norm
        train(cfg.replace(init_scale=alpha, constrain_norm=1.0, steps=30, eval_every=10), tmp_path / f"r{i}",
              progress=False)
        rows = Run(tmp_path / f"r{i}").metrics
        assert np.allclose([r["test_loss"] for r in rows], both.test_curves[i], rtol=1e-3)
        assert np.allclose([r["weight_norm"] for r in rows], both.norms[i], rtol=1e-6)
    assert np.isclose(both.norms[1] / both.norms[0], 6.0)


def test_teacher_student_reduced_landscape_is_L_for_train_with_an_interior_test_minimum():
    # a tiny student: it fits 10 points to ~1e-9 from alpha ~1 up within 1000 steps (larger alphas need longer)
    res = reduced_landscape(teacher_cfg(), alphas=np.geomspace(0.1, 3, 7), steps=1000, eval_every=20)
    assert curve_shape(res.best_train_loss) == "L"
    i = int(np.argmin(res.best_test_loss))
    assert 0 < i < len(res.alphas) - 1
    assert res.best_test_loss[-1] > 3 * res.best_test_loss[i] and res.best_test_loss[0] > 3 * res.best_test_loss[i]
    d = res.diagnosis()
    assert d["lu"] and d["test_shape"] == "U" and res.norms[0] < d["w_c"] < res.norms[-1]


def test_critical_norm_finds_the_parabolas_vertex():
    w = np.geomspace(0.5, 50, 13)
    loss = 1e-3 * np.exp((np.log(w) - np.log(4.2)) ** 2)
    assert abs(critical_norm(w, loss) - 4.2) < 1e-6
    assert critical_norm(w, np.linspace(1, 0.1, 13)) == w[-1]  # minimum at the edge: the edge
    assert critical_norm(w[::-1], loss[::-1]) == pytest.approx(4.2)  # order does not matter


@pytest.mark.parametrize("y, shape", [([1, 1e-3, 1e-8, 1e-9, 1e-9], "L"), ([1, 1e-2, 1e-3, 0.5, 2], "U"),
                                      ([1, 1, 1.2, 0.9, 1.1], "flat"), ([1e-3, 1e-3, 0.1, 1, 2], "rising"),
                                      ([1, 0.1, 0.02, 0.03, 0.05], "L")])
def test_curve_shape(y, shape):
    assert curve_shape(y) == shape


def test_diagnose_reads_the_LU_picture():
    w = np.geomspace(1, 100, 9)
    d = diagnose(w, [1, 1e-2, 1e-6, 1e-9, 1e-9, 1e-10, 1e-9, 1e-9, 1e-9], [1, 0.1, 0.01, 0.05, 0.3, 1, 3, 5, 9])
    assert d["lu"] and d["train_shape"] == "L" and d["test_shape"] == "U" and "LU mechanism" in d["text"]
    assert w[1] < d["w_c"] < w[4]
    d = diagnose(w, [1, 0.1, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4], [1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
                                                                          0.01])
    assert not d["lu"] and "no U" in d["text"]


def test_norm_trajectory_against_w_c():
    metrics = [{"step": s, "weight_norm": n} for s, n in [(0, 40), (10, 30), (20, 12), (30, 9), (40, 8.5)]]
    t = norm_trajectory(metrics, w_c=10.0)
    assert t["start_ratio"] == 4.0 and t["end_ratio"] == 0.85 and t["step_at_wc"] == 30
    assert norm_trajectory(metrics, w_c=5.0)["step_at_wc"] is None
