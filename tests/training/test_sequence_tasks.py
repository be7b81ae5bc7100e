"""Sequence tasks (training.tasks.sequence): layouts and labels, splits, infinite batches, target-only losses,
attention-only blocks, training from the CLI in both modes, resume after SIGKILL, per-target metrics, bad flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, tiny_config
from training.config import ConfigError, RunConfig, validate
from training.ensemble import shape_key
from training.constants import IGNORE
from training.optim.losses import SEQ, accuracy, compute_loss, example_losses
from training.models.build import build_model
from training.runs.reader import Run
from training.run import main
from training.tasks.build import build_task
from training.trainer import Trainer

TASKS = ("digit_add", "repeat_subseq", "max_element")


def seq_config(task: str, **flat) -> RunConfig:
    """A tiny transformer on a small version of `task`."""
    base = dict(task=task, n_train=64, n_test=48, n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                seq_len=29, seq_vocab=16, repeat_len=6, n_repeats=3, n_elements=5, n_values=8, lr=3e-3,
                batch_size=16, steps=20, eval_every=10)
    return tiny_config(**{**base, **flat})


def number(digits) -> int:
    return int("".join(str(int(d)) for d in digits))


def targets(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [N, T], labels [N, T]) of every example's targets in position order."""
    mask = data.labels != IGNORE
    n = len(data.labels)
    return mask.nonzero()[:, 1].view(n, -1), data.labels[mask].view(n, -1)


# --- layouts and labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_digits", [1, 3, 5])
def test_digit_add_layout_and_sums(n_digits):
    data = build_task(RunConfig().task.__class__(task="digit_add", n_digits=n_digits, n_train=40, n_test=20))
    x, n = data.inputs, n_digits
    assert x.shape[1] == 3 * n + 3 and data.d_vocab == 12 and data.d_vocab_out == 10
    assert (x[:, n] == 10).all() and (x[:, 2 * n + 1] == 11).all()
    for row in x:
        assert number(row[:n]) + number(row[n + 1: 2 * n + 1]) == number(row[2 * n + 2:])
    pos, lab = targets(data)
    assert (pos == torch.arange(2 * n + 1, 3 * n + 2)).all()  # '=' and the answer digits but the last
    assert torch.equal(lab, x[:, 2 * n + 2:])  # each predicts the next token, s_n first
    assert data.structure["target_names"] == [f"s{i}" for i in range(n, -1, -1)]


def test_repeat_subseq_copies_repeat_and_targets_predict_the_copy():
    cfg = seq_config("repeat_subseq", seq_len=85, seq_vocab=128, repeat_len=16, n_train=50).task
    data = build_task(cfg)
    x = data.inputs
    assert (x[:, 0] == 0).all() and (x[:, 1:] >= 1).all() and (x < 128).all()
    pos, lab = targets(data)
    assert pos.shape[1] == 30
    assert torch.equal(lab, x.gather(1, pos + 1))  # the logits at p predict token p + 1
    for row, p in zip(x, pos):
        s2, s3 = int(p[0]), int(p[15])
        assert 29 <= s2 <= 29 + 12 and 57 <= s3 <= 57 + 12  # inside intervals 2 and 3, ending inside them
        R = row[s2: s2 + 16]
        assert torch.equal(row[s3: s3 + 16], R)
        first = [s for s in range(1, 14) if torch.equal(row[s: s + 16], R)]
        assert first, "copy 1 lies in the first interval"
    names = data.structure["target_names"]
    assert names[:2] == ["c2p0", "c2p1"] and names[-1] == "c3p14" and data.structure["bos"] == 0


def test_max_element_predicts_the_maximum_at_end():
    data = build_task(seq_config("max_element", n_train=200).task)
    x = data.inputs
    assert (x[:, 0] == 8).all() and (x[:, -1] == 9).all() and (x[:, 1:-1] < 8).all()
    pos, lab = targets(data)
    assert (pos == x.shape[1] - 1).all()
    assert torch.equal(lab[:, 0], x[:, 1:-1].max(1).values)
    assert data.structure["target_names"] == ["max"] and data.structure["bos"] == 8


