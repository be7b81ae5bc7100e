"""Named run configs. A new preset is one entry in `PRESETS` and one line in `ABOUT`; the README's table is
generated from both (`python -m training.presets --markdown`), and a test fails when the README differs."""

from __future__ import annotations

import sys

from training.cli import Parser, main_entry
from training.config import (CheckpointConfig, ConfigError, ModelConfig, OptimConfig, RunConfig, TaskConfig,
                             TrainConfig)
from training.registry import model_spec, task_spec, transform_specs

PRESETS: dict[str, RunConfig] = {
    # Nanda et al. 2023, progress measures: (a + b) mod 113, 30% train, 1-layer ReLU transformer without
    # LayerNorm, AdamW lr 1e-3 wd 1 betas (0.9, 0.98), 10-step warmup, full batch, 40k steps, float64 loss.
    "nanda2023": RunConfig(
        task=TaskConfig(task="add", p=113, frac=0.3, split_seed=0),
        model=ModelConfig(model="transformer", n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512,
                          act_fn="relu", normalization_type="none"),
        optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
                          batch_size=0, float64_loss=True),
        train=TrainConfig(steps=40_000, eval_every=50, seed=0),
    ),
    # Power et al. 2022: x/y mod 97, 50% train, 2-layer width-128 transformer with 4 heads, AdamW lr 1e-3 wd 1,
    # betas (0.9, 0.98), 10-step warmup, batch 512, 1e5 steps. (Their LayerNorm is post-LN with sinusoidal
    # positions; ours is pre-LN with learned positions.)
    "power2022": RunConfig(
        task=TaskConfig(task="div", p=97, frac=0.5, split_seed=0),
        model=ModelConfig(model="transformer", n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512,
                          normalization_type="LN"),
        optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=1.0, warmup_steps=10, batch_size=512, float64_loss=False),
        train=TrainConfig(steps=100_000, eval_every=100, seed=0),
    ),
    # Groks on a 2-core laptop CPU in well under a minute: (a + b) mod 59, 40% train, Nanda's architecture at
    # d_model 64 / d_mlp 256, AdamW lr 5e-3 wd 2 (a larger lr and weight decay shorten the plateau).
    "default": RunConfig(
        task=TaskConfig(task="add", p=59, frac=0.4, split_seed=0),
        model=ModelConfig(model="transformer", n_layers=1, d_model=64, n_heads=4, d_head=16, d_mlp=256),
        optim=OptimConfig(optimizer="adamw", lr=5e-3, wd=2.0, warmup_steps=10, batch_size=0),
        train=TrainConfig(steps=1500, eval_every=25, seed=0),
        ckpt=CheckpointConfig(ckpt_floor=30),
    ),
    # Power et al. 2022's S5 table: x*y in S5 (every permutation an opaque token), 50% of the 14400 pairs, their
    # 2-layer width-128 transformer and optimiser as in "power2022".
    "power2022-s5": RunConfig(
        task=TaskConfig(task="group_mul", group="S5", frac=0.5, split_seed=0),
        model=ModelConfig(model="transformer", n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512,
                          normalization_type="LN"),
        optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=1.0, warmup_steps=10, batch_size=512, float64_loss=False),
        train=TrainConfig(steps=100_000, eval_every=100, seed=0),
    ),
    # Chughtai et al. 2023 (toy model of universality), S5: per-operand embeddings W_x, W_y of width 256,
    # concatenated, one ReLU layer of 128, unembedding; AdamW lr 1e-3 wd 1 betas (0.9, 0.98), full batch, 40% train.
    "chughtai-s5": RunConfig(
        task=TaskConfig(task="group_mul", group="S5", frac=0.4, split_seed=0),
        model=ModelConfig(model="mlp", n_layers=1, d_model=256, d_mlp=128, act_fn="relu"),
        optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=1.0, beta1=0.9, beta2=0.98, warmup_steps=10, batch_size=0),
        train=TrainConfig(steps=100_000, eval_every=100, seed=0),
    ),
    # S5 on a 2-core CPU: the Chughtai MLP narrowed to 64-wide operand embeddings (hidden layer still 128), 60%
    # train, AdamW lr 3e-3 wd 1, full batch. Memorises by ~350 steps, 99% test accuracy at ~2300 (seed 0);
    # the run goes on to 5000 steps so the coset structure has time to sharpen after grokking.
    "s5-cpu": RunConfig(
        task=TaskConfig(task="group_mul", group="S5", frac=0.6, split_seed=0),
        model=ModelConfig(model="mlp", n_layers=1, d_model=64, d_mlp=128, act_fn="relu"),
        optim=OptimConfig(optimizer="adamw", lr=3e-3, wd=1.0, beta1=0.9, beta2=0.98, warmup_steps=10, batch_size=0),
        train=TrainConfig(steps=5000, eval_every=50, seed=0),
        ckpt=CheckpointConfig(ckpt_floor=60),
    ),
    # Power et al.'s S5 table (x*y in S5) with a transformer cut to a 2-core CPU: 1 layer (not 2) of width 64 with
    # 4 heads x 16, d_mlp 256, no LayerNorm, 60% train (Chughtai et al.'s transformer fraction), AdamW lr 3e-3 wd 1
    # betas (0.9, 0.98), batches of 2048 (not 512), at most 12k steps, stopped 500 steps after generalising. The
    # seeds differ a lot (seed / batch seed 0, 1, 2): S_mem 2450, 1300, 5350; S_gen none (97.7% test accuracy at
    # 12k), 1450, 9500 (docs/cosets.md). Tried and dropped: 50% train (one seed
    # in three fit only 95% of its pairs in 6k steps); full batch (fit by ~300 steps, test accuracy 0.7% after
    # 2100); batches of 1024 at 40% (89% of the pairs fit after 5200 steps).
    "s5-transformer-cpu": RunConfig(
        task=TaskConfig(task="group_mul", group="S5", frac=0.6, split_seed=0),
        model=ModelConfig(model="transformer", n_layers=1, d_model=64, n_heads=4, d_head=16, d_mlp=256),
        optim=OptimConfig(optimizer="adamw", lr=3e-3, wd=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
                          batch_size=2048, float64_loss=False),
        train=TrainConfig(steps=12_000, eval_every=50, seed=0, stop_after_gen=500),
        ckpt=CheckpointConfig(ckpt_floor=60),
    ),
    # Fuangkawinsombut and Somsirivattana's blog "Grokking" (2023): (50, 2)-parity, 300 train / 100 test samples, one
    # hidden ReLU layer of width 500, lr 0.1, wd 0.01. The blog names neither loss nor optimiser; we take Merrill et
    # al.'s: hinge loss, SGD with batch 32 (L2 weight decay, no momentum, no warmup). Memorises by ~200 steps,
    # generalises by ~2k.
    "parity-blog": RunConfig(
        task=TaskConfig(task="parity", n_bits=50, k=2, n_train=300, n_test=100, split_seed=0),
        model=ModelConfig(model="mlp", n_layers=1, d_mlp=500, act_fn="relu"),
        optim=OptimConfig(optimizer="sgd", lr=0.1, wd=0.01, momentum=0.0, warmup_steps=0, batch_size=32,
                          float64_loss=False),
        train=TrainConfig(steps=10_000, eval_every=20, seed=0),
    ),
}
# Merrill et al. 2023: (40, 3)-parity, N = 1000 training samples (1000 test), one hidden ReLU layer of width 1000;
# their hinge loss and SGD (lr 0.1, batch 32, weight decay 0.01), which "parity-blog" borrows.
PRESETS["merrill2023"] = PRESETS["parity-blog"].replace(n_bits=40, k=3, n_train=1000, n_test=1000, d_mlp=1000,
                                                        steps=30_000, eval_every=50)

