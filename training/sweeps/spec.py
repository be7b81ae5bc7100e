"""Named sweeps and their variants (methods), and planning a sweep into runs."""

from __future__ import annotations

from dataclasses import dataclass, field
import itertools
import json
import math
import re
from typing import Any

from training.config import FIELD_SECTION, ConfigError, RunConfig, validate
from training.constants import STATE_PATH, SWEEP_CKPT, SWEEP_INDEX, SWEEP_STOP
from training.presets import get_preset
from training.registry import transform_specs


INDEX = SWEEP_INDEX
STOP_FILE = SWEEP_STOP
STATE = STATE_PATH


MAX_RUNS = 10_000  # a typo such as --seeds $(seq 0 100000) is refused before anything is planned or built
METHOD = "method"  # the key a variant's label is stored under, in each run's params and index entry
LABEL = re.compile(r"[a-z0-9][a-z0-9.+-]*")  # a label is part of a directory name


@dataclass(frozen=True)
class SweepSpec:
    """A named sweep: a preset, flat config overrides, a grid (field -> values), seeds, and optionally named
    variants (method label -> flat config overrides), each run at every grid point and seed."""

    preset: str
    grid: dict[str, list[Any]]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


# The sweeps keep small checkpoint budgets (SWEEP_CKPT): a sweep wants S_mem / S_gen, not dense checkpoints
# (analyse single runs for that).
SWEEPS: dict[str, SweepSpec] = {
    # H1 (Fuangkawinsombut and Somsirivattana's blog "Grokking"): raising weight decay once the training set is
    # memorised speeds up generalisation, up to a threshold past which nothing generalises. parity-blog, wd 0.01 until
    # 100% train acc.
    "h1": SweepSpec("parity-blog", {"wd_after_memorisation": [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.3, 1.0]},
                    overrides={"steps": 5000, "stop_after_gen": 0, "eval_every": 10, **SWEEP_CKPT},
                    doc="H1: weight decay switched on at memorisation (parity-blog)"),
    # H2: a fraction p_t of flipped training labels slows generalisation, up to a threshold.
    "h2": SweepSpec("parity-blog", {"label_noise": [0.0, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2]},
                    overrides={"steps": 10000, "stop_after_gen": 0, "eval_every": 10, **SWEEP_CKPT},
                    doc="H2: fraction of flipped training labels (parity-blog)"),
    # Steps to generalise against the training fraction (Power et al. 2022, fig. 1 right): the `default` preset,
    # 3 seeds; each run stops at S_gen, so only the fractions that do not generalise use the whole budget.
    "frac": SweepSpec("default", {"frac": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]},
                      overrides={"steps": 3000, "stop_after_gen": 0, **SWEEP_CKPT},
                      doc="S_gen against the training fraction (default preset)"),
}


def accel_methods(batch_size: int, sgd_lr: float = 0.1) -> dict[str, dict[str, Any]]:
    """The accelerator comparison: baselines (Power et al. 2022's optimisers and regularisers) and the methods that
    claim to remove the delay, each as overrides of a base config whose optimiser is AdamW with weight decay.
    `batch_size`: the other batch size of the batch-size baseline: a minibatch when the base trains full batch
    ("adamw-minibatch"), 0 when the base trains on minibatches ("adamw-full-batch")."""
    other = {"adamw-minibatch" if batch_size else "adamw-full-batch": {"batch_size": batch_size}}
    return {
        "adamw": {},  # the base itself: the reference every speed-up is against
        **other,
        "adam-no-wd": {"optimizer": "adam", "wd": 0.0},
        "sgd-momentum": {"optimizer": "sgd", "lr": sgd_lr, "momentum": 0.9, "wd": 0.0},
        "dropout": {"dropout": 0.1},
        # each transform's own methods (weight noise, Grokfast, ⊥AdamW, decay to init, the norm constraint)
        **{label: over for spec in transform_specs() for label, over in spec.methods.items()},
        "stablemax": {"loss": "stablemax", "wd": 0.0},
        "stablemax-wd": {"loss": "stablemax"},
        "stablemax-perp": {"loss": "stablemax", "perp_grad": True, "wd": 0.0},
    }


# (x+y) mod 97 on a model a shared 2-core CPU trains 42 times: per-operand embeddings of 64, one ReLU layer of 256,
# an unembedding (the "mlp" model); AdamW lr 3e-3 wd 1 on minibatches of 512 as Power et al. (full batch is one
# of the methods). Full batch at frac 0.5 it memorises by ~400 steps and reaches 87% test accuracy by 900 (seed
# 0); half as wide, it had not memorised after 800 minibatch steps.
_BUDGET_TASK = {"p": 97, "model": "mlp", "n_layers": 1, "d_model": 64, "d_mlp": 256, "lr": 3e-3, "wd": 1.0,
                "batch_size": 512}

