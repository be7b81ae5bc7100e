"""Training by load (training.threads): the governor picks the faster thread count from step times, the bit check
holds where both counts give the same bits and fails where they do not, and a run trained by load is, bit for bit,
the run at one thread, through a kill -9 and a resume, whatever the check found on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.training.bits import assert_same_bits
from training import threads
from training.runs.reader import Run
from training.threads import Governor, same_bits

# --- the governor, on made-up step times ------------------------------------------------------------------------


def drive(gov: Governor, ms: dict[int, float], steps: int, first: dict[int, list[float]] | None = None) -> list[int]:
    """Step `gov` `steps` times, each step taking ms[count], or first[count][i] for the i-th step right after a
    switch to that count (threads that slept take steps to wake); returns the count of every step."""
    seen, since = [], 0
    for _ in range(steps):
        n = gov.next()
        since = since + 1 if seen and seen[-1] == n else 0
        wake = (first or {}).get(n, [])
        gov.timed((wake[since] if since < len(wake) else ms[n]) / 1e3)
        seen.append(n)
    return seen


def test_idle_the_governor_steps_at_the_faster_full_count_and_probes_under_two_percent_of_a_long_run():
    calls = []
    gov = Governor(2, calls.append)
    seen = drive(gov, {2: 4.8, 1: 7.3}, 5000)
    assert gov.choice == 2 and seen[-1] == 2
    assert seen.count(1) / len(seen) < 0.02
    assert gov.steps == {2: seen.count(2), 1: seen.count(1)}
    assert calls[:2] == [1, 2]  # one thread first, then the probe of two, which it keeps


def test_beside_a_busy_neighbour_the_governor_keeps_one_thread_and_a_probe_costs_one_step():
    """The fixture where the full count must lose: spinning threads under contention."""
    gov = Governor(2, lambda n: None)
    seen = drive(gov, {2: 19.0, 1: 8.0}, 2000)
    assert gov.choice == 1 and seen.count(2) / len(seen) < 0.03
    later = "".join(map(str, seen[seen.index(1):])).split("1")
    assert {len(run) for run in later if run} == {1}  # the warm-up step is 2.4x one thread's: back at once
    gov = Governor(2, lambda n: None)
    seen = drive(gov, {2: 12.0, 1: 8.0}, 2000)  # 1.5x: past the warm-up step, stopped at the first timed one
    later = "".join(map(str, seen[seen.index(1):])).split("1")
    assert gov.choice == 1 and {len(run) for run in later if run} == {2}


def test_the_slow_steps_of_threads_waking_up_do_not_decide_the_probe():
    """Measured for the default preset: 12, 9, then 5 ms at two threads after steps at one."""
    gov = Governor(2, lambda n: None)
    drive(gov, {2: 19.0, 1: 8.0}, 200)  # busy: one thread held
    assert gov.choice == 1
    drive(gov, {2: 4.8, 1: 7.3}, 2000, first={2: [12.0, 9.0]})  # idle again: back to two, whose threads slept
    assert gov.choice == 2


def test_a_stall_every_few_steps_counts_against_its_count():
    """Two threads beside a busy neighbour: 0.4 ms steps with a 4.5 ms stall every 9th (mean 0.86 ms), against
    0.45 ms at one thread (parity-blog, measured)."""
    gov = Governor(2, lambda n: None)
    seen, t = [], 0
    for _ in range(3000):
        n = gov.next()
        t += 1
        gov.timed((0.45 if n == 1 else 4.5 if t % 9 == 0 else 0.4) / 1e3)
        seen.append(n)
    assert gov.choice == 1 and seen[-500:].count(2) / 500 < 0.2


def test_when_the_load_changes_the_governor_probes_again_at_once_and_follows_it():
    gov = Governor(2, lambda n: None)
    drive(gov, {2: 4.8, 1: 7.3}, 5000)  # long idle: the hold has grown to its maximum
    assert gov.choice == 2 and gov.factor == Governor.MAX_HOLD
    seen = drive(gov, {2: 19.0, 1: 8.0}, 20)  # a neighbour starts: three slow steps, then a probe
    assert gov.choice == 1 and seen[-1] == 1
    assert seen.index(1) <= 3
    drive(gov, {2: 4.8, 1: 7.3}, 500)  # it leaves: the next probe (the hold short again) goes back
    assert gov.choice == 2


# --- the bit check -----------------------------------------------------------------------------------------------


class FakeTrainer:
    """What same_bits reads of a Trainer: backward() (its losses), grads, apply(), plist, evaluate(). With
    `rounding` the gradient's last bits depend on the thread count; with `adam` the update hides them, as Adam's
    first step (+-lr whatever the gradient) does."""

    def __init__(self, rounding: bool, adam: bool = False):
        self.plist, self.grads = [torch.ones(3)], None
        self.rounding, self.adam = rounding, adam

    def backward(self):
        self.grads = [torch.full((3,), 0.5 + (1e-7 * torch.get_num_threads() if self.rounding else 0.0))]
        return torch.zeros(1)

    def apply(self):
        step = torch.sign(self.grads[0]) if self.adam else self.grads[0]
        self.plist = [self.plist[0] - 1e-3 * step]

    def evaluate(self):
        return [{"train_loss": 0.5}]


def test_the_bit_check_holds_when_both_counts_give_the_same_bits_and_fails_when_they_do_not():
    before = torch.get_num_threads()
    assert same_bits(lambda: FakeTrainer(rounding=False), 2)
    assert not same_bits(lambda: FakeTrainer(rounding=True), 2)
    assert torch.get_num_threads() == before


def test_the_bit_check_sees_a_gradient_that_adam_s_first_update_hides():
    assert not same_bits(lambda: FakeTrainer(rounding=True, adam=True), 2)


def test_the_bit_check_sees_a_metric_that_differs():
    class Metric(FakeTrainer):
        def evaluate(self):
            return [{"train_loss": 0.5 + 1e-12 * torch.get_num_threads()}]

    assert not same_bits(lambda: Metric(rounding=False), 2)


def test_the_bit_check_on_a_real_trainer_agrees_with_a_run_of_its_first_ten_steps():
    """The check against what it stands for: where it says "same", ten steps at each count give the same weights
    (checked on omnigrok-teacher, whose gradient differs at two threads here, and on a tiny transformer)."""
    from training.models.base import plain_models
    from training.presets import get_preset
    from training.tasks.build import build_task
    from training.trainer import Trainer
    from tests.conftest import tiny_config

    before = torch.get_num_threads()
    for cfg in (get_preset("omnigrok-teacher"), tiny_config()):
        data = build_task(cfg.task)
        with plain_models():
            make = lambda: Trainer([cfg], [data], "cpu")  # noqa: E731
            verdict = same_bits(make, 2)
            weights = []
            for n in (1, 2):
                torch.set_num_threads(n)
                trainer = make()
                for _ in range(10):
                    trainer.step()
                weights.append([p.detach().clone() for p in trainer.plist])
        torch.set_num_threads(before)
        if verdict:
            assert all(torch.equal(x, y) for x, y in zip(*weights)), cfg.model.model


# --- runs by load: the bits of one thread ------------------------------------------------------------------------


class Alternate(Governor):
    """A governor that switches every step: the hardest schedule for the bits."""

    def next(self) -> int:
        n = self.counts[0] if sum(self.steps.values()) % 2 else 1
        if n != self.current:
            self.set_threads(n)
            self.current = n
        return n

    def timed(self, seconds: float) -> None:
        self.steps[self.current] += 1


@pytest.mark.parametrize("model", ["transformer", "mlp"])
def test_a_run_switching_threads_every_step_has_the_bits_of_one_thread(tmp_path, monkeypatch, model):
    from tests.conftest import tiny_config
    from training import numerics
    from training.loop import train

    cfg = tiny_config(model=model, steps=80, eval_every=10, ckpt_floor=5)
    train(cfg, tmp_path / "one", progress=False)
    monkeypatch.setattr(threads, "_by_load", 2)
    monkeypatch.setattr(numerics, "Governor", Alternate)
    before = torch.get_num_threads()
    try:
        summary = train(cfg, tmp_path / "alt", progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(before)
    assert_same_bits(tmp_path / "one", tmp_path / "alt")
    if "steps_by_threads" in summary:  # the check found the counts the same here: half the steps were at two
        assert summary["steps_by_threads"] == {"1": 40, "2": 40}

TINY = ["--p", "11", "--frac", "0.5", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32",
        "--lr", "3e-3", "--steps", "120", "--eval-every", "10", "--device", "cpu"]
# training.run with training.numerics' bit check forced to find a difference (the machine where the counts differ)
DIFFERENT = """
import sys
import training.threads
training.threads.same_bits = lambda make, most: False
from training.run import main
sys.exit(main(sys.argv[1:]))
"""

needs_cores = pytest.mark.skipif(threads.cores() < 2, reason="training by load needs two cores")


def cli(*args: str, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """training.run as a user runs it, without OMP_NUM_THREADS (so the run chooses: by load)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "training.run"]
    return subprocess.run([*cmd, "--no-progress", *args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=600)


def numerics(run_dir) -> dict:
    return json.loads((run_dir / "config.json").read_text())["numerics"]


@needs_cores
def test_a_run_by_load_is_the_run_at_one_thread_through_kill_9_and_resume(tmp_path):
    one, load = tmp_path / "one", tmp_path / "load"
    # 300 steps after the kill: the governor's first hold (>= 20 ms at one thread) ends within them even at a tenth
    # of this machine's ~1 ms a step, so steps are taken at both counts
    r = cli(*TINY, "--steps", "400", "--threads", "1", "--out", str(one))
    assert r.returncode == 0, r.stderr
    r = cli(*TINY, "--steps", "400", "--out", str(load), env={"GROKSCOPE_KILL_AT_STEP": "100"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = cli("--resume", str(load))
    assert r.returncode == 0, r.stderr
    assert_same_bits(one, load)
    rec = numerics(load)
    assert rec["threads"] == 1
    if "threads_by_load" in rec:  # this machine's kernels gave the same bits at both counts: both were used
        assert rec["threads_by_load"] == threads.cores()
        steps = Run(load).summary["steps_by_threads"]
        assert set(steps) == {"1", str(threads.cores())} and all(v > 0 for v in steps.values())
        assert sum(steps.values()) == 300  # the steps after the resume
    else:  # they differed: one thread, said so
        assert "round differently" in r.stdout


@needs_cores
def test_where_the_counts_round_differently_the_run_trains_on_one_thread_and_says_so(tmp_path):
    one, diff = tmp_path / "one", tmp_path / "diff"
    assert cli(*TINY, "--threads", "1", "--out", str(one)).returncode == 0
    r = cli(*TINY, "--out", str(diff), code=DIFFERENT)
    assert r.returncode == 0, r.stderr
    assert "round differently at 2 threads than at 1" in r.stdout or threads.cores() != 2
    assert numerics(diff)["threads"] == 1 and "threads_by_load" not in numerics(diff)
    assert "steps_by_threads" not in Run(diff).summary
    assert_same_bits(one, diff)


def test_an_explicit_count_is_fixed_and_recorded_without_load(tmp_path):
    r = cli(*TINY, "--steps", "20", "--threads", "2", "--out", str(tmp_path / "two"))
    assert r.returncode == 0, r.stderr
    rec = numerics(tmp_path / "two")
    assert rec["threads"] == 2 and "threads_by_load" not in rec
    assert "steps_by_threads" not in Run(tmp_path / "two").summary


@needs_cores
def test_a_seeds_ensemble_by_load_is_its_runs_alone_at_one_thread(tmp_path):
    r = cli(*TINY, "--seeds", "0-2", "--out", str(tmp_path / "E"))
    assert r.returncode == 0, r.stderr
    r = cli(*TINY, "--seed", "2", "--threads", "1", "--out", str(tmp_path / "alone"))
    assert r.returncode == 0, r.stderr
    assert_same_bits(tmp_path / "alone", tmp_path / "E" / "seed=2")
    assert numerics(tmp_path / "E" / "seed=2")["threads"] == 1


# --- the sums kernels split between threads: on one thread by load ---------------------------------------------


def test_by_load_weight_gradients_and_the_softmax_backward_keep_the_sums_of_one_thread(monkeypatch):
    """MKL splits a lone member's weight gradient, a sum over the batch rows, between threads, and torch's softmax
    backward rounds otherwise at two (seen on an Intel Xeon). By load the gradient is cut into a block of rows per
    thread (a batch MKL gives a thread each), kept only where its first product of that shape had one thread's
    bits; where the rows do not divide it takes one thread, as the softmax backward does; every other product runs
    at the held count. At a count the user chose, everything runs at it."""
    from training.models import batched

    seen: list[tuple[int, int]] = []  # (threads, batch) of every product, (-threads, 0) of the softmax backward
    real_bmm, real_soft = batched.aligned_bmm, torch._softmax_backward_data
    monkeypatch.setattr(batched, "aligned_bmm",
                        lambda a, b: (seen.append((torch.get_num_threads(), a.shape[0])), real_bmm(a, b))[1])
    monkeypatch.setattr(torch, "_softmax_backward_data",
                        lambda *a: (seen.append((-torch.get_num_threads(), 0)), real_soft(*a))[1])
    monkeypatch.setattr(batched, "_SPLIT_KEEPS_BITS", {})
    before = torch.get_num_threads()

    def weight_grad(threads: int, rows: int) -> tuple[torch.Tensor, list]:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        x, w = torch.randn(1, 640, rows), torch.randn(1, rows, 8, requires_grad=True)
        seen.clear()
        batched.softmax(batched.mm(x, w, exact=True), -1, exact=True).pow(2).sum().backward()
        return w.grad, sorted(seen)

    try:
        for load, rows in ((2, 24), (2, 25), (0, 24)):
            monkeypatch.setattr(threads, "_by_load", load)
            one, _ = weight_grad(1, rows)
            first, seen_first = weight_grad(2, rows)
            again, seen_again = weight_grad(2, rows)
            others = [(2, 1), (-1 if load else -2, 0)]  # the forward product (its input needs no gradient), softmax
            if not load:
                assert seen_first == seen_again == sorted(others + [(2, 1)])
                continue
            assert torch.equal(first, one) and torch.equal(again, one)  # one thread's bits, whatever MKL does
            if rows % 2:
                assert seen_first == seen_again == sorted(others + [(1, 1)])
            else:  # the split, checked against one thread the first time, and kept only if it agreed
                assert seen_first == sorted(others + [(2, 2), (1, 1)])
                kept = batched._SPLIT_KEEPS_BITS[next(iter(batched._SPLIT_KEEPS_BITS))]
                assert seen_again == sorted(others + [(2, 2) if kept else (1, 1)])
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_by_load_a_split_that_rounds_otherwise_is_dropped_for_one_thread(monkeypatch):
    """The split weight gradient stands only where it gave one thread's bits: a split made to round otherwise
    (its products nudged by one ulp) is checked once, dropped, and the gradient is one thread's every time."""
    from training.models import batched

    real = batched.aligned_bmm
    nudged = lambda a, b: real(a, b) if a.shape[0] == 1 else torch.nextafter(real(a, b), torch.tensor(1e9))  # noqa: E731
    monkeypatch.setattr(batched, "aligned_bmm", nudged)
    monkeypatch.setattr(batched, "_SPLIT_KEEPS_BITS", {})
    monkeypatch.setattr(threads, "_by_load", 2)
    a, b = torch.randn(1, 24, 640).abs(), torch.randn(1, 640, 8).abs()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = batched.weight_grad_bmm(a, b)
        torch.set_num_threads(2)
        got = [batched.weight_grad_bmm(a, b) for _ in range(3)]
    finally:
        torch.set_num_threads(before)
    assert list(batched._SPLIT_KEEPS_BITS.values()) == [False]
    assert all(torch.equal(g, one) for g in got)


@pytest.mark.parametrize("preset", ["default", "digits5-700"])
def test_by_load_the_bit_check_passes_for_presets_whose_sums_a_second_thread_would_split(monkeypatch, preset):
    """Both presets' bits differ at two threads on an Intel Xeon when every op runs there (weight gradients; the
    softmax backward); by load they are one thread's (so too on the AMD EPYC development machine, where only
    digits5-700's softmax backward differed)."""
    from training.models.base import plain_models
    from training.presets import get_preset
    from training.tasks.build import build_task
    from training.trainer import Trainer

    cfg = get_preset(preset)
    data = build_task(cfg.task)
    monkeypatch.setattr(threads, "_by_load", 2)
    with plain_models():
        assert same_bits(lambda: Trainer([cfg], [data], "cpu"), 2)