# Omnigrok (Liu, Michaud, Tegmark 2023). Teacher-student regression: a 5-100-100-5 tanh student on 100 Gaussian
# inputs labelled by a fixed teacher of the same shape. Its reduced landscape (python -m analyses.reduced_landscape
# --preset omnigrok-teacher) is Omnigrok's: Adam lr 3e-4 at fixed norm, no weight decay, 1e4 steps per alpha. A
# training run from this preset starts at 3x the standard init with weight decay 0.3, so it fits the training set
# at a large norm and reaches the low test loss only as the norm comes down to w_c.
PRESETS["omnigrok-teacher"] = RunConfig(
    task=TaskConfig(task="teacher", n_train=100, n_test=100, split_seed=0),
    model=ModelConfig(model="mlp", n_layers=2, d_mlp=100, act_fn="tanh", init_scale=3.0),
    optim=OptimConfig(optimizer="adamw", lr=3e-4, wd=0.3, warmup_steps=0, batch_size=0, float64_loss=False),
    train=TrainConfig(steps=30_000, eval_every=50, seed=1),
)
# Image classification with a large initialisation: an MLP with two hidden layers of 200 ReLUs (784-200-200-10 on
# MNIST, "depth 3" = three linear layers in Omnigrok's code), init scale alpha 8, MSE on one-hot targets, AdamW
# lr 1e-3, batch 200. Digits: scikit-learn's 8x8 images (shipped, offline), 1000 train / 797 test. Weight decay 0.1
# (Omnigrok's MNIST: 0.01) brings the norm down to where it generalises within 30k steps, a few minutes on a CPU.
PRESETS["omnigrok-digits"] = RunConfig(
    task=TaskConfig(task="digits", n_train=1000, split_seed=0),
    model=ModelConfig(model="mlp", n_layers=2, d_mlp=200, act_fn="relu", init_scale=8.0),
    optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=0.1, warmup_steps=0, batch_size=200, float64_loss=False),
    train=TrainConfig(steps=30_000, eval_every=100, seed=0),
)
# MNIST as Omnigrok trains it: the first 1000 training images (the whole test set), wd 0.01, 1e5 steps; pass
# --data-path DIR with the four IDX files.
PRESETS["omnigrok-mnist"] = RunConfig(
    task=TaskConfig(task="mnist", n_train=1000),
    model=ModelConfig(model="mlp", n_layers=2, d_mlp=200, act_fn="relu", init_scale=8.0),
    optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=0.01, warmup_steps=0, batch_size=200, float64_loss=False),
    train=TrainConfig(steps=100_000, eval_every=100, seed=0),
)
# Eliminating grokking on modular addition: Nanda's setup with the norm held at 0.8x its initial value after every
# step and no weight decay (Omnigrok: ~99% test accuracy after ~300 steps, against 8-9k steps with weight decay 1).
PRESETS["omnigrok-fixed-norm"] = PRESETS["nanda2023"].replace(wd=0.0, constrain_norm=0.8, warmup_steps=0,
                                                              steps=3000, eval_every=10)