SWEEPS.update({
    # Every method of issue 13 against plain AdamW on the `default` preset, 3 seeds, stopping at S_gen.
    "accel": SweepSpec("default", {}, overrides={"steps": 1500, "stop_after_gen": 0, **SWEEP_CKPT},
                       variants=accel_methods(128), doc="regularisers and accelerators (default preset)"),
    # The same on Nanda et al.'s setup, 3 seeds. Every method gets 1500 steps (the methods that claim to remove the
    # delay should need far fewer); plain AdamW, the reference, runs until it generalises (~6-10k steps here), so
    # each speed-up is against its measured S_gen, or bounded by it (a method that did not generalise within its
    # 1500 steps is at most S_gen(adamw) / 1500 times faster). A full-batch step is ~80 ms on one CPU thread.
    "accel-nanda": SweepSpec("nanda2023", {}, overrides={"steps": 1500, "stop_after_gen": 0, **SWEEP_CKPT},
                             variants={**accel_methods(512), "adamw": {"steps": 15000}},
                             doc="regularisers and accelerators (nanda2023; 1500 steps, adamw until it generalises)"),
    # Hu, Zhou and Yu, "Exploring Grokking" (2023), Figure 5: final test accuracy within 1800 steps against the training
    # fraction, (x+y) mod 97. Runs stop once generalised (their final accuracy is then >= 99%).
    "accel-budget": SweepSpec("default", {"frac": [0.3, 0.5, 0.7]}, seeds=[0],
                              overrides={**_BUDGET_TASK, "steps": 1800, "eval_every": 100, "stop_after_gen": 0,
                                         **SWEEP_CKPT},
                              variants=accel_methods(0), doc="final test accuracy within 1800 steps, (x+y) mod 97"),
})


# --- the plan: one RunConfig per (grid point, seed), grouped into chunks --------------------------------------


def fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class PlannedRun:
    name: str
    params: dict[str, Any]  # the grid point, with the method label under METHOD when the sweep has variants
    seed: int
    config: RunConfig


def check_variants(spec: SweepSpec) -> None:
    """Labels fit a directory name; a variant sets known config fields, none of them swept by the grid."""
    for label, over in spec.variants.items():
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise ConfigError(f"method label '{label}': use lower-case letters, digits, '.', '+' and '-'")
        if not isinstance(over, dict):
            raise ConfigError(f"method {label}: its overrides must be an object of config fields")
        bad = [f for f in over if f not in FIELD_SECTION]
        if bad:
            raise ConfigError(f"method {label}: unknown config field(s) {', '.join(bad)}")
        clash = sorted(set(over) & set(spec.grid))
        if clash:
            raise ConfigError(f"method {label} sets {', '.join(clash)}, which the grid sweeps")


def n_runs(spec: SweepSpec) -> int:
    return max(len(spec.variants), 1) * math.prod(len(v) for v in spec.grid.values()) * len(spec.seeds)


def plan(spec: SweepSpec, seed_fields: list[str]) -> list[PlannedRun]:
    check_variants(spec)
    if n_runs(spec) > MAX_RUNS:
        raise ConfigError(f"a sweep of {n_runs(spec)} runs is more than the {MAX_RUNS} one sweep directory holds; "
                          "split it into several sweeps (--out)")
    base = get_preset(spec.preset).replace(**spec.overrides)
    names = list(spec.grid)
    runs = []
    for label, over in (spec.variants or {None: {}}).items():
        for values in itertools.product(*(spec.grid[n] for n in names)):
            point = dict(zip(names, values))
            params = {METHOD: label, **point} if label is not None else point
            for s in spec.seeds:
                cfg = base.replace(**{**over, **point, **{f: s for f in seed_fields}})
                name = "_".join(f"{n}={v if n == METHOD else fmt(v)}" for n, v in params.items()) + f"_seed={s}"
                runs.append(PlannedRun(name.replace("/", "_over_"), params, s, cfg))
    return runs


def check_all(runs: list[PlannedRun]) -> None:
    """Every config is valid, before anything is written (as training.run does for one): the cheap checks on
    every run first, so a bad value answers before torch is imported; then the task and model of each."""
    for r in runs:
        try:
            validate(r.config)
        except ConfigError as e:
            raise ConfigError(f"{r.name}: {e}") from None
    from dataclasses import asdict

    from training.run import check

    checked = set()
    for r in runs:
        key = json.dumps([asdict(r.config.task), asdict(r.config.model)], sort_keys=True, default=str)
        if key in checked:  # the task and model a config builds depend on these alone (seeds do not change them)
            continue
        try:
            check(r.config)
        except ConfigError as e:
            raise ConfigError(f"{r.name}: {e}") from None
        checked.add(key)


def plan_chunks(configs: list[RunConfig], workers: int, threads: int) -> list[list[int]]:
    """Indices of `configs` grouped into chunks, each trained by one worker as one ensemble: shape-compatible
    runs, grouped only where a measured step says an ensemble pays (`training.ensemble.plan_chunks`), never more
    members per chunk than keeps every worker busy, and never more than fit in memory (`training.memory`)."""
    from training.ensemble import plan_chunks as ensemble_chunks
    from training.memory import members_that_fit

    per_worker = max(1, -(-len(configs) // max(workers, 1)))
    fit = members_that_fit(configs)
    return ensemble_chunks(configs, max_members=per_worker if fit is None else min(per_worker, fit), threads=threads)
