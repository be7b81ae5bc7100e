"""The one training step, for one run or K runs at once.

A `Trainer` owns K members' parameters, stacked with a leading member dimension [K, ...] (K = 1 for a single run),
their optimiser (`training.optim.optimizer.StackedOptimizer`: torch.optim's maths with per-member lr, wd, betas, momentum),
the schedules (linear warmup, the memorisation switch), an ordered list of transforms (`training.optim.transforms.base`:
the norm constraint, ...), each member's minibatch and dropout generators, and each member's data. `step()` is one
optimiser update of every member; `member_state(k)` / `load_member_state(k, ...)` hold everything a bit-identical
resume of member k needs. Members that differ only in fields that keep tensor shapes (seeds, lr, wd, betas, warmup,
init scale, dropout rate, label noise, norm constraint, ...) share one step: each member's loss is the mean over its
own examples (weighted 1/n_k), so its gradient is exactly its own.

The step path (`PATHS`) of every new run of our MLP and transformer, K = 1 included, is "exact": the batched
forward, per-member loss weights and the fused optimiser, each member's rows padded to a multiple of ROWS
(`training.memberdata`). A batched matmul's rounding for one member depends on where that member's block of the
output starts in memory (MKL takes another kernel for a block not on a 64-byte boundary), so every block is made
to start on one whatever K and the member's place (`training.models.batched.aligned_bmm`); with per-member sums
(`member_sums`), evaluation chunks and optimiser calls (`StackedOptimizer(exact=True)`) that do not depend on K
either, a member's bits do not depend on its ensemble. Runs trained before keep their path.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import Any

import torch

from training.models.batched import Dropout, forward_for, generic_forward
from training.models.legacy import single_call
from training.memberdata import ROWS, MemberData, loss_weights, member_rows, padded
from training.memory import keep_freed_memory
from training.config import ConfigError, RunConfig
from training.constants import EVAL_CHUNK
from training.optim.losses import accuracy, compute_loss, example_losses, softmax_collapse, target_metrics
from training.models.build import build_model, scoring_module
from training.optim.optimizer import StackedOptimizer, vector_storage
from training.optim.schedule import MemorisationSwitch, lr_at
from training.tasks.data import TaskData
from training.optim.transforms.base import Transform, build_transforms, member_norms, member_sums

PATHS = ("exact", "batched", "single")  # the step paths; "batched" and "single" are those of runs trained before


def state_path(meta: dict[str, Any]) -> str | None:
    """The step path (`training.trainer.PATHS`) a saved state was trained in: "exact" (every run since it),
    "batched" (an ensemble before it), "single" (a run alone before it), or None (a state older than the record:
    a run alone then trained single, an ensemble batched)."""
    trainer = meta.get("trainer") if isinstance(meta.get("trainer"), dict) else {}
    if "path" in trainer:
        return trainer["path"]
    return None if "batched" not in trainer else ("batched" if trainer["batched"] else "single")


def _loss_kind(cfg: RunConfig, data: TaskData) -> str:
    """The loss trained: the task's own, or StableMax cross-entropy in place of softmax cross-entropy."""
    if cfg.optim.loss == "task":
        return data.loss
    if data.loss != "ce":
        raise ConfigError(f"--loss {cfg.optim.loss} needs a classification task; '{data.name}' trains {data.loss}")
    return cfg.optim.loss


