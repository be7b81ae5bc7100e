"""How much memory a config asks for, estimated from the config alone, and the limit it must fit in.

`training.config.validate` refuses a config whose estimate is over the limit, so `--p 100000` (a table of 1e10
examples) ends in one line naming the estimate and the limit instead of a MemoryError or the OOM killer, before
anything is allocated or written. The estimate is rough on purpose (within a small factor of the peak resident
memory): the task table with the copies made while building it, the parameters with their gradients, optimiser
moments and a checkpoint copy, the activations of one training batch forward and backward, and the evaluation's
outputs over the whole table.

The limit is 80% of physical memory; `GROKSCOPE_MEMORY_LIMIT` overrides it (bytes, or with a unit: 512M, 16G,
1.5T; "none" switches the check off).
"""

from __future__ import annotations

import ctypes
import os
import re

from training.constants import EVAL_CHUNK
from training.errors import ConfigError
from training.registry import model_spec, task_shape, task_spec, transform_specs

LIMIT_ENV = "GROKSCOPE_MEMORY_LIMIT"
PHYSICAL_SHARE = 0.8
UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform names these
        return None


def memory_limit() -> tuple[int | None, str]:
    """(limit in bytes or None for no limit, where it comes from)."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if text:
        if text.lower() == "none":
            return None, f"{LIMIT_ENV}=none"
        m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
        if not m:
            raise ConfigError(f"{LIMIT_ENV}='{text}': expected a size such as 16G, 512M or 1000000000, or 'none'")
        return int(float(m.group(1)) * UNITS[m.group(2).upper()]), f"{LIMIT_ENV}={text}"
    phys = physical_memory()
    if phys is None:
        return None, "physical memory unknown"
    return int(PHYSICAL_SHARE * phys), f"{PHYSICAL_SHARE:.0%} of {fmt_bytes(phys)} physical memory"


def fmt_bytes(n: int | float) -> str:
    x = float(min(n, 2**1000))  # hostile sizes make integers too large for a float
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024:
            return f"{x:.3g} {unit}"
        x /= 1024
    return f"{x:.3g} PiB"


def n_params(m, s) -> int:
    """Parameters of `training.models.build.build_model(m, data)` for a task of shape `s` (the model spec's formula)."""
    return model_spec(m.model).n_params(m, s)


def activations_per_example(m, s) -> int:
    """Floats one example keeps for the backward pass (forward outputs of every layer, logits in float64)."""
    return model_spec(m.model).activations(m, s)


def _transform_copies(o) -> int:
    """Extra copies of the parameters the transforms switched on hold (their specs' `copies`)."""
    return sum(spec.copies(o) for spec in transform_specs() if spec.active(o))


def estimate(cfg, shape) -> dict[str, int]:
    """Bytes by part for `cfg` (a RunConfig) and its task's `shape` (training.specs.TaskShape)."""
    m, s = cfg.model, shape
    data = task_spec(s.name).memory(s)  # the task table while it is built
    # weights, gradients, two Adam moments, one checkpoint/state copy, and what the transforms keep
    params = n_params(m, s) * 4 * (5 + _transform_copies(cfg.optim))
    batch = s.n_train if cfg.optim.batch_size == 0 else min(cfg.optim.batch_size, s.n_train)
    if cfg.task.infinite:  # a fresh batch every step, of --batch-size examples
        batch = cfg.optim.batch_size
    per_example = activations_per_example(m, s) * 4
    train = 2 * batch * per_example  # forward activations and their gradients
    outputs = s.n * s.d_vocab_out * (s.n_ctx if s.sequence else 1)
    evaluate = min(s.n, EVAL_CHUNK) * per_example + outputs * 4 * 3  # all outputs kept, float64 loss
    return {"data": data, "model and optimiser": params, "activations": max(train, evaluate)}


def check_memory(cfg, shape) -> None:
    """ConfigError naming the estimate and the limit when `cfg` would not fit."""
    parts = estimate(cfg, shape)
    total = sum(parts.values())
    limit, source = memory_limit()
    if limit is not None and total > limit:
        detail = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in parts.items())
        raise ConfigError(f"this config needs about {fmt_bytes(total)} of memory ({detail}) but the limit is "
                          f"{fmt_bytes(limit)} ({source}; set {LIMIT_ENV} to change it)")


def members_that_fit(cfgs) -> int | None:
    """How many runs like the largest of `cfgs` fit in memory at once as one ensemble, by the estimate (None when
    there is no limit). A sweep's chunk never holds more: a chunk of 100001 members is a 24 GB ensemble."""
    limit, _ = memory_limit()
    if limit is None or not cfgs:
        return None
    per_member = max(sum(estimate(c, task_shape(c.task)).values()) for c in cfgs)
    return max(1, limit // max(per_member, 1))


# glibc's mallopt parameters, and the largest mmap threshold it accepts (32 MiB on 64-bit)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, MMAP_MAX = -1, -3, 32 << 20
KEEP_FREED = 1 << 30  # free memory at the heap's top that the process keeps instead of returning it to the OS
_kept = False


def keep_freed_memory() -> None:
    """Let the next training step reuse the memory the last one freed. glibc hands a large block (>= 128 KiB at
    first) back to the kernel when it is freed, and each step then takes it again, one page fault per 4 KiB page:
    measured, a third of a `parity-blog` K = 32 step (2500 faults) and a fifth of a `default` run's step went to
    the kernel. Blocks up to 32 MiB now come from the heap, which keeps up to 1 GiB it no longer uses. Allocation
    changes no result (torch aligns every tensor to 64 bytes whatever the allocator); elsewhere than glibc, nothing
    happens."""
    global _kept
    if _kept:
        return
    _kept = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_MAX)
    mallopt(M_TRIM_THRESHOLD, KEEP_FREED)