@pytest.mark.parametrize("task", TASKS)
def test_finite_split_is_seeded_distinct_and_disjoint(task):
    cfg = seq_config(task).task
    a, b = build_task(cfg), build_task(cfg)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, build_task(seq_config(task, split_seed=1).task).inputs)
    rows = [tuple(r) for r in a.inputs.tolist()]
    assert len(set(rows)) == len(rows)  # all distinct, so train and test share no input
    assert len(a.train_idx) == 64 and len(a.test_idx) == 48
    assert set(a.train_idx.tolist()).isdisjoint(a.test_idx.tolist())
    s = a.structure
    assert s["kind"] == "sequence" and s["task"] == task and s["infinite"] is False and "bos" in s


@pytest.mark.parametrize("task", TASKS)
def test_infinite_batches_are_a_pure_function_of_seed_and_step(task):
    data = build_task(seq_config(task, infinite=True).task)
    again = build_task(seq_config(task, infinite=True).task)
    assert data.structure["infinite"] is True and torch.equal(data.inputs, again.inputs)
    x, y = data.sample(0, 7, 16)
    x2, y2 = again.sample(0, 7, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2) and x.shape == (16, data.n_ctx) and y.shape == x.shape
    assert not torch.equal(x, data.sample(0, 8, 16)[0])
    assert not torch.equal(x, data.sample(1, 7, 16)[0])
    assert ((y != IGNORE).sum(1) == len(data.structure["target_names"])).all()


# --- losses only at the targets ---------------------------------------------------------------------------------


def test_loss_and_accuracy_ignore_positions_that_are_not_targets():
    data = build_task(seq_config("digit_add").task)
    y = data.labels[:10]
    out = torch.randn(10, data.n_ctx, 10, generator=torch.Generator().manual_seed(0))
    base = compute_loss(out, y, SEQ, True), accuracy(out, y, SEQ), example_losses(out, y, SEQ, True)
    noisy = out.clone()
    noisy[y == IGNORE] = torch.randn(noisy[y == IGNORE].shape) * 100
    assert compute_loss(noisy, y, SEQ, True) == base[0] and accuracy(noisy, y, SEQ) == base[1]
    assert torch.equal(example_losses(noisy, y, SEQ, True), base[2])
    hit = out.clone()
    hit[:, 12] += 50 * torch.nn.functional.one_hot(y[:, 12], 10)  # target s4 now right everywhere
    assert compute_loss(hit, y, SEQ, True) < base[0] and accuracy(hit, y, SEQ) >= base[1]
    expect = torch.nn.functional.cross_entropy(out[y != IGNORE].double(), y[y != IGNORE])
    assert torch.allclose(base[0], expect)


# --- attention-only blocks and the batched forward ---------------------------------------------------------------


def test_d_mlp_0_builds_attention_only_blocks():
    cfg = seq_config("repeat_subseq", n_layers=2, d_mlp=0)
    data = build_task(cfg.task)
    model = build_model(cfg.model, data)
    assert model.cfg.attn_only and not any("mlp" in n or "ln2" in n for n, _ in model.named_parameters())
    _, cache = model.run_with_cache(data.inputs[:3])
    assert not any("mlp" in k for k in cache.keys())
    assert cache["blocks.1.hook_resid_post"].shape == (3, data.n_ctx, 16)
    assert torch.equal(cache["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_mid"])
    assert model(data.inputs[:3]).shape == (3, data.n_ctx, data.d_vocab_out)  # every position
    for probe in (lambda: model.neuron_hook(0), lambda: model.neuron_weights(0), lambda: model.W_in):
        with pytest.raises(ValueError, match="attention-only"):
            probe()
    with pytest.raises(ConfigError, match="d-mlp"):
        validate(tiny_config(model="mlp", d_mlp=0))


@pytest.mark.parametrize("task,flat", [("repeat_subseq", {"n_layers": 2, "d_mlp": 0, "infinite": True}),
                                       ("digit_add", {"normalization_type": "LN"})])
def test_an_ensemble_of_sequence_runs_matches_each_run_alone(task, flat):
    cfgs = [seq_config(task, **flat, seed=s) for s in (0, 1)]
    assert shape_key(cfgs[0]) == shape_key(cfgs[1])
    assert shape_key(cfgs[0]) != shape_key(seq_config(task, **flat, n_values=9, seq_len=30, n_digits=4))
    data = build_task(cfgs[0].task)
    together = Trainer(cfgs, [data, data])
    alone = [Trainer([c], [data]) for c in cfgs]
    for _ in range(5):  # the same Trainer path alone and together: the same bits
        losses = together.step()
        for k, t in enumerate(alone):
            assert torch.equal(losses[k], t.step()[0])
    rows = together.evaluate()
    for k, t in enumerate(alone):
        row = t.evaluate()[0]
        assert row["test_loss_by_target"].keys() == rows[k]["test_loss_by_target"].keys()
        assert rows[k] == row


