"""One step path: a run's bits do not depend on how it was grouped.

On one machine at one torch thread count (one here: tests/conftest.py, OMP_NUM_THREADS=1 for child processes), a
run's metrics.jsonl less its wall-clock column and every checkpoint are bit-identical whether it trained alone, as
a member of an ensemble of any K (chunked however the ChunkTuner chose), beside members of other training-set sizes,
through a kill -9 and a resume, or as a member resumed alone (tests/training/bits.py). Sweeps (local and Ray
backends) are in tests/training/test_sweep.py. 300 steps each: long enough for any rounding difference to have
grown into the metrics (a difference in the last bit of one weight shows in the 4th digit of a loss by step ~25).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, tiny_config
from tests.training.bits import assert_same_bits
from training.models.batched import aligned_bmm
from training.ensemble import shape_key, train_ensemble
from training.loop import state_step, train
from training.runs.reader import Run
from training.optim.transforms.base import REDUCE_GRAIN, member_sums

# a `default`-like run, small: (a + b) mod 23, half the pairs, a 1-layer transformer; full batch
BASE = tiny_config(p=23, frac=0.5, d_model=32, n_heads=4, d_head=8, d_mlp=64, lr=1e-2, wd=1.0, steps=300,
                   eval_every=25, ckpt_floor=5, ckpt_max=12)


def _ensemble(tmp_path, name, cfgs):
    dirs = [tmp_path / name / str(i) for i in range(len(cfgs))]
    for d in dirs:
        d.mkdir(parents=True)
    train_ensemble(cfgs, dirs, log=lambda s: None)
    return dirs


def _alone(tmp_path, name, cfg):
    train(cfg, tmp_path / name, progress=False)
    return tmp_path / name


def test_a_seed_alone_is_its_member_in_ensembles_of_4_and_16_and_beside_other_fractions(tmp_path):
    fracs = [BASE.replace(frac=0.3, seed=s) for s in (0, 1)]
    assert shape_key(fracs[0]) != shape_key(BASE)  # another training-set size: another ensemble, never padded
    k4 = _ensemble(tmp_path, "k4", [BASE.replace(seed=s) for s in range(4)])
    k16 = _ensemble(tmp_path, "k16", [BASE.replace(seed=s) for s in range(16)] + fracs)
    alone = _alone(tmp_path, "alone2", BASE.replace(seed=2))
    assert_same_bits(alone, k4[2])
    assert_same_bits(alone, k16[2])
    assert_same_bits(_alone(tmp_path, "alone_frac", fracs[1]), k16[17])
    cfg = json.loads((alone / "config.json").read_text())
    assert cfg["numerics"] == {"path": "exact", "threads": 1, "device": cfg["numerics"]["device"]}
    assert cfg["numerics"]["device"].startswith("cpu (")
    # the fixture where bits must differ: another seed is another run (the comparison can fail)
    with pytest.raises(AssertionError):
        assert_same_bits(alone, k4[1])


def test_minibatch_dropout_members_and_mlps_match_their_runs_alone(tmp_path):
    mini = BASE.replace(batch_size=40, dropout=0.1)
    mlp = tiny_config(p=23, frac=0.5, model="mlp", d_model=16, d_mlp=48, n_layers=2, lr=3e-3, batch_size=64,
                      dropout=0.1, steps=300, eval_every=25, ckpt_floor=5, ckpt_max=12)
    parity = tiny_config(task="parity", n_bits=12, k=2, n_train=100, n_test=60, model="mlp", d_mlp=32, n_layers=1,
                         optimizer="sgd", lr=0.1, momentum=0.9, wd=0.01, batch_size=24, warmup_steps=0,
                         loss="task", steps=300, eval_every=25, ckpt_floor=5, ckpt_max=12)
    cfgs = ([mini.replace(seed=s, batch_seed=s) for s in range(3)] + [mlp.replace(seed=s) for s in range(3)]
            + [parity.replace(seed=s, label_noise=0.1 * s) for s in range(3)])
    dirs = _ensemble(tmp_path, "ens", cfgs)
    for i in (1, 4, 8):  # a member of each ensemble, alone
        assert_same_bits(_alone(tmp_path, f"alone{i}", cfgs[i]), dirs[i])


# --- every transform, a member that leaves early, and kill -9 then resume ------------------------------------

CHILD = """
import json, sys
from pathlib import Path
from training.config import RunConfig
from training.ensemble import train_ensemble
cfgs = [RunConfig.from_dict(c) for c in json.loads(Path(sys.argv[1]).read_text())]
dirs = [Path(d) for d in sys.argv[2:]]
for d in dirs:
    d.mkdir(parents=True, exist_ok=True)
