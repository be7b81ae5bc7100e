"""The built-in transforms' specs (no torch): the fields each reads, the order it acts in, what it keeps.

The classes live in training.optim.transforms.base, and `training.optim.transforms.base.build_transforms` builds the ones a
Trainer's configs switch on through these specs, in this order: weight noise around the forward, then on the
gradient Grokfast's filter and ⊥Grad, then on the parameters decay to init and the norm constraint.
"""

from __future__ import annotations

from training.specs import TransformSpec, register_transform

register_transform(TransformSpec(
    "weight_noise", ("weight_noise",), 10, lambda o: o.weight_noise > 0, "training.optim.transforms.weight_noise:build_weight_noise",
    state="a noise generator per member", copies=lambda o: int(o.weight_noise > 0),
    methods={"weight-noise": {"weight_noise": 0.01}},
    doc="Power et al.'s weight noise: each training forward sees perturbed weights"))
register_transform(TransformSpec(
    "grokfast", ("grokfast", "grokfast_alpha", "grokfast_lamb", "grokfast_window"), 20,
    lambda o: o.grokfast != "none", "training.optim.transforms.grokfast:build_grokfast",
    state="the filtered gradient (ema) or the last window of gradients (ma)",
    copies=lambda o: {"ema": 1, "ma": o.grokfast_window}.get(o.grokfast, 0),
    shape=lambda o: (o.grokfast, o.grokfast_window if o.grokfast == "ma" else 0),
    methods={"grokfast-ema": {"grokfast": "ema", "grokfast_alpha": 0.98, "grokfast_lamb": 2.0},  # Lee et al.'s
             "grokfast-ma": {"grokfast": "ma", "grokfast_window": 100, "grokfast_lamb": 5.0}},  # settings
    doc="Grokfast's gradient filter (Lee et al. 2024): amplify the slow part of the gradient"))
register_transform(TransformSpec(
    "perp_grad", ("perp_grad",), 30, lambda o: bool(o.perp_grad), "training.optim.transforms.perp_grad:build_perp_grad",
    methods={"perp-adamw": {"perp_grad": True, "wd": 0.0}},  # Prieto et al.: groks without weight decay
    doc="⊥Grad (Prieto et al. 2025): drop each gradient's component along its weights"))
register_transform(TransformSpec(
    "decay_to_init", ("decay_to_init",), 40, lambda o: bool(o.decay_to_init),
    "training.optim.transforms.decay_to_init:build_decay_to_init", state="the initial weights (rebuilt from the seed)",
    copies=lambda o: int(o.decay_to_init), methods={"decay-to-init": {"decay_to_init": True}},
    doc="weight decay towards the initial weights (Power et al.)"))
register_transform(TransformSpec(
    "norm", ("constrain_norm",), 50, lambda o: o.constrain_norm > 0, "training.optim.transforms.norm:build_norm_constraint",
    state="the target norm per member", sets_init=True,
    methods={"constrain-norm": {"constrain_norm": 0.8, "wd": 0.0}},  # Omnigrok: fixed norm, no weight decay
    doc="Omnigrok's fixed-norm training: rescale to constrain_norm x the initial norm after every step"))
