"""Ensembles: a member trained with others is bit for bit the same config trained alone (the same Trainer path,
the same machine and thread count: tests/training/bits.py); kill -9 then resume of an ensemble is bit-identical;
incompatible configs split; members that stop early leave cleanly. The 300-step versions of these checks, and
sweeps, are in tests/training/test_one_path.py.
"""

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
from tests.training.bits import assert_same_bits as assert_same_run
from tests.training.bits import metrics_rows as _rows
from training.ensemble import plan_chunks, shape_key, train_ensemble
from training.loop import state_step, train
from training.runs.reader import Run


def _alone_and_together(tmp_path, cfgs):
    dirs = [tmp_path / f"ens{i}" for i in range(len(cfgs))]
    for d in dirs:
        d.mkdir()
    out = train_ensemble(cfgs, dirs, log=lambda s: None)
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{i}", progress=False)
        assert_same_run(dirs[i], tmp_path / f"alone{i}")
        assert out[i]["S_mem"] == Run(tmp_path / f"alone{i}").summary["S_mem"]
    return dirs


def test_full_batch_members_with_different_fractions_seeds_and_hyperparameters_match_alone(tmp_path):
    base = tiny_config(steps=40)
    cfgs = [base, base.replace(frac=0.3, split_seed=3, seed=1),
            base.replace(lr=1e-2, wd=0.3, beta2=0.99, warmup_steps=0),
            base.replace(init_scale=2.0, constrain_norm=1.0, wd=0.0, wd_after_memorisation=0.5)]
    # another training-set size is another ensemble (padding would change its rounding); the rest share one
    assert len({shape_key(c) for c in cfgs}) == 2 and len({shape_key(c) for c in cfgs if c.task.frac == 0.5}) == 1
    _alone_and_together(tmp_path, cfgs)


def test_minibatch_dropout_members_match_alone(tmp_path):
    base = tiny_config(steps=30, batch_size=16, dropout=0.1)
    cfgs = [base, base.replace(batch_seed=5, dropout=0.3), base.replace(seed=2, frac=0.3, dropout=0.0)]
    _alone_and_together(tmp_path, cfgs)


def test_mlp_sgd_momentum_members_with_label_noise_match_alone(tmp_path):
    base = tiny_config(task="parity", n_bits=12, k=2, n_train=64, n_test=32, model="mlp", d_mlp=32, n_layers=1,
                       optimizer="sgd", lr=0.1, wd=0.01, batch_size=16, float64_loss=False, warmup_steps=0,
                       steps=30)
    cfgs = [base, base.replace(momentum=0.9, split_seed=2), base.replace(label_noise=0.1, dropout=0.2, seed=3)]
    _alone_and_together(tmp_path, cfgs)


def test_members_that_stop_early_leave_and_the_rest_go_on(tmp_path):
    base = tiny_config(steps=40)
    cfgs = [base.replace(steps=20), base, base.replace(steps=30, eval_every=5)]
    dirs = _alone_and_together(tmp_path, cfgs)
    assert [Run(d).summary["steps"] for d in dirs] == [20, 40, 30]


def test_incompatible_configs_are_split_not_refused(tmp_path):
    cfgs = [tiny_config(steps=20), tiny_config(steps=20, d_mlp=48), tiny_config(steps=20, model="lstm", d_model=16)]
    assert len({shape_key(c) for c in cfgs}) == 3
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    out = train_ensemble(cfgs, dirs, log=lambda s: None)
    assert [o["steps"] for o in out] == [20, 20, 20]
    assert [len(c) for c in plan_chunks(cfgs)] == [1, 1, 1]


def test_plan_chunks_keeps_every_index_once():
    cfgs = [tiny_config(seed=s) for s in range(5)] + [tiny_config(d_mlp=48)]
    chunks = plan_chunks(cfgs, max_members=4, threads=1)
    assert sorted(i for c in chunks for i in c) == list(range(6))
    assert all(len({shape_key(cfgs[i]) for i in c}) == 1 for c in chunks)
    assert max(len(c) for c in chunks) <= 4


SEEDS = ["--p", "23", "--frac", "0.5", "--d-model", "32", "--n-heads", "4", "--d-head", "8", "--d-mlp", "64",
         "--steps", "300", "--eval-every", "10", "--device", "cpu", "--lr", "3e-3", "--batch-size", "64",
         "--dropout", "0.1", "--seeds", "0-2"]


def _cli(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "training.run", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_of_an_ensemble_then_resume_is_bit_identical(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert _cli(*SEEDS, "--out", str(ref)).returncode == 0
    r = _cli(*SEEDS, "--out", str(cut), env={"GROKSCOPE_KILL_AT_STEP": "170"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not any((cut / f"seed={s}" / "summary.json").exists() for s in range(3))
    assert {state_step(cut / f"seed={s}") for s in range(3)} == {170}
    r = _cli("--resume", str(cut))
    assert r.returncode == 0, r.stderr
    for s in range(3):
        a, b = ref / f"seed={s}", cut / f"seed={s}"
        assert _rows(a) == _rows(b)
        assert Run(a).steps == Run(b).steps
        wa, wb = load_file(a / "ckpt" / "step_300.safetensors"), load_file(b / "ckpt" / "step_300.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert json.loads((b / "config.json").read_text())["train"]["seed"] == s


def test_a_diverging_member_stops_alone_and_the_others_match_their_runs_alone(tmp_path):
    base = tiny_config(steps=20, optimizer="sgd", lr=0.5, momentum=0.9, warmup_steps=0)
    cfgs = [base, base.replace(lr=100.0), base.replace(seed=2)]  # lr 100 with momentum: a NaN loss at step 2
    dirs = [tmp_path / f"ens{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    out = train_ensemble(cfgs, dirs, log=lambda s: None)
    alone = train(cfgs[1], tmp_path / "alone1", progress=False)
    assert out[1]["diverged_at"] == alone["diverged_at"] == 2 and out[1]["steps"] == 2
    assert [o["steps"] for o in out] == [20, 2, 20] and "diverged_at" not in out[0]
    for i in (0, 2):
        train(cfgs[i], tmp_path / f"alone{i}", progress=False)
        assert_same_run(dirs[i], tmp_path / f"alone{i}")


@pytest.mark.parametrize("seeds", ["x", "3-1", "1,1", ""])
def test_bad_seeds_are_one_line_exit_2_and_write_nothing(tmp_path, seeds):
    r = _cli("--seeds", seeds, "--steps", "5", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "--seeds" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_seeds_train_one_run_directory_per_seed(tmp_path):
    r = _cli("--p", "11", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32", "--steps", "20",
             "--eval-every", "10", "--device", "cpu", "--seeds", "0,3", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["seed=0", "seed=3"]
    assert [Run(tmp_path / "s" / f"seed={s}").config.train.seed for s in (0, 3)] == [0, 3]
    assert all(Run(tmp_path / "s" / f"seed={s}").summary["steps"] == 20 for s in (0, 3))
