"""Losses and accuracy, for one model's outputs [batch, out] or a stack of members' outputs [K, batch, out].

`compute_loss`/`accuracy` reduce over the batch (probes, the landscape); `example_losses`/`example_correct` keep
one value per example so that the Trainer can weight each member's examples by 1/its own training-set size
(members of an ensemble with different data fractions, padded to one tensor, each get exactly their own mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.constants import EVAL_CHUNK, IGNORE  # noqa: F401  (EVAL_CHUNK re-exported)
from training.errors import ConfigError

LOSSES = ("ce", "mse", "hinge", "stablemax", "seq_ce")
SEQ = "seq_ce"  # sequence tasks: cross-entropy at each target position, labels [..., pos] with IGNORE elsewhere


def target_losses(out: torch.Tensor, labels: torch.Tensor, float64: bool) -> torch.Tensor:
    """Cross-entropy per position [..., pos], 0 where labels are IGNORE (sequence tasks)."""
    out = out.double() if float64 else out
    return F.cross_entropy(out.flatten(0, -2), labels.flatten(), reduction="none",
                           ignore_index=IGNORE).view(labels.shape)


def stablemax_log_probs(out: torch.Tensor) -> torch.Tensor:
    """log of StableMax (Prieto et al. 2025): s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0, p_i = s_i / sum_j s_j.
    s grows linearly, so probabilities cannot round to exactly 1 and the loss to 0 as softmax's do."""
    s = torch.where(out >= 0, out + 1, 1 / (1 - torch.clamp(out, max=0)))  # clamp: no inf in the unused branch
    return torch.log(s / s.sum(-1, keepdim=True))


def softmax_collapse(out: torch.Tensor, labels: torch.Tensor, kind: str = "ce") -> float:
    """Share of examples whose float32 softmax cross-entropy is exactly 0 (Prieto et al.'s softmax collapse: the
    correct logit so far ahead that float32 rounds its probability to 1, and those examples give no gradient).
    Sequence tasks: the share of target tokens."""
    if kind == SEQ:
        mask = labels != IGNORE
        return (target_losses(out.float(), labels, False)[mask] == 0).float().mean().item()
    return (F.cross_entropy(out.float(), labels, reduction="none") == 0).float().mean().item()


def example_losses(out: torch.Tensor, labels: torch.Tensor, kind: str, float64: bool) -> torch.Tensor:
    """Per-example loss, shape `out.shape[:-1]`; labels of shape `out.shape[:-1]` (or [..., d_out] for regression).
    Sequence tasks (labels [..., pos]): the mean over the example's targets, shape `labels.shape[:-1]`."""
    if kind == SEQ:
        n = (labels != IGNORE).sum(-1).clamp(min=1)
        return target_losses(out, labels, float64).sum(-1) / n
    if float64:
        out = out.double()
    if kind == "ce":
        return F.cross_entropy(out.flatten(0, -2), labels.flatten(), reduction="none").view(out.shape[:-1])
    if kind == "stablemax":
        return -stablemax_log_probs(out).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if kind == "mse":
        target = F.one_hot(labels, out.shape[-1]).to(out.dtype) if labels.dtype == torch.long else labels.to(out.dtype)
        return ((out - target) ** 2).sum(-1)
    if kind == "hinge":  # binary labels in {0, 1}, one output
        y = labels.to(out.dtype) * 2 - 1
        return torch.clamp(1 - y * out.squeeze(-1), min=0)
    raise ConfigError(f"unknown loss '{kind}'")


def example_correct(out: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor | None:
    """Per-example 0/1 correctness (bool), or None for regression. Sequence tasks: per position [..., pos], True
    where the target is predicted (and at every position that is not a target)."""
    if kind == SEQ:
        return (out.argmax(-1) == labels) | (labels == IGNORE)
    if labels.dtype != torch.long:
        return None
    if kind == "hinge":
        return (out.squeeze(-1) > 0).long() == labels
    return out.argmax(-1) == labels


def compute_loss(out: torch.Tensor, labels: torch.Tensor, kind: str, float64: bool) -> torch.Tensor:
    """Mean loss over a batch (sequence tasks: over every target position)."""
    if kind == SEQ:
        return target_losses(out, labels, float64).sum() / (labels != IGNORE).sum().clamp(min=1)
    if float64:
        out = out.double()
    if kind == "ce":
        return F.cross_entropy(out, labels)
    if kind in LOSSES:
        return example_losses(out, labels, kind, False).mean()
    raise ConfigError(f"unknown loss '{kind}'")


def accuracy(out: torch.Tensor, labels: torch.Tensor, kind: str) -> float | None:
    """Share of examples right (sequence tasks: of target tokens right)."""
    if kind == SEQ:
        mask = labels != IGNORE
        return ((out.argmax(-1) == labels) & mask).sum().item() / max(int(mask.sum()), 1)
    correct = example_correct(out, labels, kind)
    return None if correct is None else correct.float().mean().item()


def target_metrics(out: torch.Tensor, labels: torch.Tensor, float64: bool) -> tuple[list, list, float]:
    """Sequence tasks, logits [n, pos, classes] and labels [n, pos] with the same number of targets per example:
    (loss per target, accuracy per target, share of examples with every target right); target k is each
    example's k-th target in position order."""
    mask = labels != IGNORE
    n, T = labels.shape[0], int(mask[0].sum())
    losses = target_losses(out, labels, float64)[mask].view(n, T)
    correct = (out.argmax(-1) == labels)[mask].view(n, T)
    return losses.mean(0).tolist(), correct.double().mean(0).tolist(), correct.all(-1).double().mean().item()
