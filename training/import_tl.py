"""`python -m training.import_tl FILE --out RUN_DIR`: somebody else's TransformerLens grokking run as a run directory.

    python -m training.import_tl grokking_demo.pth --out checkpoints/nanda-demo
    python -m analyses.fourier checkpoints/nanda-demo          # every analysis then runs on it

FILE is what TransformerLens' Grokking demo saves: a dict with `checkpoints` (or `model_checkpoints`: a list of
HookedTransformer state dicts), `checkpoint_epochs` (the 0-based epoch after which each was taken), `config` (the
HookedTransformerConfig, or a dict of its fields), `train_indices` and `test_indices` (the split into the
row-major [a, b, =] table), and optionally `model`, `train_losses`, `test_losses`. It is read with
`torch.load(weights_only=True)` only: tensors, plain containers and the config's fields; TransformerLens 3's
config class is read as a bag of fields, never constructed. Anything else is refused with one line, exit 2.

The run directory holds one checkpoint per saved state dict, at step epoch + 1 (the state after that many full-
batch steps), its metrics evaluated here at each checkpoint, and the file's own split (split.json "explicit");
config.json records the architecture and the task, with the optimiser fields of the nanda2023 preset (the
demo's) and `imported` naming the file. Nothing is written over: --out must not exist or be empty.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

from training.cli import Parser, main_entry
from training.config import ConfigError, ModelConfig, validate
from training.errors import RunDirError

PROG = "python -m training.import_tl"
TL3_CONFIG = "transformer_lens.HookedTransformerConfig.HookedTransformerConfig"
NORMS = {None: "none", "LN": "LN"}


class ConfigFields:
    """What a pickled HookedTransformerConfig holds, as plain attributes: weights_only sets its state, nothing runs."""

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("the config's state is not a dict of fields")
        self.__dict__.update(state)


def make_parser() -> Parser:
    p = Parser(prog=PROG, description="Turn a TransformerLens grokking run (the Grokking demo's saved file) into "
                                      "a run directory.")
    p.add_argument("file", type=Path, help="the torch.save file (read with torch.load(weights_only=True))")
    p.add_argument("--out", type=Path, default=None, help="the new run directory (required; must not exist, or be "
                                                          "empty)")
    p.add_argument("--task", default="add", help="the modular task it was trained on (default: add)")
    return p


def read_file(path: Path) -> dict[str, Any]:
    """The saved dict, or RunDirError in one line when torch.load(weights_only=True) cannot read it."""
    import torch

    if not path.is_file():
        raise RunDirError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals([(ConfigFields, TL3_CONFIG)]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler raises whatever a junk byte stream trips (KeyError, ...)
        first = (str(e).strip().splitlines() or [""])[0]
        raise RunDirError(f"{path}: not readable with torch.load(weights_only=True): {type(e).__name__} {first}")\
            from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path}: expected the Grokking demo's dict, found {type(obj).__name__}")
    return obj


def _field(obj: dict, *names: str):
    for name in names:
        if name in obj:
            return obj[name]
    raise RunDirError(f"the file has no {' or '.join(repr(n) for n in names)} (keys: {', '.join(map(str, obj))})")


def model_config(cfg: Any, state: dict) -> tuple[ModelConfig, dict[str, int]]:
    """Our ModelConfig and the task sizes from the saved config (act_fn, normalisation) and the weights' shapes."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    norm = get("normalization_type")
    if norm not in NORMS:
        raise ConfigError(f"normalization_type {norm!r}: only None and 'LN' have a counterpart here")
    try:
        H, d, e = state["blocks.0.attn.W_Q"].shape
        n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        d_mlp = state["blocks.0.mlp.W_in"].shape[1] if "blocks.0.mlp.W_in" in state else 0
        sizes = {"d_vocab": state["embed.W_E"].shape[0], "d_vocab_out": state["unembed.W_U"].shape[1],
                 "n_ctx": state["pos_embed.W_pos"].shape[0]}
    except (KeyError, ValueError, AttributeError) as e:
        raise RunDirError(f"the checkpoints are not HookedTransformer state dicts ({e})") from None
    act = get("act_fn", "relu")
    return ModelConfig(model="transformer", n_layers=n_layers, d_model=d, n_heads=H, d_head=e, d_mlp=d_mlp,
                       act_fn=act, normalization_type=NORMS[norm]), {k: int(v) for k, v in sizes.items()}


def _indices(saved: dict, n: int):
    import torch

    idx = []
    for name in ("train_indices", "test_indices"):
        v = torch.as_tensor(_field(saved, name))
        if v.dtype not in (torch.int64, torch.int32) or v.ndim != 1 or (len(v) and not 0 <= int(v.min()) <= int(v.max()) < n):
            raise RunDirError(f"{name}: expected a 1-D tensor of row indices below {n}")
        idx.append(v.long().sort().values)
    return idx


