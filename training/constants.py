"""Every constant more than one module needs, and the name of every file a run or a sweep writes (no torch here).

```
<run>/config.json            "format": "grokscope-run/1", "run_id", the resolved RunConfig, preset, package versions
<run>/split.json             train indices (test = the rest) + sha256 of the split
<run>/metrics.jsonl          one JSON object per evaluation
<run>/ckpt/step_<N>.safetensors  weights; step + headline metrics in the metadata
<run>/state/state.safetensors    what --resume needs: weights, optimiser, RNG; counters and run_id in the metadata
<run>/summary.json           S_mem, S_gen, final metrics, timings
<run>/curves.png             loss and accuracy against step
<run>/analyses/              written by the analyses
<sweep>/sweep.json           the sweep's index: its spec and one entry per run
<sweep>/.drain               asks every chunk executor of a draining sweep to stop after its current step
<out>/seed=<s>/              python -m training.run --seeds: one ordinary run directory per init seed
```
"""

from __future__ import annotations

from pathlib import Path

# --- the run directory (training.runs.format owns its format) -----------------------------------------------------
CONFIG, SPLIT, METRICS, SUMMARY, CURVES = "config.json", "split.json", "metrics.jsonl", "summary.json", "curves.png"
CKPT_DIR, STATE_DIR, ANALYSES_DIR, LOCK = "ckpt", "state", "analyses", ".lock"
STATE_FILE = "state.safetensors"
STATE_PATH = Path(STATE_DIR) / STATE_FILE
CKPT_PATTERN = r"^step_(\d+)\.safetensors$"
FORMAT = "grokscope-run/1"  # with a run_id, marks a directory as one this project wrote (what --overwrite may replace)

# --- the sweep directory (training.sweep) --------------------------------------------------------------------
SWEEP_INDEX = "sweep.json"
SWEEP_STOP = ".drain"  # written by a draining driver, watched by every chunk executor (training.sweeps.executor)
SEED_DIR = "seed={}"  # python -m training.run --seeds: one run directory per init seed under --out
# the checkpoint budget of the sweeps' runs: a sweep keeps many runs, each needs its curve more than its weights
SWEEP_CKPT = {"ckpt_floor": 8, "ckpt_max": 12}

# --- numbers ------------------------------------------------------------------------------------------------
MAX_INT = 2**63 - 1  # seeds, sizes and steps must fit torch's int64
EVAL_CHUNK = 16384  # examples (x members) per evaluation forward; the memory estimate assumes it too
IGNORE = -100  # sequence tasks: label of a position that is not a target (F.cross_entropy's ignore_index)
