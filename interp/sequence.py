"""Probes for the sequence tasks (Nanda 2022's phase-change toy tasks): per-target loss curves with each target's
phase change, and induction-head scores per attention head.

    >>> import interp
    >>> from interp import sequence as sq
    >>> run = interp.load_run("checkpoints/repeat-inf")
    >>> curves = sq.per_target_curves(run.metrics)
    >>> sq.phase_change_steps(curves.steps, curves.test_loss, curves.names)["c2p0"].step
    >>> batch = sq.batch_for(run.data.structure, run.data.d_vocab, run.data.n_ctx)   # [BOS] + R + R, seeded
    >>> sq.induction_scores(run.model(run.steps[-1]), batch)["prefix_matching"]     # [n_layers, n_heads]

Phase change (one per curve): the log10 loss is smoothed by a running median (a noise spike or a single bad
evaluation moves a median by at most one rank); the one split of the smoothed curve into an earlier and a later
part that explains the most variance (least squares, the earlier part higher) separates the plateau from what the
loss falls to; the plateau and final levels are the medians of the two parts; the phase-change step is the first
evaluation at or below the level halfway between them (in log loss) at the downward crossing nearest that split;
`start` and `end` are where the smoothed curve leaves the top tenth and enters the bottom tenth of the drop. A fall
smaller than `min_drop` decades (default: a factor of 1.25 in loss; the repeat task's whole fall, from the
uniform ln 127 = 4.84 to ~3, is a factor of ~1.6) is no phase change (None). The split ignores a
short transient from the initialisation (a few points weigh little against a plateau), and a rise before the fall
(a finite-data test loss that peaks before it groks) only raises the plateau level.

Induction scores (every head, from one batch of seeded random sequences; attention patterns from
`run_with_cache`, weights through the model interface `W_E`, `W_V`, `W_O`, `W_U`):

- `previous_token`, `induction_detect`: TransformerLens `detect_head` with error measure "mul": the attention mass
  on the detection pattern over all the mass (every query row), for the previous-token pattern D[i, i-1] = 1 and
  the induction pattern D[i, j] = 1 when tok[j-1] = tok[i], j <= i. On [BOS] + R + R the induction score is ~0.5 at
  most: only the second copy's rows can match.
- `stripe`: the classic score of the TransformerLens demo and ARENA, the mean of A[q, q - (n - 1)] over the
  queries q of the later copies (n = len(R)): attention to the token after the previous copy of the current one.
- `prefix_matching` (Olsson et al. 2022): the mean, over the queries whose token occurred before, of the attention
  to the positions right after its earlier occurrences (0..1).
- `copying` (Olsson et al. 2022): for each content token t, the direct-path logits W_E[t] W_V W_O W_U of the head,
  mean-subtracted over the outputs and ReLU'd; the share of that increase falling on t itself, averaged over t
  (0..1; a head that copies gives ~1, a random OV circuit ~1/(number of outputs raised), about 2/d_vocab_out).
- `copying_eigen` (Elhage et al. 2021): sum(lambda) / sum(|lambda|) over the eigenvalues of the same direct-path
  OV circuit restricted to the content tokens, -1..1, positive for a copying head.

Over checkpoints: `induction_onset_steps` gives each head's first checkpoint with a score at or above a threshold;
`induction_rise_steps` needs no threshold: the phase-change rule above applied to the score itself (linear units,
rising), the checkpoint where it first reaches halfway between its earlier and later levels.

The sequences are drawn without replacement inside each copy of R when the vocabulary allows, so every token's
earlier occurrence is unique and the stripe, the detection pattern and the prefix positions coincide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

BY_TARGET = {"train_loss": "train_loss_by_target", "test_loss": "test_loss_by_target",
             "train_acc": "train_acc_by_target", "test_acc": "test_acc_by_target"}
ATTENTION_SCORES = ("previous_token", "induction_detect", "stripe", "prefix_matching")
WEIGHT_SCORES = ("copying", "copying_eigen")
SCORES = ATTENTION_SCORES + WEIGHT_SCORES
MIN_DROP = math.log10(1.25)  # decades of loss: the smallest fall that counts as a phase change


# --- per-target curves and their phase changes -----------------------------------------------------------------


@dataclass
class TargetCurves:
    """Per-target metrics over the evaluations: `steps` [T]; `train_loss` ... `test_acc` [n_targets, T] (NaN where
    a row lacks the value), target k named `names[k]`; `overall` the rows' own train/test loss and accuracy [T]."""

    steps: np.ndarray
    names: list[str]
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    overall: dict[str, np.ndarray] = field(default_factory=dict)