def run_config(saved: dict, task: str):
    """(RunConfig, ModelConfig sizes, the checkpoints as [(step, state dict)], train and test indices)."""
    from training.presets import get_preset

    states, epochs = _field(saved, "checkpoints", "model_checkpoints"), _field(saved, "checkpoint_epochs")
    if not isinstance(states, list) or not isinstance(epochs, list) or len(states) != len(epochs) or not states:
        raise RunDirError("checkpoints and checkpoint_epochs must be lists of the same, non-zero length")
    if not all(isinstance(s, dict) for s in states) or not all(type(e) is int and e >= 0 for e in epochs):
        raise RunDirError("checkpoints must be state dicts and checkpoint_epochs non-negative integers")
    steps = [e + 1 for e in epochs]
    if steps != sorted(set(steps)):
        raise RunDirError("checkpoint_epochs must increase")
    model, sizes = model_config(_field(saved, "config"), states[0])
    p = sizes["d_vocab_out"]
    if sizes["d_vocab"] != p + 1 or sizes["n_ctx"] != 3:
        raise ConfigError(f"d_vocab {sizes['d_vocab']}, n_ctx {sizes['n_ctx']}: not a modular [a, b, =] task "
                          f"over p = {p} (d_vocab p + 1, n_ctx 3)")
    train, test = _indices(saved, p * p)
    base = get_preset("nanda2023")
    cfg = base.replace(task=task, p=p, frac=len(train) / (p * p), steps=steps[-1],
                       **{f: getattr(model, f) for f in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp",
                                                         "act_fn", "normalization_type")})
    validate(cfg)
    return cfg, list(zip(steps, states)), train, test


def evaluate(model, data) -> dict[str, float]:
    """The headline metrics of a checkpoint, as the training loop records them."""
    import torch

    from training.optim.losses import accuracy, compute_loss
    from training.optim.transforms.base import weight_norm

    with torch.no_grad():
        logits = model.answer_logits(data.inputs)
    row = {}
    for split, idx in (("train", data.train_idx), ("test", data.test_idx)):
        row[f"{split}_loss"] = compute_loss(logits[idx], data.labels[idx], data.loss, True).item()
        row[f"{split}_acc"] = accuracy(logits[idx], data.labels[idx], data.loss)
    row["weight_norm"] = weight_norm(model)
    return row


def body(args: argparse.Namespace) -> int:
    import dataclasses

    if args.out is None:
        raise ConfigError("--out RUN_DIR is required: the run directory to write")
    if not args.file.is_file():  # before torch is imported: a wrong path answers at once
        raise RunDirError(f"{args.file}: no such file")
    from training.models.build import build_model
    from training.runs.writer import check_out_dir
    from training.tasks.build import build_task

    check_out_dir(args.out)  # refuses an existing, non-empty --out before the file is read
    cfg, checkpoints, train, test = run_config(read_file(args.file), args.task)
    data = dataclasses.replace(build_task(cfg.task), train_idx=train, test_idx=test)
    model = build_model(cfg.model, data).eval()
    rows = []
    for step, state in checkpoints:  # every state loads strictly before anything is written
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as e:
            raise RunDirError(f"checkpoint at step {step}: {str(e).strip().splitlines()[-1].strip()}") from None
        rows.append((step, {k: v.clone() for k, v in model.state_dict().items()}, {"step": step, **evaluate(model, data)}))
    write_run(args.out, cfg, data, rows, str(args.file))
    print(f"{args.out}: {len(rows)} checkpoints, steps {rows[0][0]}..{rows[-1][0]}, final test accuracy "
          f"{rows[-1][2]['test_acc']:.4f}")
    return 0


def write_run(out: Path, cfg, data, rows, source: str) -> None:
    """The run directory, written as training writes one (config.json last, so only a whole run is marked)."""
    from training.loop import package_versions
    from training.runs.writer import RunWriter, create_run_dir
    from training.tasks.data import split_digest

    lock = create_run_dir(out)
    try:
        writer = RunWriter(out)
        writer.write_split({"explicit": True, "n": len(data.inputs), "n_train": len(data.train_idx),
                            "n_test": len(data.test_idx), "sha256": split_digest(data.train_idx, data.test_idx),
                            "train_idx": data.train_idx.tolist(), "test_idx": data.test_idx.tolist()})
        for step, weights, row in rows:
            writer.append_metrics(row)
            writer.save_checkpoint(step, weights, {k: row[k] for k in row if k != "step"})
        writer.write_summary({"steps": rows[-1][0], "imported": source})
        writer.write_config(cfg, {"preset": "imported", "versions": package_versions(),
                                  "imported": {"file": source, "format": "TransformerLens Grokking demo"}})
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    return main_entry(PROG, make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
