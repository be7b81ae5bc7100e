"""Sequence tasks (Nanda 2022's phase-change toy tasks): targets at several positions of one sequence.

Labels are [N, n_ctx] long, the token the logits at that position must predict, -100 (cross-entropy's ignore
index) where nothing is predicted. Every example has the same number of targets, and the k-th target of an example
(in position order) is `structure["target_names"][k]`, so `labels[labels != -100].view(N, n_targets)` lines the
targets up by name.

- `digit_add`: `x_{n-1}..x_0 + y_{n-1}..y_0 = s_n..s_0` ('+' = 10, '=' = 11), answer most-significant digit first;
  the logits at positions 2n+1..3n+1 ('=' and the answer digits but the last) predict s_n..s_0 (names "s5".."s0").
- `repeat_subseq`: position 0 = BOS (0), the others uniform in 1..seq_vocab-1; a subsequence R of repeat_len tokens
  is written n_repeats times, copy i starting uniformly inside the i-th interval of repeat_interval tokens after
  BOS, placed so that it ends inside it too. The logits at the first repeat_len - 1 positions of copies 2..n
  predict the copy's next token ("c2p0".."c2p14", "c3p0".."c3p14": copy c, position j predicts R[j + 1]).
- `max_element`: `START x_1..x_n END` (START = n_values, END = n_values + 1, values 0..n_values-1); the logits at
  END predict max(x) (name "max").

Finite mode: n_train + n_test distinct inputs drawn from the split seed, the first n_train for training.
Infinite mode: the training batch of step s is drawn from numpy's SeedSequence (split_seed, 0, batch_seed, s), a
pure function of the config and the step, so a resumed run sees the same batches with no extra state. The
TaskData then holds two fixed sets drawn the same way from streams of their own: n_train examples on which the
train metrics are measured (fresh samples of the training distribution, not examples trained on) and the n_test
examples of the test set.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from training.constants import IGNORE
from training.errors import ConfigError
from training.tasks.data import TaskData
from training.tasks.specs import SEQ_N_TEST, SEQ_N_TRAIN, repeat_interval, sequence_layout

BATCH_STREAM, TEST_STREAM, TRAIN_EVAL_STREAM, FINITE_STREAM = 0, 1, 2, 3

Draw = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]  # (rng, n) -> (inputs, labels)


def digit_draw(cfg) -> Draw:
    nd = cfg.n_digits

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = rng.integers(0, 10, (n, nd)), rng.integers(0, 10, (n, nd))  # most significant digit first
        s = np.zeros((n, nd + 1), dtype=np.int64)
        carry = np.zeros(n, dtype=np.int64)
        for i in range(nd - 1, -1, -1):  # schoolbook addition, least significant digit first
            total = x[:, i] + y[:, i] + carry
            s[:, i + 1], carry = total % 10, total // 10
        s[:, 0] = carry
        tokens = np.concatenate([x, np.full((n, 1), 10), y, np.full((n, 1), 11), s], axis=1)
        labels = np.full_like(tokens, IGNORE)
        labels[:, 2 * nd + 1: 3 * nd + 2] = s  # position p predicts token p + 1
        return tokens, labels

    return draw


def repeat_draw(cfg) -> Draw:
    L, V, rl, nr, width = cfg.seq_len, cfg.seq_vocab, cfg.repeat_len, cfg.n_repeats, repeat_interval(cfg)

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = rng.integers(1, V, (n, L))
        tokens[:, 0] = 0  # BOS
        R = rng.integers(1, V, (n, rl))
        offsets = rng.integers(0, width - rl + 1, (n, nr))
        labels = np.full_like(tokens, IGNORE)
        rows = np.arange(n)[:, None]
        for i in range(nr):
            pos = 1 + i * width + offsets[:, i: i + 1] + np.arange(rl)  # [n, rl]
            tokens[rows, pos] = R
            if i > 0:
                labels[rows, pos[:, :-1]] = R[:, 1:]
        return tokens, labels

    return draw


def max_draw(cfg) -> Draw:
    nv, ne = cfg.n_values, cfg.n_elements

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        values = rng.integers(0, nv, (n, ne))
        tokens = np.concatenate([np.full((n, 1), nv), values, np.full((n, 1), nv + 1)], axis=1)
        labels = np.full_like(tokens, IGNORE)
        labels[:, -1] = values.max(1)
        return tokens, labels

    return draw


def target_names(name: str, cfg) -> list[str]:
    if name == "digit_add":
        return [f"s{i}" for i in range(cfg.n_digits, -1, -1)]
    if name == "repeat_subseq":
        return [f"c{c}p{j}" for c in range(2, cfg.n_repeats + 1) for j in range(cfg.repeat_len - 1)]
    return ["max"]


DRAWS: dict[str, Callable] = {"digit_add": digit_draw, "repeat_subseq": repeat_draw, "max_element": max_draw}


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def distinct(draw: Draw, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n examples with pairwise distinct inputs, in draw order (a later duplicate is dropped and replaced)."""
    rng, seen, inputs, labels = _rng(seed, FINITE_STREAM), set(), [], []
    for _ in range(10_000):
        x, y = draw(rng, max(2 * (n - len(inputs)), 64))
        for i in range(len(x)):
            key = x[i].tobytes()
            if key not in seen and len(inputs) < n:
                seen.add(key)
                inputs.append(x[i])
                labels.append(y[i])
        if len(inputs) == n:
            return np.stack(inputs), np.stack(labels)
    raise ConfigError(f"could not draw {n} distinct inputs; ask for fewer with --n-train / --n-test")


def batch_sampler(draw: Draw, split_seed: int) -> Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]]:
    """sample(batch_seed, step, batch_size) -> the training batch of `step` (inputs, labels): a pure function."""

    def sample(batch_seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = draw(_rng(split_seed, BATCH_STREAM, batch_seed, step), batch_size)
        return torch.from_numpy(x).long(), torch.from_numpy(y).long()

    return sample


def sequence_task(name: str):
    """The builder of sequence task `name` (its spec in training.tasks.specs names it)."""

    def build(cfg):
        n_ctx, d_vocab, d_vocab_out, _ = sequence_layout(name, cfg)
        draw = DRAWS[name](cfg)
        n_train, n_test = cfg.n_train or SEQ_N_TRAIN, cfg.n_test or SEQ_N_TEST
        if cfg.infinite:
            parts = [draw(_rng(cfg.split_seed, TRAIN_EVAL_STREAM), n_train), draw(_rng(cfg.split_seed, TEST_STREAM), n_test)]
            x, y = (np.concatenate(a) for a in zip(*parts))
        else:
            x, y = distinct(draw, cfg.split_seed, n_train + n_test)
        bos = {"digit_add": None, "repeat_subseq": 0, "max_element": cfg.n_values}[name]
        structure = {"kind": "sequence", "task": name, "op": name, "target_names": target_names(name, cfg),
                     "bos": bos, "infinite": bool(cfg.infinite), "n_ctx": n_ctx, "d_vocab": d_vocab}
        if name == "repeat_subseq":
            structure.update(repeat_len=cfg.repeat_len, n_repeats=cfg.n_repeats, repeat_interval=repeat_interval(cfg))
        return TaskData(name, torch.from_numpy(x).long(), torch.from_numpy(y).long(), torch.arange(n_train),
                        torch.arange(n_train, n_train + n_test), d_vocab=d_vocab, d_vocab_out=d_vocab_out,
                        n_ctx=n_ctx, loss="seq_ce", structure=structure,
                        sample=batch_sampler(draw, cfg.split_seed) if cfg.infinite else None)

    return build