train_ensemble(cfgs, dirs, resume=[(d / "config.json").exists() for d in dirs], log=lambda s: None)
"""


def _child(tmp_path, cfgs, dirs, kill_at):
    """train_ensemble in a child process that SIGKILLs itself at step `kill_at` of each ensemble it starts."""
    spec = tmp_path / "cfgs.json"
    spec.write_text(json.dumps([c.to_dict() for c in cfgs]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GROKSCOPE_KILL_AT_STEP": str(kill_at)}
    return subprocess.run([sys.executable, "-c", CHILD, str(spec), *map(str, dirs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_every_transform_through_kill_9_and_resume_matches_its_run_alone(tmp_path):
    """Weight noise (a member that leaves early, at 150), decay to init, ⊥Grad, the norm constraint and the
    memorisation switch in one ensemble, Grokfast-EMA and -MA in two more; each ensemble killed at step 100."""
    base = BASE  # full batch: the switch member memorises (train accuracy 1) by step ~75
    cfgs = [base.replace(weight_noise=0.01, steps=150), base.replace(decay_to_init=True, seed=1),
            base.replace(perp_grad=True, wd=0.0, seed=2), base.replace(constrain_norm=1.0, wd=0.0, seed=3),
            base.replace(wd_after_memorisation=3.0, seed=4),
            base.replace(grokfast="ema", grokfast_alpha=0.9, grokfast_lamb=1.0),
            base.replace(grokfast="ema", grokfast_alpha=0.8, grokfast_lamb=2.0, seed=1),
            base.replace(grokfast="ma", grokfast_window=5, grokfast_lamb=1.0),
            base.replace(grokfast="ma", grokfast_window=5, grokfast_lamb=0.5, seed=1)]
    dirs = [tmp_path / "ens" / str(i) for i in range(len(cfgs))]
    for _ in range(3):  # each call finishes the ensemble killed before and is killed in the next one
        r = _child(tmp_path, cfgs, dirs, kill_at=100)
        assert r.returncode == -signal.SIGKILL, r.stderr
    r = _child(tmp_path, cfgs, dirs, kill_at=100)
    assert r.returncode == 0, r.stderr
    assert [Run(d).summary["steps"] for d in dirs] == [150] + [300] * 8
    assert Run(dirs[4]).summary["switch_step"] is not None  # the memorisation switch acted
    for i, cfg in enumerate(cfgs):
        assert_same_bits(_alone(tmp_path, f"alone{i}", cfg), dirs[i])


def _cli(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "training.run", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


SEEDS = ["--p", "23", "--frac", "0.5", "--d-model", "32", "--n-heads", "4", "--d-head", "8", "--d-mlp", "64",
         "--lr", "1e-2", "--steps", "300", "--eval-every", "25", "--device", "cpu", "--seeds", "0-3"]


def test_an_ensemble_member_that_lost_its_state_retrains_alone_to_the_same_bits(tmp_path):
    out = tmp_path / "E"
    r = _cli(*SEEDS, "--out", str(out), env={"GROKSCOPE_KILL_AT_STEP": "150"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    (out / "seed=1" / "state" / "state.safetensors").unlink()
    assert [state_step(out / f"seed={s}") for s in range(4)] == [150, 0, 150, 150]
    r = _cli("--resume", str(out))
    assert r.returncode == 0, r.stderr
    for s in (1, 2):  # the member that retrained alone from step 0, and one that resumed at 150 with two others
        cfg = Run(out / f"seed={s}").config
        assert_same_bits(_alone(tmp_path, f"alone{s}", cfg), out / f"seed={s}")


# --- numerics: what the bits depend on beyond the config -------------------------------------------------------


def test_a_resume_at_another_thread_count_says_so_in_one_line_and_older_runs_do_not_crash(tmp_path):
    cfg = tiny_config(steps=20)
    train(cfg, tmp_path / "r", progress=False)
    said: list[str] = []
    train(cfg.replace(steps=30), tmp_path / "r", resume=True, progress=False, log=said.append)
    assert said == []  # same threads, same device: nothing to say
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(cfg.replace(steps=40), tmp_path / "r", resume=True, progress=False, log=said.append)
    finally:
        torch.set_num_threads(threads)
    assert len(said) == 1 and "threads 1 then, 2 now" in said[0] and "not bit-identical" in said[0]
    raw = json.loads((tmp_path / "r" / "config.json").read_text())
    del raw["numerics"]  # a run from before the record: unknown, not reported
    (tmp_path / "r" / "config.json").write_text(json.dumps(raw))
    said.clear()
    train(cfg.replace(steps=50), tmp_path / "r", resume=True, progress=False, log=said.append)
    assert said == [] and Run(tmp_path / "r").summary["steps"] == 50


def test_analyses_sweep_says_when_the_runs_compared_differ_in_threads_or_device():
    from analyses.sweep_stats import numerics_line

    one = {"path": "exact", "threads": 1, "device": "cpu (AVX2)"}
    assert numerics_line([one, dict(one)]) is None
    line = numerics_line([one, {**one, "threads": 2}, None])
    assert "\n" not in line and "threads 1 (1 runs), 2 (1 runs), unknown (1 runs)" in line and "device" in line


# --- the pieces --------------------------------------------------------------------------------------------------


def test_a_lone_members_sum_is_its_sum_among_others_at_two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(5, REDUCE_GRAIN + 7, generator=torch.Generator().manual_seed(0))
        rows = member_sums(x)
        assert all(torch.equal(member_sums(x[k: k + 1])[0], rows[k]) for k in range(5))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("m,k,n", [(3, 16, 11), (61, 8, 11), (64, 16, 1), (1, 64, 5), (33, 32, 59)])
def test_a_members_aligned_product_is_the_same_alone_and_anywhere_in_a_batch(m, k, n):
    g = torch.Generator().manual_seed(m * k * n)
    a, b = torch.randn(6, m, k, generator=g), torch.randn(6, k, n, generator=g)
    full = aligned_bmm(a, b)
    assert torch.allclose(full, torch.bmm(a, b), rtol=1e-5, atol=1e-5)  # the product, to float32 rounding
    for j in range(6):
        assert torch.equal(aligned_bmm(a[j: j + 1], b[j: j + 1])[0], full[j])
        assert torch.equal(aligned_bmm(a[j:], b[j:])[0], full[j])


# --- runs trained before the exact path ---------------------------------------------------------------------------


def test_a_state_says_which_path_its_run_trained_on():
    from training.trainer import state_path

    assert state_path({"trainer": {"batched": True, "path": "exact"}}) == "exact"
    assert state_path({"trainer": {"batched": False}}) == "single"  # a run alone before the exact path
    assert state_path({"trainer": {"batched": True}}) == "batched"  # an ensemble member before it
    assert state_path({"step": 3}) is None  # older still: the loop decides by the ensemble's size


@pytest.mark.parametrize("path,k", [("single", 1), ("batched", 2)])
def test_runs_trained_on_an_old_path_resume_on_it_bit_identically(tmp_path, monkeypatch, path, k):
    """Runs trained on the paths from before (forced here) resume on the path their state records."""
    import training.loop
    from training.trainer import Trainer

    def old_trainer(*args, path=None, **kw):
        return Trainer(*args, path=path or old, **kw)

    old = path
    cfgs = [tiny_config(steps=40, batch_size=16, dropout=0.1, seed=s) for s in range(k)]
    monkeypatch.setattr(training.loop, "Trainer", old_trainer)
    ref = _ensemble(tmp_path, "ref", cfgs)
    cut = _ensemble(tmp_path, "cut", [c.replace(steps=20) for c in cfgs])
    monkeypatch.setattr(training.loop, "Trainer", Trainer)  # the resume: no forcing, the state decides
    train_ensemble(cfgs, cut, resume=True, log=lambda s: None)
    for a, b in zip(ref, cut):
        assert_same_bits(a, b)
    exact = _ensemble(tmp_path, "exact", cfgs)  # the fixture that can fail: the exact path rounds otherwise
    with pytest.raises(AssertionError):
        assert_same_bits(ref[0], exact[0])
