"""Running TransformerLens' demos/Grokking_Demo.ipynb cells as a notebook does (shared by test_tl_demo_cells and
test_tl_demo_analysis_cells): one namespace per model, each cell executed in turn, the value of a cell's last
expression kept as the notebook would show it, and `Figure.show` a no-op."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

from tests.conftest import tiny_config
from training.loop import train
from training.runs.reader import Run
from training.runs.writer import create_run_dir

# the demo's plotting helpers, verbatim
HELPERS = '''
def imshow(tensor, renderer=None, xaxis="", yaxis="", **kwargs):
    px.imshow(utils.to_numpy(tensor), color_continuous_midpoint=0.0, color_continuous_scale="RdBu", labels={"x":xaxis, "y":yaxis}, **kwargs).show(renderer)

def line(tensor, renderer=None, xaxis="", yaxis="", **kwargs):
    px.line(utils.to_numpy(tensor), labels={"x":xaxis, "y":yaxis}, **kwargs).show(renderer)

def scatter(x, y, xaxis="", yaxis="", caxis="", renderer=None, **kwargs):
    x = utils.to_numpy(x)
    y = utils.to_numpy(y)
    px.scatter(y=y, x=x, labels={"x":xaxis, "y":yaxis, "color":caxis}, **kwargs).show(renderer)
'''


def train_demo_run(path: Path, **flat) -> Run:
    """A run trained with the toolkit (`tiny_config(**flat)`), for the demo's cells to analyse."""
    lock = create_run_dir(path)
    try:
        train(tiny_config(**flat), path, progress=False)
    finally:
        lock.release()
    return Run(path)


def demo_namespace(model, run, **extra) -> dict:
    """What the demo's set-up cells (not run: imports, device, the training loop's losses) leave behind."""
    import einops
    import plotly.express as px
    import transformer_lens.utilities as utils

    rows = run.metrics
    return {"torch": torch, "np": np, "einops": einops, "px": px, "utils": utils, "device": "cpu", "model": model,
            "run": run, "p": run.config.task.p, "train_losses": [r["train_loss"] for r in rows[1:]],
            "test_losses": [r["test_loss"] for r in rows[1:]], **extra}


def run_cell(name: str, source: str, ns: dict):
    """Execute one cell in `ns`; return its last expression's value (what the notebook displays), else None."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, f"<demo cell: {name}>", "exec"), ns)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), f"<demo cell: {name}>", "eval"), ns)


def run_cells(cells, ns: dict, monkeypatch) -> dict:
    """Every (name, source, ...) cell in order, without gradients; {name: displayed value}."""
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: None)
    shown = {}
    with torch.no_grad():
        for name, source, *_ in cells:
            shown[name] = run_cell(name, source, ns)
    return shown