# Sha, Wu and Yue, "Final Project: Grokking Phenomenon Reproduction", Fig. 1-4: (x+y) mod 97, 50% train, AdamW lr 1e-3
# betas (0.9, 0.98) wd 0.1, 10-step warmup, batch 512, 1e5 steps, dropout 0.1, three architectures: a 2-layer
# transformer of width 128 with 4 heads (pre-LN), a 2-layer LSTM of hidden size 128, an MLP with 2 hidden layers of 256
# (64-wide per-operand embeddings).
_ADD97 = RunConfig(
    task=TaskConfig(task="add", p=97, frac=0.5, split_seed=0),
    model=ModelConfig(model="transformer", n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512,
                      normalization_type="LN", dropout=0.1),
    optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=0.1, beta1=0.9, beta2=0.98, warmup_steps=10, batch_size=512,
                      float64_loss=False),
    train=TrainConfig(steps=100_000, eval_every=100, seed=0),
)
PRESETS["add97-transformer"] = _ADD97
PRESETS["add97-lstm"] = _ADD97.replace(model="lstm", n_layers=2, d_model=128)
PRESETS["add97-mlp"] = _ADD97.replace(model="mlp", n_layers=2, d_model=64, d_mlp=256)
# The same three on a 2-core CPU (analyses.report --scale cpu): (x+y) mod 59, 50% train, half the widths
# (transformer 1 layer of width 64, LSTM hidden 64, MLP 2 x 128), AdamW lr 3e-3 wd 1 (a shorter plateau), batch
# 512, dropout 0.1, 3000 steps.
_ADD_CPU = _ADD97.replace(p=59, n_layers=1, d_model=64, d_head=16, d_mlp=256, lr=3e-3, wd=1.0, steps=3000,
                          eval_every=25)