# --- the command line ----------------------------------------------------------------------------------------


def cli_args(task: str, infinite: bool, steps: int = 20) -> list[str]:
    args = ["--task", task, "--infinite", str(infinite).lower(), "--n-train", "64", "--n-test", "48", "--batch-size",
            "16", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--steps", str(steps), "--eval-every", "10",
            "--device", "cpu", "--seq-len", "29", "--seq-vocab", "16", "--repeat-len", "6", "--n-elements", "5",
            "--n-values", "8"]
    return args + (["--n-layers", "2", "--d-mlp", "0"] if task == "repeat_subseq" else ["--d-mlp", "32"])


@pytest.mark.parametrize("infinite", [False, True], ids=["finite", "infinite"])
@pytest.mark.parametrize("task", TASKS)
def test_each_task_trains_from_the_cli_with_per_target_metrics(tmp_path, task, infinite):
    assert main(["--no-progress", *cli_args(task, infinite), "--out", str(tmp_path / "run")]) == 0
    run = Run(tmp_path / "run")
    names = run.data.structure["target_names"]
    assert run.data.structure["infinite"] is infinite
    assert [m["step"] for m in run.metrics] == [0, 10, 20]
    for row in run.metrics:
        for key in ("train_loss_by_target", "test_loss_by_target", "train_acc_by_target", "test_acc_by_target"):
            assert list(row[key]) == names
        assert 0 <= row["test_answer_acc"] <= min(row["test_acc_by_target"].values())
        by_target = sum(row["test_loss_by_target"].values()) / len(names)
        assert row["test_loss"] == pytest.approx(by_target, rel=1e-9)  # every example has the same targets
    logits = run.model(20)(run.data.inputs[:2])
    assert logits.shape == (2, run.data.n_ctx, run.data.d_vocab_out)


def _rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("task,infinite", [("max_element", False), ("repeat_subseq", True)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, task, infinite):
    """A real process SIGKILLs itself after step 20's writes (GROKSCOPE_KILL_AT_STEP); --resume then ends with the
    metrics and weights of an uninterrupted run."""
    args = cli_args(task, infinite, steps=40)
    ref, cut = tmp_path / "ref", tmp_path / "cut"

    def cli(*argv: str, **env: str) -> subprocess.CompletedProcess:
        # every part in its own process, as a user runs it: the same thread count (and so the same float
        # reductions) for the uninterrupted run, the killed one and the resume
        return subprocess.run([sys.executable, "-m", "training.run", "--no-progress", *argv], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
                              timeout=300)

    assert cli(*args, "--out", str(ref)).returncode == 0
    r = cli(*args, "--out", str(cut), GROKSCOPE_KILL_AT_STEP="20")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (cut / "summary.json").exists()
    r = cli("--resume", str(cut))
    assert r.returncode == 0, r.stderr
    assert _rows(ref) == _rows(cut)
    wa, wb = (load_file(d / "ckpt" / "step_40.safetensors") for d in (ref, cut))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("args,message", [
    (["--task", "digit_add", "--model", "mlp"], "use --model transformer"),
    (["--task", "digit_add", "--infinite", "true"], "--batch-size"),
    (["--task", "add", "--infinite", "true", "--batch-size", "8"], "sequence tasks"),
    (["--task", "digit_add", "--n-digits", "0"], "--n-digits"),
    (["--task", "digit_add", "--n-digits", "1", "--n-train", "90", "--n-test", "20"], "distinct inputs"),
    (["--task", "repeat_subseq", "--repeat-len", "40"], "--repeat-len 40"),
    (["--task", "repeat_subseq", "--n-repeats", "1"], "--n-repeats"),
    (["--task", "max_element", "--loss", "stablemax"], "--loss stablemax"),
    (["--task", "max_element", "--model", "mlp", "--d-mlp", "0"], "--d-mlp"),
    (["--task", "max_element", "--infinite", "maybe"], "--infinite"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["--no-progress", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()