class ChunkTuner:
    """How many members one forward/backward takes at a time, measured on the first steps: a large ensemble of a
    large-batch model (the `default` preset at K = 128) runs faster in chunks that keep activations in cache. Each
    candidate (all members, then halves down to 4) times two real steps; the fastest per step wins. A member's
    arithmetic does not depend on the chunking (every op is per member), so tuning changes no result. Timings on a
    busy machine jitter by more than the gain of a smaller chunk, so a smaller one must beat the largest by MARGIN."""

    MARGIN = 0.05

    def __init__(self, fixed: int = 0):
        self.best, self.times = fixed, {}
        self.candidates: list[int] = []
        self.warm = False  # the first step (allocations, first calls) is not timed: it would count against K

    def size(self, K: int) -> int:
        if self.best:
            return min(self.best, K)
        if not self.candidates:
            self.candidates = sorted({K} | {c for c in (K // 2, K // 4, K // 8, K // 16) if c >= 4}, reverse=True)
        left = [c for c in self.candidates if len(self.times.get(c, [])) < 2]
        if not left:  # the largest chunk within MARGIN of the fastest: fewer, larger calls unless smaller ones pay
            fastest = min(min(t) for t in self.times.values())
            self.best = max(c for c in self.candidates if min(self.times[c]) <= (1 + self.MARGIN) * fastest)
            return min(self.best, K)
        return left[0]

    @staticmethod
    def clock(device: torch.device) -> float:
        """On a CPU at one torch thread, the process's CPU time (the step's own time whatever else the machine runs:
        on a busy one wall time jitters by more than the chunks differ); else wall time (CPU time would not see how
        well a chunk spreads over threads, nor a GPU's time)."""
        return time.process_time() if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter()

    def timed(self, c: int, seconds: float) -> None:
        if not self.best and self.warm:
            self.times.setdefault(c, []).append(seconds)
        self.warm = True


def deterministic() -> None:
    """`torch.use_deterministic_algorithms(True)` without its import of torch._inductor.config (TorchDynamo and
    sympy: over a second before the first step, for a flag only torch.compile reads, set too if already loaded)."""
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    # ... without filling every new tensor with NaN first (the flag's default, a guard against reading memory no op
    # wrote; nothing here does): the fills were a few percent of nanda2023's step (torch.profiler)
    torch._C._set_deterministic_fill_uninitialized_memory(False)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True


class Trainer:
    def __init__(self, cfgs: list[RunConfig], datas: list[TaskData], device: torch.device | str = "cpu",
                 metrics: list[list[dict[str, Any]]] | None = None, transforms: list[Transform] | None = None,
                 path: str | None = None, chunk: int = 0):
        self.cfgs, self.device = list(cfgs), torch.device(device)
        K = len(cfgs)
        keep_freed_memory()
        deterministic()
        models = [build_model(c.model, d, seed=c.train.seed) for c, d in zip(cfgs, datas)]
        self.template = models[0].to(self.device)  # parameter names, and the module of the generic forward
        forward, can_batch = forward_for(self.template, exact=path in (None, "exact"))
        if not can_batch and K > 1:
            raise ValueError(f"model '{cfgs[0].model.model}' trains alone (no batched forward)")
        # "exact" (default): see the module docstring. "batched": the same without the row padding, K-invariant sums
        # and evaluation chunks (ensembles trained before the exact path). "single": the model's own forward, its
        # mean loss and torch.optim's single-tensor update (runs alone trained before it, models without a batched
        # forward). A resumed run keeps the path its state records, so its resume is bit-identical.
        self.path = path if can_batch and path is not None else ("exact" if can_batch else "single")
        if self.path not in PATHS:
            raise ValueError(f"unknown step path '{path}' (expected one of {', '.join(PATHS)})")
        self.batched, self.exact = self.path != "single", self.path == "exact"
        self.forward = forward if self.batched else generic_forward(scoring_module(self.template), single_call(self.template))
        named = [dict(m.named_parameters()) for m in models]
        # each stack in memory padded to whole vector steps of the fused optimiser (training.optim.optimizer.vector_storage)
        self.params = {n: vector_storage(torch.stack([p[n].detach() for p in named]).to(self.device)).requires_grad_()
                       for n in named[0]}
        self.loss_kind, self.float64 = _loss_kind(cfgs[0], datas[0]), cfgs[0].optim.float64_loss
        self.batch_size = cfgs[0].optim.batch_size
        self.data = MemberData(datas, self.device, ROWS if self.exact else 1)
        # infinite-data sequence tasks: each member's batch of step s is samplers[k](batch_seed, s, batch_size)
        self.samplers = [d.sample for d in datas] if datas[0].sample is not None else None
        self.target_names = datas[0].structure.get("target_names") if datas[0].structure.get("kind") == "sequence" \
            else None
        # sequence tasks keep logits at every position: fewer examples per evaluation forward
        self.eval_chunk = EVAL_CHUNK // (datas[0].n_ctx if self.target_names else 1)
        if self.exact:
            self.eval_chunk = max(ROWS, self.eval_chunk // ROWS * ROWS)
        self.batch_gens = [torch.Generator().manual_seed(c.train.batch_seed) for c in cfgs]
        # dropout streams: CPU generators (batched masks are drawn there), except a single run on CUDA, whose
        # module draws from the CUDA generator (swapped in per step, see batched.generic_forward)
        gen_device = self.device if self.device.type == "cuda" and not self.batched else "cpu"
        self.dropout = Dropout([c.model.dropout for c in cfgs],
                               [torch.Generator(device=gen_device).manual_seed(c.train.batch_seed) for c in cfgs])
        self.opt = StackedOptimizer(cfgs[0].optim.optimizer, self.plist, [c.optim.beta1 for c in cfgs],
                                    [c.optim.beta2 for c in cfgs], [c.optim.momentum for c in cfgs],
                                    fused=self.batched, exact=self.exact)
        metrics = metrics or [[] for _ in cfgs]
        self.switches = [MemorisationSwitch(c, m, partial(lr_at, cfg=c)) for c, m in zip(cfgs, metrics)]
        self.updates = [0] * K
        self.transforms = build_transforms(self) + list(transforms or [])
        self._full_batch: tuple | None = None
        self._weights: dict[tuple, torch.Tensor] = {}  # the minibatch loss weights of the last batch shape
        self.grads: list[torch.Tensor] | None = None  # from backward() until apply() takes them
        self.chunks = ChunkTuner(chunk)

    @property
    def plist(self) -> list[torch.Tensor]:
        return list(self.params.values())

    @property
    def K(self) -> int:
        return len(self.cfgs)

    # --- one update ----------------------------------------------------------------------------------------------

    def hyper(self) -> tuple[list[float], list[float]]:
        """This update's lr and wd per member: warmup and the memorisation switch."""
        return ([s.lr(u) for s, u in zip(self.switches, self.updates)],
                [s.wd(u) for s, u in zip(self.switches, self.updates)])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x [K, n, ...], y [K, n], w [K, n]): each member's minibatch from its own generator, drawn exactly as a
        run alone draws it, padded; w weights each member's examples by 1 / its batch size."""
        B, n_train = self.batch_size, self.data.n_train
        dtype = torch.float64 if self.float64 else self.params[next(iter(self.params))].dtype
        if self.samplers is not None:
            return self._sampled_batch(dtype)
        if all(B == 0 or B >= n for n in n_train):
            if self._full_batch is None:
                w = loss_weights(n_train, self.data.x_tr.shape[1], dtype, self.device)
                self._full_batch = (self.data.x_tr, self.data.y_tr, w)
            return self._full_batch
        if not self.batched:  # one run: its minibatch, no padding and no weights (its loss is the plain mean)
            rows = torch.randperm(n_train[0], generator=self.batch_gens[0])[:B].to(self.device)
            return self.data.x_tr[:, rows], self.data.y_tr[:, rows], None
        idx = [torch.arange(n) if B == 0 or B >= n else torch.randperm(n, generator=g)[:B]
               for n, g in zip(n_train, self.batch_gens)]
        rows = padded(idx, ROWS if self.exact else 1).to(self.device)
        key = (tuple(len(i) for i in idx), rows.shape[1], dtype)
        if key not in self._weights:  # the same every step for minibatches of one size
            self._weights = {key: loss_weights(list(key[0]), rows.shape[1], dtype, self.device)}
        return member_rows(self.data.x_tr, rows), member_rows(self.data.y_tr, rows), self._weights[key]

    def _sampled_batch(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Infinite data: each member's fresh batch for its current update count, a pure function of (its seeds,
        the step), so a resumed run draws the same batches without any saved generator state."""
        B = self.batch_size
        drawn = [sample(c.train.batch_seed, u, B) for sample, c, u in zip(self.samplers, self.cfgs, self.updates)]
        x = torch.stack([b[0] for b in drawn]).to(self.device)
        y = torch.stack([b[1] for b in drawn]).to(self.device)
        if not self.batched:
            return x, y, None
        w = torch.full((self.K, B), 1.0 / B, dtype=dtype, device=self.device)
        if self.exact and B % ROWS:  # rows up to a multiple of ROWS: copies of the first, weighted 0
            pad = ROWS - B % ROWS
            x, y = (torch.cat([t, t[:, :1].expand(-1, pad, *t.shape[2:])], 1) for t in (x, y))
            w = torch.cat([w, w.new_zeros(self.K, pad)], 1)
        return x, y, w

    def step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One optimiser update of every member on `batch` (default: each member's next minibatch).
        Returns each member's loss [K] (detached)."""
        losses = self.backward(batch)
        self.apply()
        return losses

    def backward(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The first half of `step`: forward and gradients of every member; returns each member's loss [K] before
        any weight changes (the loop stops a member whose loss is no longer finite, then calls `apply`)."""
        x, y, w = batch if batch is not None else self.next_batch()
        for t in self.transforms:
            t.before_forward(self.plist)
        losses = self._backward(x, y, w)
        for t in self.transforms:
            t.after_backward(self.plist)
        return losses

    def _backward(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        if not self.batched:
            loss = compute_loss(self.forward(self.params, x, self.dropout)[0], y[0], self.loss_kind, self.float64)
            # autograd.grad may hand back strided views (W_Q's grad comes through a permute); the fused optimiser
            # reads its tensors as flat memory, so they must be laid out as the parameters are
            self.grads = [g.contiguous() for g in torch.autograd.grad(loss, self.plist)]
            return loss.detach().reshape(1)
        c, t = self.chunks.size(self.K), self.chunks.clock(self.device)
        losses, grads = [], []
        for k in range(0, self.K, c):  # members in chunks: each chunk's activations stay in cache
            p = {n: v.detach()[k: k + c].requires_grad_() for n, v in self.params.items()}
            drop = Dropout(self.dropout.rates[k: k + c], self.dropout.generators[k: k + c])
            out = self.forward(p, x[k: k + c], drop)
            per_member = member_sums(example_losses(out, y[k: k + c], self.loss_kind, self.float64) * w[k: k + c],
                                     self.exact)
            grads.append(torch.autograd.grad(per_member.sum(), list(p.values())))
            losses.append(per_member.detach())
        self.grads = [torch.cat(g) if len(g) > 1 else g[0].contiguous() for g in zip(*grads)]
        self.chunks.timed(c, self.chunks.clock(self.device) - t)
        return torch.cat(losses)

    def apply(self) -> None:
        """The second half of `step`: transforms, the optimiser update and the schedules' clock."""
        grads, self.grads = self.grads, None
        lr, wd = self.hyper()
        for t in self.transforms:
            t.set_hyper(lr, wd)
        for t in self.transforms:
            grads = t.on_grads(self.plist, grads)
        self.opt.step(self.plist, grads, lr, wd)
        for t in self.transforms:
            t.on_params(self.plist)
        self.updates = [u + 1 for u in self.updates]

    # --- evaluation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, members: list[int] | None = None) -> torch.Tensor:
        """Eval-mode outputs [K', n, out] of `members` (default all) on their inputs x [K', n, ...], chunked."""
        p = self.params if members is None or members == list(range(self.K)) else \
            {n: v[torch.tensor(members, device=self.device)] for n, v in self.params.items()}
        k = len(members) if members is not None else self.K
        if not self.exact:  # the paths of runs trained before: examples in chunks of eval_chunk / k, every member
            chunk = max(1, self.eval_chunk // k)
            return torch.cat([self.forward(p, x[:, i: i + chunk]) for i in range(0, x.shape[1], chunk)], dim=1)
        # a forward's examples per member do not depend on how many members are evaluated (a member's outputs are
        # then the same alone or among others); members go in groups that keep ~eval_chunk examples per forward
        rows = max(1, min(x.shape[1], self.eval_chunk))
        group = max(1, self.eval_chunk // rows)
        outs = []
        for j in range(0, k, group):
            pj = {n: v[j: j + group] for n, v in p.items()}
            outs.append(torch.cat([self.forward(pj, x[j: j + group, i: i + rows]) for i in range(0, x.shape[1], rows)],
                                  dim=1))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _split_metrics(self, members, x, y, lengths, float64) -> list[dict[str, Any]]:
        """Each member's mean loss and accuracy over its own (unpadded) examples, as a run alone computes them,
        and its softmax collapse (classification by cross-entropy only, else None); sequence tasks add the loss
        and accuracy of each target and the share of examples with every target right."""
        out = self.outputs(x, members)
        rows = []
        for i, n in enumerate(lengths):
            o, t = out[i, :n], y[i, :n]
            row = {"loss": compute_loss(o, t, self.loss_kind, float64).item(),
                   "acc": accuracy(o, t, self.loss_kind),
                   "collapse": softmax_collapse(o, t, self.loss_kind) if self.loss_kind in ("ce", "stablemax", "seq_ce")
                   else None}
            if self.target_names:
                loss, acc, row["answer_acc"] = target_metrics(o, t, float64)
                row["loss_by_target"] = dict(zip(self.target_names, loss))
                row["acc_by_target"] = dict(zip(self.target_names, acc))
            rows.append(row)
        return rows

    @torch.no_grad()
    def evaluate(self, members: list[int] | None = None, float64: bool | None = None) -> list[dict[str, Any]]:
        """Train/test loss and accuracy on each member's whole split, and its weight norm: one dict per member."""
        members = list(range(self.K)) if members is None else list(members)
        f64 = self.float64 if float64 is None else float64
        sel = torch.tensor(members, device=self.device)
        d = self.data
        tr = self._split_metrics(members, d.x_tr[sel], d.y_tr[sel], [d.n_train[k] for k in members], f64)
        te = self._split_metrics(members, d.x_te[sel], d.y_te[sel], [d.n_test[k] for k in members], f64)
        norms = member_norms([v[sel] for v in self.plist], self.exact).tolist()
        rows = []
        for a, b, norm in zip(tr, te, norms):
            row = {"train_loss": a["loss"], "test_loss": b["loss"], "train_acc": a["acc"], "test_acc": b["acc"],
                   "weight_norm": norm, "softmax_collapse": a["collapse"]}
            if self.target_names:
                row.update(train_answer_acc=a["answer_acc"], test_answer_acc=b["answer_acc"],
                           train_loss_by_target=a["loss_by_target"], test_loss_by_target=b["loss_by_target"],
                           train_acc_by_target=a["acc_by_target"], test_acc_by_target=b["acc_by_target"])
            rows.append(row)
        return rows

    def observe(self, k: int, step: int, row: dict[str, Any]) -> None:
        """Member k's evaluation at `step` (the memorisation switch listens)."""
        self.switches[k].observe(step, row)

    def weights(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters under the model's names (a checkpoint)."""
        return {n: v[k].detach() for n, v in self.params.items()}

    # --- state -----------------------------------------------------------------------------------------------

    def member_state(self, k: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything member k's resume needs: tensors (weights, optimiser buffers, RNG states, transform buffers)
        and JSON-able counters."""
        tensors = {f"model.{n}": v[k].detach() for n, v in self.params.items()}
        tensors.update(self.opt.member_state(k))
        tensors["rng.batch"] = self.batch_gens[k].get_state()
        g = self.dropout.generators[k]
        tensors["rng.cuda" if g.device.type == "cuda" else "rng.torch"] = g.get_state()  # the dropout stream
        tensors.setdefault("rng.torch", torch.get_rng_state())
        for t in self.transforms:
            tensors.update(t.member_state(k))
        return tensors, {"updates": self.updates[k], "switch_step": self.switches[k].step, "batched": self.batched,
                         "path": self.path}

    @torch.no_grad()
    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        for n, v in self.params.items():
            v[k].copy_(tensors[f"model.{n}"])
        self.opt.load_member_state(k, tensors)
        self.batch_gens[k].set_state(tensors["rng.batch"])
        g = self.dropout.generators[k]
        if g.device.type == "cpu" or "rng.cuda" in tensors:
            g.set_state(tensors["rng.cuda" if g.device.type == "cuda" else "rng.torch"])
        for t in self.transforms:
            t.load_member_state(k, tensors)
        self.updates[k] = meta.get("updates", meta.get("step", 0))
        if meta.get("switch_step") is not None:
            self.switches[k].step = meta["switch_step"]

    def state_dict(self) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        return [self.member_state(k) for k in range(self.K)]

    def load_state_dict(self, states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]]) -> None:
        for k, (tensors, meta) in enumerate(states):
            self.load_member_state(k, tensors, meta)

    def keep(self, members: list[int]) -> None:
        """Only `members` go on training (the others stopped): every stacked tensor and list is cut to them."""
        idx = torch.tensor(members, dtype=torch.long)
        dev = idx.to(self.device)
        self.params = {n: vector_storage(v.detach()[dev]).requires_grad_() for n, v in self.params.items()}
        self.opt.keep(dev)
        for t in self.transforms:
            t.keep(dev)
        self.data.keep(idx)
        if self.grads is not None:
            self.grads = [g[dev] for g in self.grads]
        pick = lambda xs: [xs[i] for i in members]  # noqa: E731
        self.cfgs, self.batch_gens, self.switches, self.updates = (pick(self.cfgs), pick(self.batch_gens),
                                                                   pick(self.switches), pick(self.updates))
        if self.samplers is not None:
            self.samplers = pick(self.samplers)
        self.dropout = Dropout(pick(self.dropout.rates), pick(self.dropout.generators))
        self._full_batch, self._weights = None, {}
