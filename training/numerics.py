"""What a run's bits depend on beyond its config, recorded in config.json's "numerics": the step path
(`training.trainer.PATHS`), the torch thread count (`training.threads`: a run trained by load has the bits of one
thread) and the device (the CPU's kernel kind or the GPU's name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from training.runs.format import read_config
from training.threads import Governor, by_load, same_bits


def device_label(device: torch.device) -> str:
    """The device as far as rounding goes: the CPU's kernel kind (AVX2, AVX512, ...) or the GPU's name."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.backends.cpu.get_cpu_capability()})" if device.type == "cpu" else str(device)


def numerics(device: torch.device, path: str, governor: Governor | None = None) -> dict[str, Any]:
    """The record: "path" ("exact" for every run since it; "single" for models without a batched forward),
    "threads" (1 for a run trained by load, whose bits are one thread's, with "threads_by_load": the most it
    stepped at) and "device"."""
    if governor is None:
        return {"path": path, "threads": torch.get_num_threads(), "device": device_label(device)}
    return {"path": path, "threads": 1, "threads_by_load": governor.counts[0], "device": device_label(device)}


def governor_for(make: Callable[[int], Any], K: int, device: torch.device,
                 log: Callable[[str], None]) -> Governor | None:
    """The thread governor of a run of K members started by load (`training.threads.by_load`), once `same_bits` has
    found that the Trainers `make(k)` builds of its first k members give one thread's bits at the full count; else
    the run steps on one thread (and says so when that is because the bits differ). None for a fixed count or a GPU.

    An ensemble's chunks and the members left once others finish train k <= K members at a time: one member stands
    for a lone product, two for a batched one, one per thread for a batch whose weight gradients MKL gives a thread
    each (`training.models.batched.weight_grad_bmm`)."""
    most = by_load()
    if not most or device.type != "cpu":
        return None
    if all(same_bits(lambda k=k: make(k), most) for k in sorted({1, min(2, K), min(most, K)})):
        return Governor(most, torch.set_num_threads)
    torch.set_num_threads(1)
    log(f"note: on this machine this run's kernels round differently at {most} threads than at 1; it trains on "
        "one thread (choose with --threads)")
    return None


def say_if_numerics_differ(resumed: list[Path], now: dict[str, Any], log: Callable[[str], None]) -> None:
    """One line when resumed runs were trained at another torch thread count or on another device than this
    process: their continuation is then not bit-identical to an uninterrupted run. Runs from before the record
    (no "numerics" in config.json) are unknown, and not reported."""
    differ: dict[str, set[str]] = {}
    for d in resumed:
        rec = read_config(d)[1].get("numerics")
        for key in ("threads", "device"):
            if isinstance(rec, dict) and key in rec and rec[key] != now[key]:
                differ.setdefault(key, set()).add(str(rec[key]))
    if differ:
        what = "; ".join(f"{k} {', '.join(sorted(v))} then, {now[k]} now" for k, v in differ.items())
        log(f"note: resuming with other numerics than the runs started with ({what}): the continuation is not "
            "bit-identical to an uninterrupted run")
