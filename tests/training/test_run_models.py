"""Reading models off a run: the nearest checkpoint, (step, model) pairs, weights stacked over checkpoints."""

import pytest
import torch

from tests.conftest import tiny_config
from training.loop import train
from training.errors import RunDirError
from training.runs.reader import Run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "run"
    train(tiny_config(steps=40), path, progress=False)
    return Run(path)


def test_nearest_checkpoint(run):
    steps = run.steps
    a, b = next((a, b) for a, b in zip(steps, steps[1:]) if b - a >= 3)  # the log-spaced floor leaves gaps
    assert run.nearest_step(a) == a and run.nearest_step(a + 1) == a and run.nearest_step(b - 1) == b
    assert run.nearest_step(10**9) == steps[-1] and run.nearest_step(-5) == steps[0]
    model = run.model(b - 1, nearest=True)
    ref = run.weights(b)
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    with pytest.raises(RunDirError, match="no checkpoint at step"):
        run.model(b - 1)


def test_iter_models_and_stacked_weights(run):
    steps = run.steps[::2]
    seen = [(s, {k: v.clone() for k, v in m.state_dict().items()}) for s, m in run.iter_models(steps)]
    assert [s for s, _ in seen] == steps
    stacked = run.stacked_weights(steps)
    for i, (s, state) in enumerate(seen):
        assert all(torch.equal(stacked[k][i], v) for k, v in state.items())
        assert all(torch.equal(stacked[k][i], v) for k, v in run.weights(s).items())
    assert stacked["embed.W_E"].shape == (len(steps), 12, 16)