PRESETS["add-transformer-cpu"] = _ADD_CPU
PRESETS["add-lstm-cpu"] = _ADD_CPU.replace(model="lstm", n_layers=2, d_model=64)
PRESETS["add-mlp-cpu"] = _ADD_CPU.replace(model="mlp", n_layers=2, d_model=32, d_mlp=128)


# --- Nanda 2022's phase-change toy tasks (training.tasks.sequence) -----------------------------------------------------
# 5-digit addition, the model of the notebook's saved infinite-data run: 1 layer, d_model 128, 4 heads x 32, d_mlp
# 512, ReLU, no LN, AdamW wd 0.1 betas (0.9, 0.98), warmup 10, a fresh batch of 64 every step, 3000 steps, but lr
# 1e-3 where the notebook used 1e-4 (at 1e-4 only s5 and s4 changed phase within 3000 steps here). The train and
# test metrics are measured on fixed samples of 512 examples each.
PRESETS["digits5-infinite"] = RunConfig(
    task=TaskConfig(task="digit_add", n_digits=5, infinite=True, n_train=512, n_test=512, split_seed=0),
    model=ModelConfig(model="transformer", n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu"),
    optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=0.1, beta1=0.9, beta2=0.98, warmup_steps=10, batch_size=64,
                      float64_loss=False),
    train=TrainConfig(steps=3000, eval_every=20, seed=0),
)
# 700 fixed examples, full batch (the seed's slide), on a CPU budget: the model at half width (d_model 64, 4 heads
# x 16, d_mlp 256) and AdamW lr 1e-3 wd 3 instead of lr 1e-4 wd 0.1 (the notebook's run takes ~18k steps of the
# full-width model; at wd 1 the test loss was still ~1.9 after 4000 steps); float64 loss, so train losses far below
# float32's resolution are measured. Memorises by ~740 steps, the test loss falls ~2100-3800.
PRESETS["digits5-700"] = RunConfig(
    task=TaskConfig(task="digit_add", n_digits=5, n_train=700, n_test=512, split_seed=0),
    model=ModelConfig(model="transformer", n_layers=1, d_model=64, n_heads=4, d_head=16, d_mlp=256, act_fn="relu"),
    optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=3.0, beta1=0.9, beta2=0.98, warmup_steps=10, batch_size=0,
                      float64_loss=True),
    train=TrainConfig(steps=8000, eval_every=20, seed=0),
)
# Repeated subsequences, as the notebook: length 85, BOS + tokens 1..127, a 16-token subsequence 3 times; a 2-layer
# attention-only transformer, d_model 48, 4 heads x 12, no LN; AdamW wd 1 betas (0.9, 0.999), warmup 100, a fresh
# batch of 128 every step; metrics on fixed samples of 256 sequences. lr 3e-3, not the notebook's 1e-3: at 1e-3 the
# loss drop came at ~1000-1800 and reached only 3.3 by step 1500 (the notebook: 1.27 by 1000); at 3e-3 it comes at
# ~500-750, to 2.1 by 1000.
PRESETS["repeat-infinite"] = RunConfig(
    task=TaskConfig(task="repeat_subseq", seq_len=85, seq_vocab=128, repeat_len=16, n_repeats=3, infinite=True,
                    n_train=256, n_test=256, split_seed=0),
    model=ModelConfig(model="transformer", n_layers=2, d_model=48, n_heads=4, d_head=12, d_mlp=0),
    optim=OptimConfig(optimizer="adamw", lr=3e-3, wd=1.0, beta1=0.9, beta2=0.999, warmup_steps=100, batch_size=128,
                      float64_loss=False),
    train=TrainConfig(steps=1500, eval_every=25, seed=0),
)
# 512 fixed sequences, minibatches of 128, the notebook's 2-layer attention-only model and AdamW betas; it groks
# within 3500 steps (the notebook: ~190k). The changes against it, each found needed on a CPU:
# - 49 tokens with an 8-token subsequence 3 times (not 85 and 16; copy i inside the i-th 16-token interval): a third
#   of the step time (~70 ms on one thread), and 14 targets per sequence to memorise instead of 30;
# - lr 1e-2 (not 1e-3), warmup 50: memorisation by ~500 steps and the test-loss drop at ~2300; at lr 3e-3 (vocab
#   64) nothing generalised within 2000 steps, at wd 2 (or 3 at lr 3e-3) the model could not even memorise, at
#   beta2 0.98 the drop had not come by 3000; with vocab 64 it grokked at ~550, too soon after memorising to be a
#   plateau, and with vocab 512 (33 tokens) it memorised so well that no drop came within 3000 steps;
# - no Grokfast: with it the model memorised and generalised together (no plateau);
# - 3500 steps: Adam's loss spikes at lr 1e-2 begin after ~4400.
# After the drop the test accuracy is ~0.87, below the 0.95 of the same model on infinite data (docs/sequence.md).
PRESETS["repeat-512"] = RunConfig(
    task=TaskConfig(task="repeat_subseq", seq_len=49, seq_vocab=128, repeat_len=8, n_repeats=3, n_train=512,
                    n_test=512, split_seed=0),
    model=ModelConfig(model="transformer", n_layers=2, d_model=48, n_heads=4, d_head=12, d_mlp=0),
    optim=OptimConfig(optimizer="adamw", lr=1e-2, wd=1.0, beta1=0.9, beta2=0.999, warmup_steps=50, batch_size=128,
                      float64_loss=False),
    train=TrainConfig(steps=3500, eval_every=25, seed=0),
)
# max of 11 values in 0..31 (START x1..x11 END -> max at END), 500 training examples, full batch; a 1-layer
# transformer d_model 32, 2 heads x 16, d_mlp 128, AdamW lr 1e-3 wd 1.
PRESETS["max-element"] = RunConfig(
    task=TaskConfig(task="max_element", n_elements=11, n_values=32, n_train=500, n_test=1000, split_seed=0),
    model=ModelConfig(model="transformer", n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=128),
    optim=OptimConfig(optimizer="adamw", lr=1e-3, wd=1.0, beta1=0.9, beta2=0.98, warmup_steps=10, batch_size=0,
                      float64_loss=False),
    train=TrainConfig(steps=3000, eval_every=20, seed=0),
)


