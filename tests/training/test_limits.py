"""Config checks without torch: hostile numbers, the task's own constraints and the memory estimate."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config
from training.config import ConfigError, parse_value, validate
from training.memory import LIMIT_ENV, estimate, memory_limit, n_params
from training.run import main
from training.registry import task_names, task_shape
from training.tasks.specs import TASK_NAMES, is_prime


@pytest.mark.parametrize("name, text, words", [
    ("steps", "1e400", "finite"), ("steps", "1.5", "integer"), ("steps", str(2**63), "out of range"),
    ("seed", "99999999999999999999999", "out of range"), ("lr", "nan", "finite"), ("lr", "inf", "finite"),
    ("lr", "-inf", "finite"), ("wd", "NaN", "finite"), ("ckpt_max_mb", "nan", "finite"), ("p", "abc", "int"),
    ("p", "", "int"), ("float64_loss", "maybe", "true or false"), ("init_scale", "1e999", "finite"),
])
def test_parse_value_refuses_hostile_numbers(name, text, words):
    with pytest.raises(ConfigError, match=words):
        parse_value(name, text)


def test_parse_value_reads_long_integers_exactly_and_exponents():
    assert parse_value("seed", str(2**62 + 1)) == 2**62 + 1  # a float would round it
    assert parse_value("steps", "1e4") == 10_000 and parse_value("lr", "3e-3") == 0.003


@pytest.mark.parametrize("flat, words", [
    (dict(beta1=1.5), "--beta1"), (dict(beta2=-1.0), "--beta2"), (dict(momentum=-1.0), "--momentum"),
    (dict(momentum=1.0), "--momentum"), (dict(init_scale=float("nan")), "--init-scale"),
    (dict(init_scale=float("inf")), "--init-scale"), (dict(lr=float("nan")), "--lr"), (dict(wd=float("inf")), "--wd"),
    (dict(seed=-1), "--seed"), (dict(split_seed=-1), "--split-seed"), (dict(seed=2**64), "out of range"),
    (dict(ckpt_max_mb=float("nan")), "--ckpt-max-mb"), (dict(ckpt_max_mb=0.0), "--ckpt-max-mb"),
    (dict(p="abc"), "--p: expected int"), (dict(steps=True), "--steps: expected int"),
    (dict(lr="0.1"), "--lr: expected float"), (dict(data_path="a\0b"), "NUL"), (dict(model="cnn"), "--model"),
    (dict(n_bits=0), "--n-bits"), (dict(stop_after_gen=-2), "--stop-after-gen"),
    (dict(task="div", p=2**61 - 2), "not prime"), (dict(task="kadd", k=10**18), "p^k"),
    (dict(task="group_mul", group="S" + "9" * 17), "order"), (dict(task="x**y"), "unknown task"),
    (dict(task="parity", k=50, n_bits=40), "--k"), (dict(frac=0.001), "empty train or test set"),
    (dict(n_layers=10**6), "--n-layers"), (dict(init_scale=1e308), "--init-scale"),
    (dict(task="teacher", model="lstm"), "use --model mlp"), (dict(task="digits", model="mlp", n_train=5000), "1797"), (dict(ckpt_floor=10**15, ckpt_max=10**15), "--ckpt-floor"),
])
def test_validate_refuses_each_class_without_torch(flat, words):
    with pytest.raises(ConfigError, match=words.replace("*", r"\*").replace("^", r"\^")):
        validate(tiny_config(**flat))


def test_miller_rabin_agrees_with_trial_division_and_is_instant_for_64_bit_primes():
    trial = [n for n in range(2000) if n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))]
    assert [n for n in range(2000) if is_prime(n)] == trial
    assert is_prime(2**61 - 1) and not is_prime(2**61 + 1) and not is_prime(3215031751)  # a strong pseudoprime


@pytest.mark.parametrize("flat", [
    dict(), dict(task="div", p=13), dict(task="kadd", p=5, k=3, model="mlp"), dict(task="group_conj", group="D7"),
    dict(task="teacher", model="mlp"), dict(task="digits", model="mlp", n_train=500, n_test=100),
    dict(task="parity", n_bits=12, k=3, n_train=50, n_test=20, model="mlp"), dict(task="x^2+y^2"),
])
def test_task_shape_matches_the_built_task(flat):
    """The torch-free shapes (the memory estimate's input) are those the builders produce."""
    from training.tasks.build import build_task

    assert set(task_names()) == set(TASK_NAMES)
    cfg = tiny_config(**flat)
    s, data = task_shape(cfg.task), build_task(cfg.task)
    assert (s.n, s.n_train, s.d_vocab, s.d_vocab_out, s.d_in) == \
        (len(data.inputs), len(data.train_idx), data.d_vocab, data.d_vocab_out, data.d_in)
    if data.d_vocab:
        assert s.n_ctx == data.n_ctx


@pytest.mark.parametrize("flat", [
    dict(), dict(normalization_type="LN", n_layers=2), dict(model="mlp"), dict(model="lstm", n_layers=2),
    dict(task="kadd", p=5, k=3, model="mlp"), dict(task="parity", n_bits=10, k=2, model="mlp"),
    dict(task="teacher", model="mlp", n_layers=2),
])
def test_parameter_count_is_exact(flat):
    from training.models.build import build_model
    from training.tasks.build import build_task

    cfg = tiny_config(**flat)
    model = build_model(cfg.model, build_task(cfg.task))
    assert n_params(cfg.model, task_shape(cfg.task)) == sum(p.numel() for p in model.parameters())


def test_estimate_covers_the_task_table_and_the_parameters():
    from training.tasks.build import build_task

    cfg = tiny_config(p=101)
    data = build_task(cfg.task)
    parts = estimate(cfg, task_shape(cfg.task))
    table = data.inputs.nbytes + data.labels.nbytes
    assert table <= parts["data"] <= 4 * table
    assert parts["model and optimiser"] >= 4 * 4 * n_params(cfg.model, task_shape(cfg.task))


def test_p_100000_is_refused_with_the_estimate_and_the_limit(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "16G")
    with pytest.raises(ConfigError) as e:
        validate(tiny_config(p=100_000))
    assert "GiB" in str(e.value) and "16 GiB" in str(e.value) and LIMIT_ENV in str(e.value)


def test_the_default_limit_is_a_share_of_physical_memory(monkeypatch):
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    limit, source = memory_limit()
    assert limit is None or (limit > 0 and "physical memory" in source)


@pytest.mark.parametrize("flat", [dict(d_mlp=2**40), dict(d_model=2**34), dict(n_train=2**45, task="parity",
                                                                           model="mlp"),
                                  dict(n_bits=2**40, task="parity", model="mlp")])
def test_huge_sizes_are_refused_before_allocation(monkeypatch, flat):
    monkeypatch.setenv(LIMIT_ENV, "1T")
    with pytest.raises(ConfigError, match="needs about"):
        validate(tiny_config(**flat))


def test_limit_override_and_its_errors(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "1K")
    with pytest.raises(ConfigError, match="limit is 1 KiB"):
        validate(tiny_config())
    monkeypatch.setenv(LIMIT_ENV, "none")
    validate(tiny_config(p=100_000))  # nothing is allocated by validate itself
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(ConfigError, match=LIMIT_ENV):
        validate(tiny_config())


def test_command_line_refuses_a_huge_run_in_one_line_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "16G")
    assert main(["--p", "100000", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs about" in err[0] and "limit is 16 GiB" in err[0]
    assert not (tmp_path / "run").exists()
