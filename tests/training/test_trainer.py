"""The Trainer's pieces: the batched forward equals each model's own forward, the stacked optimiser equals
torch.optim per member (float tolerance), and member state round-trips bit-identically."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config
from tests.training.bits import round_tripped_member_states
from training.models.batched import forward_for
from training.models.build import build_model
from training.optim.optimizer import StackedOptimizer, vector_storage
from training.tasks.build import build_task
from training.trainer import Trainer
from training.optim.transforms.base import Transform


@pytest.mark.parametrize("flat", [
    {}, {"normalization_type": "LN"}, {"n_layers": 2}, {"n_layers": 2, "normalization_type": "LN", "act_fn": "gelu"},
    {"model": "mlp", "n_layers": 2}, {"task": "teacher", "n_train": 20, "n_test": 20, "model": "mlp", "act_fn": "tanh"},
], ids=["transformer", "LN", "2-layer", "2-layer-LN-gelu", "mlp-tokens", "mlp-vectors"])
def test_batched_forward_equals_each_models_forward(flat):
    cfg = tiny_config(**flat)
    data = build_task(cfg.task)
    models = [build_model(cfg.model, data, seed=s).eval() for s in range(3)]
    forward, batched = forward_for(models[0])
    assert batched
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n, _ in
              models[0].named_parameters()}
    x = data.inputs[:40]
    out = forward(params, x.expand(3, *x.shape))
    for k, m in enumerate(models):
        torch.testing.assert_close(out[k], m.scored_logits(x).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_stacked_optimizer_matches_torch_optim_per_member(kind):
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 5), (5,)]
    hyper = [dict(lr=1e-2, wd=0.5, beta1=0.9, beta2=0.98, momentum=0.9), dict(lr=3e-3, wd=0.0, beta1=0.8,
                                                                               beta2=0.999, momentum=0.0)]
    params = [torch.randn(2, *s, generator=g) for s in shapes]
    grads = [[torch.randn(2, *s, generator=g) for s in shapes] for _ in range(6)]
    opt = StackedOptimizer(kind, params, [h["beta1"] for h in hyper], [h["beta2"] for h in hyper],
                           [h["momentum"] for h in hyper])
    ref = []
    for k, h in enumerate(hyper):
        ps = [p[k].clone().requires_grad_() for p in params]
        if kind == "sgd":
            o = torch.optim.SGD(ps, lr=h["lr"], weight_decay=h["wd"], momentum=h["momentum"])
        else:
            cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
            o = cls(ps, lr=h["lr"], weight_decay=h["wd"], betas=(h["beta1"], h["beta2"]))
        ref.append((ps, o))
    for step_grads in grads:
        opt.step(params, step_grads, [h["lr"] for h in hyper], [h["wd"] for h in hyper])
        for k, (ps, o) in enumerate(ref):
            for p, gr in zip(ps, step_grads):
                p.grad = gr[k].clone()
            o.step()
    for k, (ps, _) in enumerate(ref):
        for p, q in zip(params, ps):
            torch.testing.assert_close(p[k], q.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind,momentum", [("adamw", 0.0), ("sgd", 0.0), ("sgd", 0.9)])
@pytest.mark.parametrize("padded", [True, False])
def test_an_exact_update_gives_a_member_its_bits_alone_in_any_group(kind, momentum, padded):
    """Members whose lr differs update in groups, each stack's last elements in place (storage padded to whole
    vector steps, as the Trainer makes it) or through copies (plain tensors): a member's bits are its bits alone,
    including tensors smaller than one vector step. Two members of one group would differ if another's update
    leaked into a member's slice."""
    g = torch.Generator().manual_seed(1)
    K, shapes = 5, [(2,), (500,), (7, 11), (3, 16)]
    start = [torch.randn(K, *s, generator=g) for s in shapes]
    grads = [[torch.randn(K, *s, generator=g) for s in shapes] for _ in range(4)]
    lrs = [0.05, 0.1, 0.05, 0.2, 0.1]
    make = vector_storage if padded else torch.clone

    def train(members):
        ps = [make(p[members]) for p in start]
        n = len(members)
        opt = StackedOptimizer(kind, ps, [0.9] * n, [0.98] * n, [momentum] * n, exact=True)
        for step in grads:
            opt.step(ps, [gr[members].contiguous() for gr in step], [lrs[k] for k in members], [0.01] * n)
        return ps

    together = train(list(range(K)))
    for k in range(K):
        alone = train([k])
        assert all(torch.equal(a[0], b[k]) for a, b in zip(alone, together)), k
    assert not torch.equal(train([1])[0][0], together[0][0])  # another member (another lr): other bits


def test_member_state_round_trip_is_bit_identical():
    base = tiny_config(batch_size=16, dropout=0.2, constrain_norm=0.9, wd=0.0)
    for (ta, ca), (tb, cb) in round_tripped_member_states([base, base.replace(seed=3, batch_seed=4, frac=0.3)]):
        assert ta.keys() == tb.keys() and all(torch.equal(ta[n], tb[n]) for n in ta)
        assert ca == cb


@pytest.mark.parametrize("flat", [{"batch_size": 8, "dropout": 0.1}, {"model": "mlp", "dropout": 0.2}])
def test_chunked_members_compute_exactly_what_all_at_once_computes(flat):
    base = tiny_config(**flat)
    cfgs = [base.replace(seed=s, frac=0.3 + 0.05 * s) for s in range(5)]
    data = [build_task(c.task) for c in cfgs]
    a, b = Trainer(cfgs, data, chunk=5), Trainer(cfgs, data, chunk=2)
    for _ in range(6):
        torch.testing.assert_close(a.step(), b.step(), rtol=0, atol=0)
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)


class GradEMA(Transform):
    """A stateful gradient filter (Grokfast-like: g + 2 x EMA(g)), only here to test the transform seam."""

    name = "ema"

    def __init__(self, params):
        self.ema = [torch.zeros_like(p) for p in params]

    def on_grads(self, params, grads):
        for e, g in zip(self.ema, grads):
            e.mul_(0.9).add_(g, alpha=0.1)
        return [g + 2 * e for g, e in zip(grads, self.ema)]

    def member_state(self, k):
        return {f"transform.ema.{i}": e[k] for i, e in enumerate(self.ema)}

    def load_member_state(self, k, tensors):
        for i, e in enumerate(self.ema):
            e[k].copy_(tensors[f"transform.ema.{i}"])

    def keep(self, idx):
        self.ema = [e[idx] for e in self.ema]


def test_a_transform_with_state_changes_training_and_resumes_bit_identically():
    cfgs = [tiny_config(), tiny_config(seed=1)]
    data = [build_task(c.task) for c in cfgs]
    plain, a = Trainer(cfgs, data), Trainer(cfgs, data)
    a.transforms.append(GradEMA(a.plist))
    for _ in range(5):
        plain.step()
        a.step()
    assert not torch.equal(plain.params["unembed.W_U"], a.params["unembed.W_U"])
    b = Trainer(cfgs, data)
    b.transforms.append(GradEMA(b.plist))
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.transforms[0].ema[0], a.transforms[0].ema[0])
    for _ in range(5):
        a.step()
        b.step()
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)