# What each preset is for, one line each: the first column of the README's table.
ABOUT: dict[str, str] = {
    "default": "CPU-sized grokking, under a minute",
    "nanda2023": "Nanda et al. 2023",
    "power2022": "Power et al. 2022 (pre-LN)",
    "power2022-s5": "Power et al. 2022's S5 table",
    "chughtai-s5": "Chughtai et al. 2023",
    "s5-cpu": "S5 on a 2-core CPU",
    "s5-transformer-cpu": "S5 with a transformer on a CPU (slow, seed-dependent)",
    "parity-blog": "Fuangkawinsombut and Somsirivattana's parity",
    "merrill2023": "Merrill et al. 2023",
    "omnigrok-teacher": "Omnigrok: teacher-student, large init",
    "omnigrok-digits": "Omnigrok: 8x8 digits, large init",
    "omnigrok-mnist": "Omnigrok: MNIST (`--data-path`)",
    "omnigrok-fixed-norm": "Omnigrok: no grokking at a fixed norm",
    "add97-transformer": "Sha, Wu and Yue's transformer",
    "add97-lstm": "Sha, Wu and Yue's LSTM",
    "add97-mlp": "Sha, Wu and Yue's MLP",
    "add-transformer-cpu": "the add97 transformer on a CPU",
    "add-lstm-cpu": "the add97 LSTM on a CPU",
    "add-mlp-cpu": "the add97 MLP on a CPU",
    "digits5-infinite": "5-digit addition, infinite data (Nanda 2022)",
    "digits5-700": "5-digit addition on 700 examples",
    "repeat-infinite": "repeated subsequences, infinite data",
    "repeat-512": "repeated subsequences on 512 (grokking)",
    "max-element": "max of 11 values",
}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(sorted(PRESETS))})")
    return PRESETS[name]


