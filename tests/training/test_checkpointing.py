from training.runs.checkpointing import CheckpointPolicy, floor_steps
from training.config import CheckpointConfig


def test_floor_is_log_spaced_on_the_eval_grid():
    f = floor_steps(40_000, 50, 40)
    assert f[0] == 0 and f[-1] == 40_000
    assert all(s % 50 == 0 for s in f[:-1])
    gaps = [b - a for a, b in zip(f, f[1:])]
    assert gaps[-1] > 10 * gaps[1]  # sparse late, dense early


def _metrics(step, acc, loss=1.0):
    return {"step": step, "test_acc": acc, "train_acc": 1.0, "test_loss": loss}


def test_dense_where_test_accuracy_moves_and_within_budget():
    policy = CheckpointPolicy(CheckpointConfig(ckpt_floor=5, ckpt_acc_delta=0.02, ckpt_max=30), 10_000, 10)
    saved = []
    for step in range(0, 10_001, 10):
        acc = 0.01 if step < 5000 else min(1.0, 0.01 + (step - 5000) / 1000)  # a jump from 5000 to 6000
        m = _metrics(step, acc)
        if policy.want(step, m):
            policy.saved(m, 1000)
            saved.append(step)
    in_jump = [s for s in saved if 5000 < s <= 6000]
    assert len(in_jump) >= 15
    assert len(saved) <= 30
    assert set(policy.floor) <= set(saved)  # the budget never eats the floor


def test_disk_budget():
    policy = CheckpointPolicy(CheckpointConfig(ckpt_floor=3, ckpt_max=1000, ckpt_max_mb=1.0, ckpt_acc_delta=0.0), 1000, 10)
    n = 0
    for step in range(0, 1001, 10):
        m = _metrics(step, step / 1000)
        if policy.want(step, m):
            policy.saved(m, 100 * 2**10)  # 100 KiB each -> 10 fit in 1 MiB
            n += 1
    assert n <= 11


def _saved_steps(cfg: CheckpointConfig) -> list[int]:
    policy, saved = CheckpointPolicy(cfg, 1000, 10), []
    for step in range(0, 1001, 10):
        m = _metrics(step, 0.5)
        if policy.want(step, m):
            policy.saved(m, 1000)
            saved.append(step)
    return saved


def test_ckpt_every_adds_regular_checkpoints_outside_the_budget():
    """Metrics that never move: the floor (0, 1000) only; --ckpt-every 100 adds every
    100th step, beyond the budget of 6."""
    still = dict(ckpt_floor=2, ckpt_max=6, ckpt_acc_delta=1.0, ckpt_loss_delta=100.0)
    assert _saved_steps(CheckpointConfig(**still)) == [0, 1000]
    assert _saved_steps(CheckpointConfig(**still, ckpt_every=100)) == list(range(0, 1001, 100))


def test_ckpt_every_trains_regular_checkpoints_and_must_sit_on_the_eval_grid(tmp_path):
    import pytest

    from tests.conftest import run_cli
    from training.config import ConfigError, validate
    from training.runs.reader import Run
    from tests.conftest import tiny_config

    r = run_cli("--p", "11", "--frac", "0.5", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32",
                "--steps", "60", "--eval-every", "10", "--ckpt-floor", "2", "--ckpt-max", "10", "--ckpt-acc-delta", "2",
                "--ckpt-loss-delta", "100", "--ckpt-every", "20", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    run = Run(tmp_path / "run")
    assert {0, 20, 40, 60} <= set(run.checkpoint_steps) and run.checkpoint_steps == run.steps
    assert run.config.ckpt.ckpt_every == 20
    with pytest.raises(ConfigError, match="multiple of --eval-every"):
        validate(tiny_config(ckpt_every=15))
    bad = run_cli("--ckpt-every", "15", "--eval-every", "10", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()
