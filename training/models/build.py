"""build_model: the model a config names, through its spec, sized to the task and initialised."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from training.config import ModelConfig
from training.models.transformer import Transformer
from training.registry import check_pairing, model_spec
from training.tasks.data import TaskData


def scoring_module(model: nn.Module) -> nn.Module:
    """`model` as the single step path calls it (`training.models.batched.generic_forward`, through functional_call): for
    the transformer a shallow copy sharing its submodules (so the same parameter names and maths) whose forward is
    `scored_logits`; any other model as it is (its forward already returns what the loss reads)."""
    if not isinstance(model, Transformer):
        return model
    view = copy.copy(model)
    view.forward = view.scored_logits
    return view


def build_model(cfg: ModelConfig, data: TaskData, seed: int = 0) -> nn.Module:
    """The model for `cfg` (its spec in training.models.specs) sized to the task, initialised from `seed` and scaled
    by `cfg.init_scale`."""
    spec = model_spec(cfg.model)
    check_pairing(spec, data.name, vectors=data.d_vocab == 0, sequence=data.structure.get("kind") == "sequence")
    model = spec.build(cfg, data)
    model.init_weights(torch.Generator().manual_seed(seed))
    if cfg.init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(cfg.init_scale)
    return model
