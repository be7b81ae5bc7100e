"""The default preset trains bit-identically to the recorded fixture (same code, same machine, one thread).

The fixture is written by `python -m tests.training.make_fixture`; bit-identity is only promised for one torch
build on one CPU kind at one thread count, so elsewhere this test skips and says what differs."""

from __future__ import annotations

import json

import pytest

from tests.training import make_fixture


def _fixture() -> dict:
    return json.loads(make_fixture.FIXTURE.read_text())


def test_default_preset_matches_the_recorded_fixture():
    fixture = _fixture()
    here, there = make_fixture.platform(), fixture["platform"]
    if here != there:
        pytest.skip(f"fixture recorded on {there}, this machine is {here}: bit-identity holds only on the same "
                    "torch build, CPU capability and thread count (rerun python -m tests.training.make_fixture "
                    "to record one here)")
    got = make_fixture.measure()
    assert [r["step"] for r in got["metrics"]] == [r["step"] for r in fixture["metrics"]]
    for mine, theirs in zip(got["metrics"], fixture["metrics"]):
        assert mine == theirs, f"metrics of step {theirs['step']} differ"
    assert got["checkpoints"] == fixture["checkpoints"]


def test_the_fixture_pins_more_than_one_step():
    """A fixture of one evaluation would pin the initialisation only, not the training step."""
    fixture = _fixture()
    steps = [r["step"] for r in fixture["metrics"]]
    assert steps[0] == 0 and steps[-1] == fixture["steps"] and len(steps) >= 3
    assert len(fixture["checkpoints"]) >= 3
    assert fixture["metrics"][0]["train_loss"] != fixture["metrics"][-1]["train_loss"]