def _number(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def per_target_curves(metrics_rows: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> TargetCurves:
    """The `*_by_target` dicts of metrics.jsonl rows as arrays. `names`: the targets to take, in this order
    (default: every name met, in the order first met). Rows without per-target metrics give NaN columns."""
    if names is None:
        seen: dict[str, None] = {}
        for row in metrics_rows:
            for key in BY_TARGET.values():
                seen.update(dict.fromkeys(row.get(key) or {}))
        names = list(seen)
    names = list(names)
    steps = np.array([int(r["step"]) for r in metrics_rows], dtype=np.int64)
    arrays = {}
    for short, key in BY_TARGET.items():
        a = np.full((len(names), len(steps)), np.nan)
        for t, row in enumerate(metrics_rows):
            by = row.get(key) or {}
            if isinstance(by, dict):
                for k, name in enumerate(names):
                    a[k, t] = _number(by.get(name))
        arrays[short] = a
    overall = {short: np.array([_number(r.get(short)) for r in metrics_rows]) for short in BY_TARGET}
    return TargetCurves(steps, names, overall=overall, **arrays)


@dataclass
class PhaseChange:
    """One curve's phase change: `step` (the first evaluation at or below halfway, in log loss, between the
    plateau and the final level), the drop's `start` and `end` steps, and the two levels (in loss units)."""

    step: int
    start: int
    end: int
    plateau: float
    final: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def running_median(y: np.ndarray, window: int) -> np.ndarray:
    """Centred running median over `window` points (odd; shrinking at the ends)."""
    half = max(int(window), 1) // 2
    return np.array([np.median(y[max(0, i - half): i + half + 1]) for i in range(len(y))])


def best_drop_split(s: np.ndarray) -> int | None:
    """The index c (1 <= c < len(s)) splitting s into s[:c] and s[c:] with the least squared deviation from the two
    means, among the splits whose earlier mean is the higher; None when there is none."""
    n = len(s)
    if n < 2:
        return None
    c = np.arange(1, n)
    csum = np.cumsum(s)
    m1 = csum[:-1] / c
    m2 = (csum[-1] - csum[:-1]) / (n - c)
    gain = c * (n - c) / n * (m1 - m2) ** 2  # the variance the split explains
    gain[m1 <= m2] = -1.0
    best = int(np.argmax(gain))
    return int(c[best]) if gain[best] > 0 else None


def halfway_fall(steps: np.ndarray, s: np.ndarray, min_change: float) -> PhaseChange | None:
    """The rule of the module docstring on a smoothed series `s` that falls (levels in the units of `s`)."""
    c = best_drop_split(s)
    if c is None:
        return None
    hi, lo = float(np.median(s[:c])), float(np.median(s[c:]))
    if hi - lo < min_change:
        return None
    mid, tenth = (hi + lo) / 2, (hi - lo) / 10
    crossings = np.nonzero((s[:-1] > mid) & (s[1:] <= mid))[0] + 1  # first index at or below mid
    if not len(crossings):  # cannot happen (s[:c] reaches hi, s[c:] reaches lo), kept as a guard
        return None
    j = int(crossings[np.argmin(np.abs(crossings - c))])
    start = j - 1
    while start > 0 and s[start] < hi - tenth:
        start -= 1
    end = j
    while end < len(s) - 1 and s[end] > lo + tenth:
        end += 1
    return PhaseChange(int(steps[j]), int(steps[start]), int(steps[end]), hi, lo)


def phase_change(steps: Sequence[int], loss: Sequence[float], window: int = 5,
                 min_drop: float = MIN_DROP) -> PhaseChange | None:
    """The phase change of one loss curve (module docstring), or None when the loss never falls by `min_drop`
    decades. Non-finite or non-positive losses (a diverged evaluation, a missing target) are skipped."""
    steps, loss = np.asarray(steps), np.asarray(loss, dtype=float)
    ok = np.isfinite(loss) & (loss > 0)
    steps, loss = steps[ok], loss[ok]
    if len(loss) < 3:
        return None
    pc = halfway_fall(steps, running_median(np.log10(loss), window), min_drop)
    if pc is not None:
        pc.plateau, pc.final = float(10**pc.plateau), float(10**pc.final)
    return pc


def score_rise(steps: Sequence[int], values: Sequence[float], window: int = 3,
               min_rise: float = 0.05) -> PhaseChange | None:
    """The same rule for a score that rises (linear units): the step where it first reaches halfway between its
    earlier and later levels (`plateau` = the earlier level, `final` the later), or None for a rise < `min_rise`."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if len(values) < 3:
        return None
    pc = halfway_fall(steps, -running_median(values, window), min_rise)
    if pc is not None:
        pc.plateau, pc.final = -pc.plateau, -pc.final
    return pc


def phase_change_steps(steps: Sequence[int], losses: np.ndarray, names: Sequence[str], window: int = 5,
                       min_drop: float = MIN_DROP) -> dict[str, PhaseChange | None]:
    """{name: PhaseChange or None} for each curve of `losses` [n_targets, T] (e.g. `TargetCurves.test_loss`)."""
    return {name: phase_change(steps, row, window, min_drop) for name, row in zip(names, np.asarray(losses))}


# --- repeated random sequences and their detection patterns ---------------------------------------------------


@dataclass
class RepeatBatch:
    """[BOS] + R + R (+ R ...) sequences and the masks every attention score needs (computed once, reused for every
    checkpoint). tokens [B, n]; R of `half_len` tokens starts at `first` (1 after a BOS, else 0); content tokens
    are `low..high-1`. Masks are bool: `previous` [n, n], `induction` [B, n, n] (tok[j-1] = tok[i], 1 <= j <= i),
    `repeated` [B, n] (the query's token occurred before), `stripe_q` / `stripe_k` [n_stripe] the later copies'
    queries and the positions after their previous copies."""

    tokens: torch.Tensor
    half_len: int
    n_copies: int
    first: int
    low: int
    high: int
    previous: torch.Tensor
    induction: torch.Tensor
    repeated: torch.Tensor
    stripe_q: torch.Tensor
    stripe_k: torch.Tensor


def repeated_tokens(n_batch: int, half_len: int, low: int, high: int, bos: int | None = None, n_copies: int = 2,
                    seed: int = 0) -> torch.Tensor:
    """[n_batch, (1 if bos is not None) + n_copies * half_len]: [BOS] + R * n_copies, R uniform in low..high-1
    (distinct tokens within R when high - low >= half_len), seeded."""
    if high - low < 1 or half_len < 1 or n_copies < 2:
        raise ValueError(f"need at least one content token, half_len >= 1 and 2 copies (got {low}..{high - 1}, "
                         f"half_len {half_len}, {n_copies} copies)")
    g = torch.Generator().manual_seed(seed)
    if high - low >= half_len:
        R = torch.stack([torch.randperm(high - low, generator=g)[:half_len] for _ in range(n_batch)]) + low
    else:
        R = torch.randint(low, high, (n_batch, half_len), generator=g)
    parts = [R] * n_copies
    if bos is not None:
        parts.insert(0, torch.full((n_batch, 1), bos, dtype=torch.long))
    return torch.cat(parts, dim=1)


def detection_masks(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(previous [n, n], induction [B, n, n], repeated [B, n]) as TransformerLens' head detector defines them."""
    n = tokens.shape[1]
    previous = torch.zeros(n, n, dtype=torch.bool)
    previous[torch.arange(1, n), torch.arange(n - 1)] = True
    earlier = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)  # j < i
    duplicate = (tokens[:, :, None] == tokens[:, None, :]) & earlier  # [B, i, j]: tok_j = tok_i, j < i
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # key j + 1 follows an earlier occurrence j of the query's token
    return previous, induction, duplicate.any(-1)


def repeated_batch(n_batch: int, half_len: int, low: int, high: int, bos: int | None = None, n_copies: int = 2,
                   seed: int = 0) -> RepeatBatch:
    """The sequences of `repeated_tokens` with their masks."""
    tokens = repeated_tokens(n_batch, half_len, low, high, bos, n_copies, seed)
    previous, induction, repeated = detection_masks(tokens)
    first = 0 if bos is None else 1
    q = torch.arange(first + half_len, first + n_copies * half_len)
    return RepeatBatch(tokens, half_len, n_copies, first, low, high, previous, induction, repeated, q,
                       q - half_len + 1)


def batch_for(structure: dict[str, Any], d_vocab: int, n_ctx: int, n_batch: int = 64, half_len: int | None = None,
              seed: int = 0) -> RepeatBatch:
    """[BOS] + R + R for a sequence task (`run.data.structure`): content tokens are every token but BOS (the
    repeat task's 1..d_vocab-1). R is `half_len` long; by default the repeat task's `repeat_interval` (the mean
    distance between its copies: a model trained on it need not generalise to distances it never saw), else as
    long as the context allows."""
    bos = structure.get("bos")
    first = 0 if bos is None else 1
    longest = (n_ctx - first) // 2
    if half_len is None:
        half_len = min(structure.get("repeat_interval") or longest, longest)
    if not 1 <= half_len <= longest:
        raise ValueError(f"half_len must be in [1, {longest}] for a context of {n_ctx}, got {half_len}")
    low = 1 if bos == 0 else 0
    high = bos if bos is not None and bos > 0 else d_vocab  # a BOS at the top of the vocabulary (max_element)
    return repeated_batch(n_batch, half_len, low, high, bos, 2, seed)


# --- scores -----------------------------------------------------------------------------------------------------


def attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """[n_layers, batch, n_heads, q, k] every layer's attention pattern (`model.attention_hooks`)."""
    names = list(model.attention_hooks)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[name] for name in names])


