"""--constrain-norm: the total parameter norm held at a multiple of its initial value, exactly resumable."""

import pytest
import torch

from tests.conftest import tiny_config
from training.config import ConfigError, validate
from training.loop import set_weight_norm_, train, weight_norm
from training.models.build import build_model
from training.runs.reader import Run
from training.tasks.build import build_task


@pytest.mark.parametrize("flat", [dict(wd=0.0), dict(wd=1.0, optimizer="adam", batch_size=16),
                                  dict(wd=0.0, optimizer="sgd", lr=0.5, momentum=0.9)])
def test_norm_is_held_to_1e_6_relative(tmp_path, flat):
    cfg = tiny_config(constrain_norm=0.8, steps=50, eval_every=5, **flat)
    init = weight_norm(build_model(cfg.model, build_task(cfg.task), seed=cfg.train.seed))
    train(cfg, tmp_path / "r", progress=False)
    run = Run(tmp_path / "r")
    norms = [r["weight_norm"] for r in run.metrics]
    assert len(norms) == 11
    assert max(abs(n / (0.8 * init) - 1) for n in norms) < 1e-6
    for step in run.steps:  # the checkpoints hold it too
        w = run.weights(step)
        assert abs(weight_norm(torch.nn.ParameterList(list(w.values()))) / (0.8 * init) - 1) < 1e-6
    assert run.metrics[-1]["train_loss"] < run.metrics[0]["train_loss"]  # and it still learns


def test_without_the_option_the_norm_moves(tmp_path):
    train(tiny_config(steps=30, eval_every=10, wd=0.0), tmp_path / "r", progress=False)
    norms = [r["weight_norm"] for r in Run(tmp_path / "r").metrics]
    assert abs(norms[-1] / norms[0] - 1) > 1e-3


def test_resumed_fixed_norm_run_is_bit_identical(tmp_path):
    cfg = tiny_config(constrain_norm=1.5, wd=0.0, eval_every=10)
    train(cfg.replace(steps=40), tmp_path / "ref", progress=False)
    train(cfg.replace(steps=20), tmp_path / "cut", progress=False)
    train(cfg.replace(steps=40), tmp_path / "cut", progress=False, resume=True)
    a, b = Run(tmp_path / "ref").weights(40), Run(tmp_path / "cut").weights(40)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_set_weight_norm_and_validation():
    params = [torch.randn(3, 4), torch.randn(5)]
    set_weight_norm_(params, 2.5)
    assert abs(torch.cat([p.flatten() for p in params]).norm().item() - 2.5) < 1e-5
    with pytest.raises(ConfigError, match="--constrain-norm"):
        validate(tiny_config(constrain_norm=-1.0))
