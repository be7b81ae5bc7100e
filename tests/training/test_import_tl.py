"""python -m training.import_tl: a file in the TransformerLens Grokking demo's saved format becomes a run directory;
anything torch.load(weights_only=True) cannot read is refused with one line, and nothing is ever written over."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch

from tests.training.test_tl_compat import hooked_transformer_state_dict
from training.config import ModelConfig, TaskConfig
from training.import_tl import main
from training.models.build import build_model
from training.runs.reader import Run
from training.tasks.build import build_task

P = 23


class HookedTransformerConfig:
    """Stands in for TransformerLens 3's config class: pickled under its module path, as the demo saves it."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


HookedTransformerConfig.__module__ = "transformer_lens.HookedTransformerConfig"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def demo_file(path, config_as: str = "object", **changes):
    """What the demo's `torch.save` writes, for a 1-layer p = 23 model: three checkpoints a hundred epochs apart."""
    data = build_task(TaskConfig(task="add", p=P, frac=0.3))
    models = [build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64), data, seed=s) for s in range(3)]
    fields = dict(n_layers=1, n_heads=4, d_model=32, d_head=8, d_mlp=64, act_fn="relu", normalization_type=None,
                  d_vocab=P + 1, d_vocab_out=P, n_ctx=3, init_weights=True, device="cpu", seed=999,
                  dtype=torch.float32)
    perm = torch.randperm(P * P, generator=torch.Generator().manual_seed(598))
    cut = int(P * P * 0.3)
    saved = {"model": hooked_transformer_state_dict(models[-1]),
             "config": HookedTransformerConfig(**fields) if config_as == "object" else fields,
             "checkpoints": [hooked_transformer_state_dict(m) for m in models], "checkpoint_epochs": [99, 199, 299],
             "test_losses": [1.0] * 300, "train_losses": [1.0] * 300,
             "train_indices": perm[:cut], "test_indices": perm[cut:]}
    saved.update(changes)
    module = types.ModuleType("transformer_lens.HookedTransformerConfig")
    module.HookedTransformerConfig = HookedTransformerConfig
    sys.modules[module.__name__] = module  # only so that pickle finds the class under TransformerLens 3's name
    try:
        torch.save(saved, path)
    finally:
        del sys.modules[module.__name__]
    return saved, models


@pytest.mark.parametrize("config_as", ["object", "dict"])
def test_the_demo_format_becomes_a_run_directory(tmp_path, capsys, config_as):
    saved, models = demo_file(tmp_path / "grokking_demo.pth", config_as)
    assert main([str(tmp_path / "grokking_demo.pth"), "--out", str(tmp_path / "run")]) == 0
    run = Run(tmp_path / "run")
    assert run.steps == run.checkpoint_steps == [100, 200, 300]  # step = epoch + 1
    assert run.config.task.p == P and run.config.model.d_model == 32 and run.config.model.normalization_type == "none"
    assert run.data.train_idx.tolist() == sorted(saved["train_indices"].tolist())  # the file's split, not a reseed
    assert run.data.test_idx.tolist() == sorted(saved["test_indices"].tolist())
    for step, src in zip(run.steps, models):
        model = run.model(step)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in src.state_dict().items())
    rows = run.metrics
    last = run.model(300)
    test = run.data.test_idx
    acc = (last.answer_logits(run.data.inputs[test]).argmax(-1) == run.data.labels[test]).double().mean().item()
    assert [r["step"] for r in rows] == [100, 200, 300] and rows[-1]["test_acc"] == pytest.approx(acc)
    assert "3 checkpoints" in capsys.readouterr().out


def refused(tmp_path, capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_what_weights_only_cannot_read_is_refused_in_one_line(tmp_path, capsys):
    torch.save({"checkpoints": [Evil()]}, tmp_path / "evil.pth")
    err = refused(tmp_path, capsys, [str(tmp_path / "evil.pth"), "--out", str(tmp_path / "run")])
    assert "weights_only" in err and "pwned" not in capsys.readouterr().out
    assert not (tmp_path / "run").exists()
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    refused(tmp_path, capsys, [str(tmp_path / "junk.pth"), "--out", str(tmp_path / "run")])
    (tmp_path / "text.pth").write_bytes(b"junk\n")  # a legacy-pickle stream the unpickler trips over (KeyError)
    refused(tmp_path, capsys, [str(tmp_path / "text.pth"), "--out", str(tmp_path / "run")])
    refused(tmp_path, capsys, [str(tmp_path / "missing.pth"), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_bad_contents_are_refused_before_anything_is_written(tmp_path, capsys):
    saved, _ = demo_file(tmp_path / "a.pth")
    bias = hooked_transformer_state_dict(build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64),
                                                     build_task(TaskConfig(task="add", p=P)), seed=1))
    bias["blocks.0.attn.b_V"] += 0.1  # a HookedTransformer with attention biases: not this architecture
    demo_file(tmp_path / "b.pth", checkpoints=saved["checkpoints"][:2] + [bias])
    assert "non-zero" in refused(tmp_path, capsys, [str(tmp_path / "b.pth"), "--out", str(tmp_path / "run")])
    demo_file(tmp_path / "c.pth", checkpoint_epochs=[99, 199])
    refused(tmp_path, capsys, [str(tmp_path / "c.pth"), "--out", str(tmp_path / "run")])
    demo_file(tmp_path / "d.pth", train_indices=torch.tensor([0, P * P]))
    refused(tmp_path, capsys, [str(tmp_path / "d.pth"), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_never_writes_over_existing_data(tmp_path, capsys):
    demo_file(tmp_path / "a.pth")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "already exists" in refused(tmp_path, capsys, [str(tmp_path / "a.pth"), "--out", str(out)])
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