def attention_scores(patterns: torch.Tensor, batch: RepeatBatch) -> dict[str, np.ndarray]:
    """The attention scores of every head ([n_layers, n_heads] each) from patterns [n_layers, B, n_heads, q, k]."""
    A = patterns.double()
    mass = A.sum((1, 3, 4))  # [L, H]: every row's total (B * n for softmax rows)
    prev = (A * batch.previous).sum((1, 3, 4)) / mass
    on_induction = (A * batch.induction[:, None]).sum(-1)  # [L, B, H, q]
    detect = on_induction.sum((1, 3)) / mass
    rows = batch.repeated[:, None].expand_as(on_induction[0])  # [B, H, q]
    prefix = (on_induction * rows).sum((1, 3)) / rows.sum((0, 2)).clamp(min=1)
    stripe = A[..., batch.stripe_q, batch.stripe_k].mean((1, 3))
    return {"previous_token": prev.numpy(), "induction_detect": detect.numpy(), "stripe": stripe.numpy(),
            "prefix_matching": prefix.numpy()}


def ov_direct_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """[n_layers, n_heads, len(tokens), d_vocab_out] each head's direct-path logits W_E[t] W_V W_O W_U."""
    with torch.no_grad():
        E = model.W_E[tokens].double()
        return (E @ model.W_V.double()) @ (model.W_O.double() @ model.W_U.double())


