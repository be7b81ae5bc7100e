"""Issue 13's regularisers and accelerators: weight noise, decay to init, Grokfast (EMA, MA), ⊥Grad, StableMax.
Each: its maths against a hand computation, that it changes training, that an ensemble member matches the same
config alone (rtol 1e-5, as tests/training/test_ensemble.py), resume bit-identity, and bad values exit 2."""

from __future__ import annotations

import math
import signal

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.conftest import tiny_config
from tests.training.bits import round_tripped_member_states
from tests.training.test_cli import call_main
from tests.training.test_ensemble import _alone_and_together, _cli, _rows
from training.ensemble import shape_key
from training.loop import state_step
from training.optim.losses import compute_loss, example_losses, softmax_collapse
from training.optim.optimizer import StackedOptimizer
from training.runs.reader import Run
from training.tasks.build import build_task
from training.trainer import Trainer
from training.optim.transforms.decay_to_init import DecayToInit
from training.optim.transforms.grokfast import GrokfastEMA, GrokfastMA
from training.optim.transforms.perp_grad import PerpGrad
from training.optim.transforms.weight_noise import NOISE_SEED_OFFSET, WeightNoise


def _stack(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# --- the maths on small tensors ------------------------------------------------------------------------------

def test_weight_noise_adds_each_members_seeded_noise_and_restores_the_clean_weights_exactly():
    p = torch.randn(2, 3, 4)
    clean = p.clone()
    t = WeightNoise([0.5, 0.0], batch_seeds=[7, 8])
    t.before_forward([p])
    expected = clean[0] + 0.5 * torch.randn(3, 4, generator=torch.Generator().manual_seed(7 + NOISE_SEED_OFFSET))
    torch.testing.assert_close(p[0], expected)
    assert torch.equal(p[1], clean[1])  # sigma 0: untouched
    t.after_backward([p])
    assert torch.equal(p, clean)
    t.before_forward([p])  # the next step draws fresh noise from the advanced stream
    assert not torch.allclose(p[0], expected)


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_decay_to_init_pulls_towards_the_init_not_zero(kind):
    """With a zero gradient, AdamW's and SGD's update is exactly w - lr wd (w - w0) for the member that has it on,
    w - lr wd w for the one that has it off."""
    w0 = _stack([[1.0, -2.0]], [[1.0, -2.0]])
    params = [w0.clone()]
    t = DecayToInit(params, on=[True, False], decoupled=kind == "adamw")
    params[0].copy_(_stack([[3.0, 0.5]], [[3.0, 0.5]]))  # moved away from the init
    before = params[0].clone()
    opt = StackedOptimizer(kind, params, [0.9] * 2, [0.98] * 2, [0.0] * 2, fused=False)
    lr, wd = [0.1, 0.1], [0.5, 0.5]
    t.set_hyper(lr, wd)
    grads = t.on_grads(params, [torch.zeros_like(params[0])])
    opt.step(params, grads, lr, wd)
    t.on_params(params)
    torch.testing.assert_close(params[0][0], before[0] - 0.05 * (before[0] - w0[0]))
    torch.testing.assert_close(params[0][1], before[1] - 0.05 * before[1])


def test_grokfast_ema_starts_at_the_first_gradient_then_filters():
    g1, g2 = _stack([1.0, 2.0], [0.0, 4.0]), _stack([3.0, -1.0], [2.0, 2.0])
    t = GrokfastEMA([torch.zeros(2, 2, dtype=torch.float64)], alphas=[0.9, 0.5], lambs=[2.0, 1.0])
    (out1,) = t.on_grads([], [g1])
    torch.testing.assert_close(out1, _stack([3.0, 6.0], [0.0, 8.0]))  # h = g1: g1 + lamb g1
    (out2,) = t.on_grads([], [g2])
    h = _stack([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -1], [0.5 * 0 + 0.5 * 2, 0.5 * 4 + 0.5 * 2])
    torch.testing.assert_close(out2, g2 + _stack([2.0], [1.0]) * h)


def test_grokfast_ma_adds_the_window_mean_once_the_window_is_full():
    g = [_stack([1.0], [2.0]), _stack([3.0], [4.0]), _stack([5.0], [-6.0])]
    t = GrokfastMA([torch.zeros(2, 1, dtype=torch.float64)], window=2, lambs=[2.0, 0.5])
    outs = [t.on_grads([], [x])[0] for x in g]
    torch.testing.assert_close(outs[0], g[0])  # warmup: one gradient of a window of 2
    torch.testing.assert_close(outs[1], _stack([3.0 + 2.0 * 2.0], [4.0 + 0.5 * 3.0]))
    torch.testing.assert_close(outs[2], _stack([5.0 + 2.0 * 4.0], [-6.0 + 0.5 * -1.0]))


def test_perp_grad_removes_the_component_along_each_tensor_of_each_member():
    w = [_stack([3.0, 4.0], [3.0, 4.0]), _stack([[0.0, 2.0]], [[0.0, 2.0]])]
    g = [_stack([1.0, 1.0], [1.0, 1.0]), _stack([[5.0, 3.0]], [[5.0, 3.0]])]
    out = PerpGrad(on=[True, False]).on_grads(w, g)
    # (1, 1) - 7/25 (3, 4); (5, 3) - 6/4 (0, 2)
    torch.testing.assert_close(out[0][0], torch.tensor([1 - 21 / 25, 1 - 28 / 25], dtype=torch.float64))
    torch.testing.assert_close(out[1][0], torch.tensor([[5.0, 0.0]], dtype=torch.float64))
    assert all(torch.equal(o[1], x[1]) for o, x in zip(out, g))  # off: unchanged
    assert abs(float((out[0][0] * w[0][0]).sum())) < 1e-12


def test_stablemax_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.0], [-3.0, 1.0, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    # s = (3, 1/2, 1) -> 3 / 4.5; s = (1/4, 2, 1.5) -> 1.5 / 3.75
    expected = torch.tensor([-math.log(3 / 4.5), -math.log(1.5 / 3.75)], dtype=torch.float64)
    torch.testing.assert_close(example_losses(logits, labels, "stablemax", True), expected)
    torch.testing.assert_close(compute_loss(logits.float(), labels, "stablemax", True), expected.mean())
    assert example_losses(logits.float(), labels, "stablemax", True).dtype == torch.float64


def test_softmax_collapse_counts_float32_losses_that_are_exactly_zero():
    logits = torch.tensor([[20.0, 0.0], [1.0, 0.0], [0.0, 200.0], [0.0, 200.0]])
    labels = torch.tensor([0, 0, 1, 0])
    assert softmax_collapse(logits, labels) == 0.5  # rows 0 and 2; row 3 is collapsed but wrong: loss 200
    assert F.cross_entropy(logits.double()[:1], labels[:1]).item() > 0  # float64 does not round it to 0


# --- in training ---------------------------------------------------------------------------------------------

METHODS = {"weight-noise": dict(weight_noise=0.05), "decay-to-init": dict(decay_to_init=True),
           "decay-to-init-sgd": dict(decay_to_init=True, optimizer="sgd", lr=0.1, momentum=0.9),
           "grokfast-ema": dict(grokfast="ema"), "grokfast-ma": dict(grokfast="ma", grokfast_window=3),
           "perp-grad": dict(perp_grad=True), "stablemax": dict(loss="stablemax")}


def _train(cfg, steps=8):
    t = Trainer([cfg], [build_task(cfg.task)])
    for _ in range(steps):
        t.step()
    return t


@pytest.mark.parametrize("flat", METHODS.values(), ids=METHODS.keys())
def test_each_method_changes_training(flat):
    off = {k: v for k, v in flat.items() if k in ("optimizer", "lr", "momentum")}
    a, b = _train(tiny_config(**off)), _train(tiny_config(**flat))
    assert not torch.allclose(a.params["unembed.W_U"], b.params["unembed.W_U"], rtol=1e-4, atol=0)


def test_fields_that_vary_per_member_share_an_ensemble_and_the_others_split():
    base = tiny_config()
    same = [base.replace(**f) for f in (dict(weight_noise=0.1), dict(decay_to_init=True), dict(perp_grad=True))]
    assert len({shape_key(c) for c in [base, *same]}) == 1
    ema = base.replace(grokfast="ema")
    assert shape_key(ema) == shape_key(ema.replace(grokfast_alpha=0.5, grokfast_lamb=5.0))
    ma = base.replace(grokfast="ma")
    keys = {shape_key(c) for c in (base, ema, ma, ma.replace(grokfast_window=7), base.replace(loss="stablemax"))}
    assert len(keys) == 5
    assert shape_key(ma.replace(grokfast_lamb=1.0)) == shape_key(ma)


def test_members_with_the_methods_match_their_runs_alone(tmp_path):
    base = tiny_config(steps=30, batch_size=16)
    cfgs = [base.replace(weight_noise=0.05), base.replace(decay_to_init=True, seed=1),
            base.replace(perp_grad=True, weight_noise=0.02, batch_seed=3), base,
            base.replace(grokfast="ema"), base.replace(grokfast="ema", grokfast_alpha=0.8, grokfast_lamb=1.0, seed=2),
            base.replace(grokfast="ma", grokfast_window=4), base.replace(grokfast="ma", grokfast_window=4,
                                                                         grokfast_lamb=0.5, perp_grad=True),
            base.replace(loss="stablemax"), base.replace(loss="stablemax", seed=4, decay_to_init=True)]
    _alone_and_together(tmp_path, cfgs)
    rows = _rows(tmp_path / "alone8")
    assert all(0.0 <= r["softmax_collapse"] <= 1.0 for r in rows)


def test_sgd_decay_to_init_members_match_alone(tmp_path):
    base = tiny_config(steps=30, optimizer="sgd", lr=0.1, momentum=0.9, warmup_steps=0)
    _alone_and_together(tmp_path, [base.replace(decay_to_init=True), base, base.replace(decay_to_init=True, wd=0.1)])


@pytest.mark.parametrize("flat", [dict(weight_noise=0.05, grokfast="ema", perp_grad=True),
                                  dict(grokfast="ma", grokfast_window=5, decay_to_init=True, loss="stablemax")],
                         ids=["noise-ema-perp", "ma-decay-stablemax"])
def test_member_state_with_the_methods_round_trips_bit_identically(flat):
    base = tiny_config(batch_size=16, **flat)
    for (ta, _), (tb, _) in round_tripped_member_states([base, base.replace(seed=3, batch_seed=4, grokfast_lamb=1.0)]):
        assert any(n.startswith("transform.") for n in ta)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[n], tb[n]) for n in ta)