# --- the README's table --------------------------------------------------------------------------------------

# values that mean "off" or "as usual", left out of the table so that a row shows what sets the preset apart
_QUIET = {"split_seed": None, "dropout": 0.0, "init_scale": 1.0, "normalization_type": "none", "act_fn": "relu",
          "label_noise": 0.0, "repeat_interval": 0, "infinite": False, "n_test": 0, "data_path": ""}
_BARE = ("normalization_type", "act_fn")  # their value says what they are ("LN", "tanh")


def _num(v) -> str:
    return f"{v:.0e}".replace("e-0", "e-") if isinstance(v, float) and 0 < abs(v) < 0.01 else f"{v:g}"


def _pairs(section, fields, skip=()) -> str:
    shown = [(f, getattr(section, f)) for f in fields if f not in skip]
    return ", ".join(f if v is True else str(v) if f in _BARE else f"{f} {_num(v) if isinstance(v, float) else v}"
                     for f, v in shown if f not in _QUIET or (_QUIET[f] is not None and v != _QUIET[f]))


def settings(cfg: RunConfig) -> tuple[str, str, str]:
    """(task, model, training) of a config in a few words, from the fields its task, model and transforms read."""
    t, m, o = cfg.task, cfg.model, cfg.optim
    vectors = task_spec(t.task).family == "vector"  # the MLP reads the vectors directly: d_model is not used
    task = f"{t.task}: {_pairs(t, task_spec(t.task).fields)}"
    model = f"{m.model}: {_pairs(m, model_spec(m.model).fields, ('d_model',) if vectors else ())}"
    opt = [f"{o.optimizer} lr {_num(o.lr)} wd {_num(o.wd)}"]
    opt += [f"betas ({o.beta1:g}, {o.beta2:g})"] * (o.optimizer != "sgd" and (o.beta1, o.beta2) != (0.9, 0.98))
    opt += [f"momentum {o.momentum:g}"] * bool(o.momentum) + [f"warmup {o.warmup_steps}"] * bool(o.warmup_steps)
    opt += [f"batch {o.batch_size}" if o.batch_size else "full batch"] + ["float64 loss"] * o.float64_loss
    opt += [f"loss {o.loss}"] * (o.loss != "task")
    opt += [_pairs(o, spec.fields) for spec in transform_specs() if spec.active(o)]
    return task, model, ", ".join(opt + [f"{cfg.train.steps} steps"])


def markdown_table() -> str:
    """Every preset as a Markdown table: the README's, verbatim."""
    missing = sorted(set(PRESETS) - set(ABOUT))
    if missing:
        raise ConfigError(f"preset(s) {', '.join(missing)} have no line in training.presets.ABOUT")
    rows = ["| preset | what | task | model | training (AdamW/Adam betas (0.9, 0.98) unless given) |",
            "|---|---|---|---|---|"]
    rows += [f"| `{name}` | {ABOUT[name]} | " + " | ".join(settings(cfg)) + " |" for name, cfg in PRESETS.items()]
    return "\n".join(rows) + "\n"


def make_parser() -> Parser:
    p = Parser(prog="training.presets", description="List the named run configs.")
    p.add_argument("--markdown", action="store_true", help="print the README's presets table")
    return p


def body(args) -> int:
    print(markdown_table() if args.markdown else "\n".join(PRESETS), end="" if args.markdown else "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_entry("training.presets", make_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