def copying_scores(model, tokens: torch.Tensor) -> dict[str, np.ndarray]:
    """`copying` and `copying_eigen` [n_layers, n_heads] over the content `tokens` (output id = token id)."""
    logits = ov_direct_logits(model, tokens)
    if int(tokens.max()) >= logits.shape[-1]:
        raise ValueError(f"token {int(tokens.max())} has no output of its own (d_vocab_out {logits.shape[-1]})")
    raised = torch.relu(logits - logits.mean(-1, keepdim=True))
    on_self = raised[..., torch.arange(len(tokens)), tokens]  # [L, H, n_tokens]
    share = torch.where(raised.sum(-1) > 0, on_self / raised.sum(-1).clamp(min=1e-300), torch.zeros_like(on_self))
    lam = torch.linalg.eigvals(logits[..., tokens])  # [L, H, n_tokens]: the circuit restricted to the tokens
    total = lam.abs().sum(-1)
    eigen = torch.where(total > 0, lam.real.sum(-1) / total.clamp(min=1e-300), torch.zeros_like(total))
    return {"copying": share.mean(-1).numpy(), "copying_eigen": eigen.numpy()}


def induction_scores(model, batch: RepeatBatch) -> dict[str, np.ndarray]:
    """Every score of the module docstring, [n_layers, n_heads] each, for one model (checkpoint)."""
    scores = attention_scores(attention_patterns(model, batch.tokens), batch)
    scores.update(copying_scores(model, torch.arange(batch.low, batch.high)))
    return scores


def scores_over_checkpoints(models: Iterable[tuple[int, Any]], batch: RepeatBatch) -> tuple[list[int], dict]:
    """(steps, {score: [T, n_layers, n_heads]}) over (step, model) pairs, e.g. `run.iter_models()` (one model
    reloaded in place: each checkpoint is scored before the next is loaded)."""
    steps, rows = [], {k: [] for k in SCORES}
    for step, model in models:
        steps.append(int(step))
        for k, v in induction_scores(model, batch).items():
            rows[k].append(v)
    return steps, {k: np.stack(v) if v else np.zeros((0, 0, 0)) for k, v in rows.items()}


def induction_onset_steps(steps: Sequence[int], scores: np.ndarray, threshold: float) -> list[list[int | None]]:
    """[n_layers][n_heads]: the first checkpoint step at which each head's score [T, n_layers, n_heads] is at or
    above `threshold` (None when it never is)."""
    scores = np.asarray(scores)
    over = scores >= threshold
    return [[int(steps[int(np.argmax(over[:, l, h]))]) if over[:, l, h].any() else None
             for h in range(scores.shape[2])] for l in range(scores.shape[1])]


def induction_rise_steps(steps: Sequence[int], scores: np.ndarray, window: int = 3,
                         min_rise: float = 0.05) -> list[list[PhaseChange | None]]:
    """[n_layers][n_heads] each head's `score_rise` over checkpoints (scores [T, n_layers, n_heads]): where its
    score climbs, with no threshold to choose."""
    scores = np.asarray(scores)
    return [[score_rise(steps, scores[:, l, h], window, min_rise) for h in range(scores.shape[2])]
            for l in range(scores.shape[1])]


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"