# --- the command line ----------------------------------------------------------------------------------------

TINY = ["--p", "11", "--frac", "0.5", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32",
        "--steps", "20", "--eval-every", "10", "--device", "cpu"]


@pytest.mark.parametrize("args, words", [
    (["--weight-noise", "-0.1"], "--weight-noise"),
    (["--grokfast", "fast"], "--grokfast must be"),
    (["--grokfast", "ema", "--grokfast-alpha", "1"], "--grokfast-alpha"),
    (["--grokfast", "ema", "--grokfast-alpha", "-0.1"], "--grokfast-alpha"),
    (["--grokfast", "ma", "--grokfast-window", "0"], "--grokfast-window"),
    (["--grokfast-lamb", "-1"], "--grokfast-lamb"),
    (["--loss", "softmax2"], "--loss"),
    (["--decay-to-init", "maybe"], "--decay-to-init"),
])
def test_bad_values_are_one_line_exit_2(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert call_main(*TINY, "--out", str(out), *args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not out.exists()


def test_stablemax_on_a_task_without_classes_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert call_main("--preset", "parity-blog", "--loss", "stablemax", "--steps", "5", "--out", str(out)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "classification" in lines[0] and not out.exists()


def test_the_methods_train_from_the_cli(tmp_path):
    out = tmp_path / "run"
    assert call_main(*TINY, "--out", str(out), "--weight-noise", "0.01", "--decay-to-init", "true", "--grokfast",
                     "ma", "--grokfast-window", "4", "--perp-grad", "true", "--loss", "stablemax") == 0
    run = Run(out)
    o = run.config.optim
    assert (o.weight_noise, o.decay_to_init, o.grokfast, o.grokfast_window, o.perp_grad, o.loss) == \
        (0.01, True, "ma", 4, True, "stablemax")
    assert [r["step"] for r in run.metrics] == [0, 10, 20] and all("softmax_collapse" in r for r in run.metrics)


RESUMABLE = ["--p", "23", "--frac", "0.5", "--d-model", "32", "--n-heads", "4", "--d-head", "8", "--d-mlp", "64",
             "--steps", "200", "--eval-every", "10", "--device", "cpu", "--lr", "3e-3"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    ["--grokfast", "ema", "--weight-noise", "0.02", "--perp-grad", "true"],
    ["--grokfast", "ma", "--grokfast-window", "20", "--decay-to-init", "true", "--loss", "stablemax",
     "--batch-size", "64", "--seeds", "0-1"],
    ["--grokfast", "ema", "--weight-noise", "0.02", "--decay-to-init", "true", "--batch-size", "64",
     "--seeds", "0-1"],
], ids=["ema-noise-perp-alone", "ma-decay-stablemax-ensemble", "ema-noise-decay-ensemble"])
def test_sigkill_then_resume_with_the_methods_is_bit_identical(tmp_path, extra):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert _cli(*RESUMABLE, *extra, "--out", str(ref)).returncode == 0
    r = _cli(*RESUMABLE, *extra, "--out", str(cut), env={"GROKSCOPE_KILL_AT_STEP": "110"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    dirs = [f"seed={s}" for s in (0, 1)] if "--seeds" in extra else ["."]
    assert all(state_step(cut / d) == 110 and not (cut / d / "summary.json").exists() for d in dirs)
    r = _cli("--resume", str(cut))
    assert r.returncode == 0, r.stderr
    for d in dirs:
        assert _rows(ref / d) == _rows(cut / d)
        wa, wb = (load_file(x / d / "ckpt" / "step_200.safetensors") for x in (ref, cut))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
