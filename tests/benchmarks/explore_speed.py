"""Speed of `python -m analyses.explore` on a nanda2023-sized run: the time to write the page when the analyses
are already computed, the page's size, and how long the slider takes to update every panel in headless Chromium.

    python -m tests.benchmarks.explore_speed                   # trains the run first (nanda2023, ~200 checkpoints)
    python -m tests.benchmarks.explore_speed RUN_DIR [--moves 40]

Without RUN_DIR it trains the nanda2023 preset (p = 113, d_model 128, d_mlp 512) for 400 steps, evaluating every
2nd step, into a temporary folder, and fills evaluations between its ~100 log-spaced checkpoints with the mean of
the neighbouring checkpoints until there are 200 (`fill_checkpoints`); the Fourier analysis is then computed
once, so the timed command only reuses it. The slider latency is the time from setting the slider's value to
the end of the next animation frame after every panel's update, per move, over `--moves` moves to checkpoints
spread over the run; the median and the maximum are reported, beside the time to draw every panel anew
(Plotly.newPlot), measured in the same page.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# an evaluation every 2nd step, as many log-spaced checkpoints as the schedule gives (~100)
TRAIN = ["--preset", "nanda2023", "--steps", "400", "--eval-every", "2", "--ckpt-floor", "201", "--ckpt-max", "201",
         "--no-progress"]


def fill_checkpoints(run: Path, target: int = 200) -> int:
    """Checkpoints at the evaluations between the saved ones, each the mean of its two neighbours' weights (with
    that evaluation's metrics), until the run has `target`: the log-spaced checkpoint schedule of a 400-step run
    keeps ~100 of its 201 evaluations, and the page's cost depends on the count, not on the weights."""
    import json

    from safetensors.torch import load_file, save_file

    from training.runs.format import checkpoint_steps, ckpt_name

    rows = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    gaps = [(a, b) for a, b in zip(checkpoint_steps(run), checkpoint_steps(run)[1:])]
    while gaps and len(checkpoint_steps(run)) < target:
        a, b = gaps.pop(0)
        free = [s for s in rows if a < s < b]
        if not free:
            continue
        mid = free[len(free) // 2]
        wa, wb = load_file(run / "ckpt" / ckpt_name(a)), load_file(run / "ckpt" / ckpt_name(b))
        metrics = {k: v for k, v in rows[mid].items() if k != "step"}
        save_file({k: ((wa[k].double() + wb[k].double()) / 2).to(wa[k].dtype) if wa[k].is_floating_point()
                   else wa[k] for k in wa}, run / "ckpt" / ckpt_name(mid),
                  metadata={"step": str(mid), "metrics": json.dumps(metrics)})
        gaps += [(a, mid), (mid, b)]
    return len(checkpoint_steps(run))


def cli(*argv: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def slider_latency(page_path: Path, moves: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(page_path.resolve().as_uri())
        page.wait_for_function("window.explore !== undefined")
        n = page.evaluate("window.explore.data.steps.length")
        times = page.evaluate("""async ([n, moves]) => {
            const slider = document.getElementById('slider'), out = [];
            for (let m = 0; m < moves; m++) {
              const i = Math.round((m * 7919) % n);  // checkpoints spread over the run, in a scrambled order
              const t0 = performance.now();
              slider.value = i;
              slider.dispatchEvent(new Event('input'));
              await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
              out.push(performance.now() - t0);
            }
            return out;
        }""", [n, moves])
        # side by side: every panel drawn anew per move (Plotly.newPlot), what a page without the incremental
        # update would do
        redraw = page.evaluate("""async (moves) => {
            const out = [];
            for (let m = 0; m < moves; m++) {
              const t0 = performance.now();
              for (const p of window.explore.data.panels) {
                const gd = document.getElementById(p.id);
                Plotly.newPlot(gd, gd.data, gd.layout);
              }
              await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
              out.push(performance.now() - t0);
            }
            return out;
        }""", max(moves // 4, 3))
        browser.close()
    return times, redraw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", type=Path)
    ap.add_argument("--moves", type=int, default=40)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run_dir
        if run is None:
            run = Path(tmp) / "nanda"
            wall = cli("-m", "training.run", *TRAIN, "--out", str(run))
            print(f"trained nanda2023 (400 steps) in {wall:.0f} s; {fill_checkpoints(run)} checkpoints")
        if not (run / "analyses" / "fourier.json").is_file():
            print(f"analyses.fourier once: {cli('-m', 'analyses.fourier', str(run), '--no-progress'):.0f} s")
        if not (run / "analyses" / "landscape.json").is_file():
            print(f"analyses.landscape once: {cli('-m', 'analyses.landscape', str(run), '--no-progress'):.0f} s")
        out = Path(tmp) / "page.html"
        n = len(list((run / "ckpt").glob("step_*.safetensors")))
        wall = cli("-m", "analyses.explore", str(run), "--out", str(out), "--no-progress")
        print(f"{n} checkpoints: page written in {wall:.1f} s (whole command, interpreter start included), "
              f"{out.stat().st_size / 2**20:.1f} MB")
        times, redraw = slider_latency(out, args.moves)
        med, naive = statistics.median(times), statistics.median(redraw)
        print(f"slider, {len(times)} moves: median {med:.0f} ms, max {max(times):.0f} ms per update of every panel; "
              f"drawing every panel anew: median {naive:.0f} ms ({naive / med:.1f}x the update)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
