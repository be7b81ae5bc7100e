"""`python -m analyses.explore`: the run and sweep pages, opened in headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright) as a reader would: no console error, no network request, the slider moves every panel to
the chosen checkpoint's values (the analysis' own numbers), a sweep point opens its run's page; and bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from analyses.explore import main
from analyses.fourier import load as load_fourier
from tests.grokking import GROKKING

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
browser_only = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium; "
                                                                  ".ci/run installs it)")
# the page keeps 4 significant digits (analyses.explore_panels.DIGITS): half a unit in the 4th digit is <= 5e-4
REL = 1e-3


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Page:
    """A page opened from its file:// URL, recording console errors and every request."""

    def __init__(self, browser, path: Path, width: int = 1400):
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_function("window.explore !== undefined")

    def js(self, expr: str):
        return self.page.evaluate(expr)

    def trace(self, pid: str, t: int = 0) -> dict:
        return self.js(f"(() => {{ const d = document.getElementById('{pid}').data[{t}];"
                       " return {x: d.x, y: d.y, z: d.z}; })()")

    def cursor(self, pid: str) -> float:
        return self.js(f"(() => {{ const s = document.getElementById('{pid}').layout.shapes; "
                       "return s[s.length - 1].x0; })()")

    def readout(self, pid: str) -> str:
        return self.page.locator(f"#{pid}-readout").text_content()

    def offline(self) -> bool:
        return not self.errors and all(u.startswith("file://") for u in self.requests)


def g4(x: float) -> str:
    """A number as a readout shows it: 4 significant digits."""
    return f"{float(f'{x:.4g}'):.4g}"


def close(values, expected, rel=REL, abs_=0.0) -> bool:
    return len(values) == len(expected) and all(
        (a is None and (b is None or not math.isfinite(b))) or (a is not None and math.isclose(a, b, rel_tol=rel,
                                                                                          abs_tol=abs_))
        for a, b in zip(values, expected))


@pytest.fixture(scope="module")
def run_page(grokked_run_master, tmp_path_factory):
    run = Path(shutil.copytree(grokked_run_master, tmp_path_factory.mktemp("explore") / "run"))
    assert main([str(run), "--no-progress"]) == 0
    return run


def neuron_on_grid(run: Path, step: int, neuron: int, a: list[int], b: list[int]) -> list[list[float]]:
    """The neuron's activation at '=' on the (a, b) grid, from TransformerLens hooks (not the probes' code)."""
    import torch

    from training.runs.reader import Run

    r = Run(run)
    p = r.data.d_vocab_out
    tokens = torch.tensor([[i, j, p] for i in a for j in b])
    _, cache = r.model(step).run_with_cache(tokens)
    return cache["blocks.0.mlp.hook_post"][:, -1, neuron].reshape(len(a), len(b)).tolist()


@browser_only
@pytest.mark.parametrize("width", [1400, 800])
def test_the_slider_moves_every_panel_to_that_checkpoints_values(browser, run_page, width):
    res = load_fourier(run_page)
    c = res.checkpoints
    steps = json.loads((run_page / "analyses" / "explore.html").read_text().split(
        "id='explore-data'>", 1)[1].split("</script>", 1)[0])["steps"]
    page = Page(browser, run_page / "analyses" / "explore.html", width)
    shown = {}
    for k in (3, len(steps) // 2):  # two checkpoints: what the panels show must follow the slider
        step = steps[k]
        page.page.locator("#slider").fill(str(k))
        assert page.js("document.body.dataset.step") == str(step)
        i = c["step"].index(step)
        for pid in ("loss", "accuracy", "ablations"):
            assert page.cursor(pid) == max(step, 1) and page.readout(pid).startswith(f"step {step}:")
        metrics = {r["step"]: r for r in map(json.loads, (run_page / "metrics.jsonl").read_text().splitlines())}
        assert f"test loss {g4(metrics[step]['test_loss'])}" in page.readout("loss")
        assert f"restricted loss {g4(c['restricted_loss'][i])}" in page.readout("ablations")
        assert close(page.trace("fourier_norms")["y"], c["embed_norms_by_freq"][i])
        assert page.trace("clusters")["y"] == [c["cluster_sizes_key"][str(f)][i] for f in res.key_frequencies]
        assert close(page.trace("attention")["y"], c["attention_from_eq"][i], abs_=1e-4)
        g = page.trace("neuron")
        neuron = int(page.js("document.getElementById('neuron').layout.title.text").split()[1][:-2])
        want = neuron_on_grid(run_page, step, neuron, g["y"], g["x"])
        # the page rounds each frame to 3 significant digits of its largest value: half a unit there is
        # <= 0.005 * top; float32 sums in a different order differ far less
        top = max(abs(v) for row in want for v in row)
        assert all(close(r1, r2, rel=0, abs_=5.5e-3 * top) for r1, r2 in zip(g["z"], want))
        shown[step] = page.trace("fourier_norms")["y"]
    assert len({json.dumps(v) for v in shown.values()}) == 2  # the two checkpoints differ
    if width == 800:  # nothing wider than the window: every panel fits
        assert page.js("document.documentElement.scrollWidth") <= 800
        assert page.js("Math.max(...[...document.querySelectorAll('.js-plotly-plot')]"
                       ".map(d => d.getBoundingClientRect().right))") <= 800
    assert page.offline(), (page.errors, page.requests)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    from training.sweeps.drive import sweep
    from training.sweeps.spec import SweepSpec

    out = tmp_path_factory.mktemp("sweep") / "frac"
    # tests.grokking's tiny run at d_model 32, d_mlp 64, cut at 150 steps: it memorises (S_mem ~80), seldom generalises
    tiny = {**{k: v for k, v in GROKKING.items() if k not in ("frac", "stop_after_gen")}, "steps": 150,
            "d_model": 32, "d_mlp": 64,
            "eval_every": 10, "ckpt_floor": 3, "ckpt_max": 6, "device": "cpu"}
    index = sweep(SweepSpec("default", {"frac": [0.5, 0.8]}, [0, 1], tiny), out, workers=1, progress=False,
                  log=lambda s: None)
    assert all(e["status"] == "done" for e in index["runs"])
    assert main([str(out), "--no-progress"]) == 0
    return out, index


@browser_only
def test_sweep_points_are_the_runs_numbers_and_open_their_pages(browser, tiny_sweep):
    out, index = tiny_sweep
    page = Page(browser, out / "analyses" / "explore.html", 800)
    summaries = {e["dir"]: json.loads((out / e["dir"] / "summary.json").read_text()) for e in index["runs"]}
    t = page.js("document.getElementById('sweep_0_frac').data[0]")  # S_mem of each seed
    assert t["name"] == "S_mem (each seed)" and len(t["customdata"]) == len(index["runs"])
    by_dir = {e["dir"]: e for e in index["runs"]}
    for x, y, href in zip(t["x"], t["y"], t["customdata"]):
        target = (out / "analyses" / href).resolve()
        assert target.is_file() and target.name == "explore.html"
        d = target.parent.parent.name
        assert summaries[d]["S_mem"] == y and by_dir[d]["params"]["frac"] == x
    never = page.js("document.getElementById('sweep_0_frac').data[3]")  # no S_gen: a cross at the budget
    assert never["name"] == "no S_gen (at its budget)" and never["marker"]["symbol"] == "x"
    assert sorted(never["customdata"]) == sorted(h for h, d in zip(t["customdata"], [
        (out / "analyses" / h).resolve().parent.parent.name for h in t["customdata"]]) if summaries[d]["S_gen"] is None)
    assert set(never["y"]) <= {150}
    assert page.offline(), (page.errors, page.requests)
    # a reader clicks the first point: the browser opens that run's page
    pos = page.js("(() => { const g = document.getElementById('sweep_0_frac'), L = g._fullLayout;"
                  " const r = g.getBoundingClientRect(), d = g.data[0];"
                  " return [r.left + L.xaxis._offset + L.xaxis.d2p(d.x[0]), "
                  "r.top + L.yaxis._offset + L.yaxis.d2p(d.y[0])]; })()")
    with page.page.expect_navigation():
        page.page.mouse.click(*pos)
    from urllib.parse import unquote

    # seeds with the same numbers lie on top of each other: the click opens the topmost one's page
    same = [h for x, y, h in zip(t["x"], t["y"], t["customdata"]) if (x, y) == (t["x"][0], t["y"][0])]
    assert unquote(page.page.url) in [unquote((out / "analyses" / h).resolve().as_uri()) for h in same]
    assert "grokscope explorer" in page.page.title()
    page.page.wait_for_function("window.explore !== undefined")  # the run page draws, with the sweep's plotly.js
    assert page.js("document.querySelectorAll('.js-plotly-plot').length") >= 4 and page.offline(), page.errors


def page_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.html"))


def test_bad_input_is_one_line_exit_2_and_nothing_written(grokked_run, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main([str(tmp_path / "plain")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(grokked_run, empty)
    for f in (empty / "ckpt").iterdir():
        f.unlink()
    assert main([str(empty), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoints" in err
    (tmp_path / "file").write_text("x")
    assert main([str(grokked_run), "--out", str(tmp_path / "file" / "page.html"), "--no-progress"]) == 2
    assert main([str(grokked_run), "--out", str(tmp_path / "plain"), "--no-progress"]) == 2
    assert main([str(grokked_run), "--out", "/dev/null", "--no-progress"]) == 2  # never replaced by a page
    assert Path("/dev/null").is_char_device()
    errs = capsys.readouterr().err.splitlines()
    assert len(errs) == 3 and all(e.startswith("analyses.explore: error: --out") for e in errs)
    assert page_files(tmp_path) == [] and not (grokked_run / "analyses").exists()
    # where it must succeed: the same run, a writable --out
    assert main([str(grokked_run), "--out", str(tmp_path / "page.html"), "--no-progress"]) == 0
    assert page_files(tmp_path) == [tmp_path / "page.html"]


def test_an_analyses_folder_that_is_a_link_is_refused_before_any_work(grokked_run, tmp_path, capsys):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    (grokked_run / "analyses").symlink_to(mine)
    for argv in ([], ["--out", str(tmp_path / "page.html")]):  # the page there, or the analyses computed there
        assert main([str(grokked_run), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "symbolic link" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and not (tmp_path / "page.html").exists()


def test_an_analysis_written_earlier_is_reused_not_recomputed(run_page, tmp_path):
    """The page shows what fourier.json says: a doctored file shows up on the page (and --no-compute computes
    nothing for a run that has no analyses: the page has the training curves only)."""
    run = Path(shutil.copytree(run_page, tmp_path / "run"))
    path = run / "analyses" / "fourier.json"
    d = json.loads(path.read_text())
    d["checkpoints"]["restricted_loss"] = [123.0] * len(d["checkpoints"]["step"])
    path.write_text(json.dumps(d))
    assert main([str(run), "--no-progress", "--out", str(tmp_path / "a.html")]) == 0
    assert "restricted loss 123" in (tmp_path / "a.html").read_text()
    shutil.rmtree(run / "analyses")
    assert main([str(run), "--no-progress", "--no-compute", "--out", str(tmp_path / "b.html")]) == 0
    text = (tmp_path / "b.html").read_text()
    assert '"id":"loss"' in text and '"id":"fourier_norms"' not in text and not (run / "analyses").exists()


def test_the_loss_landscape_is_computed_for_a_run_that_has_none(run_page):
    """The landscape applies to a run of any task: the first page of a run without analyses computed it, wrote
    landscape.json beside fourier.json and shows its panel."""
    from analyses import landscape

    slices = landscape.load(run_page).slices
    text = (run_page / "analyses" / "explore.html").read_text()
    assert slices and '"id":"landscape"' in text and (run_page / "analyses" / "fourier.json").is_file()


# --- the other task families, on the analyses' fixture runs and the results their commands wrote -------------

FAMILY_RUNS = {"add": ("fourier", "sparsity", "landscape"), "s4": ("cosets",), "repeat": ("sequence",)}


@pytest.fixture(scope="module")
def family_pages(tmp_path_factory):
    """The fixture runs with the JSON their analyses wrote (tests/analyses/fixtures/expected), pages written
    with --no-compute: the page must show exactly those results."""
    from tests.analyses.golden import copy_fixture, expected

    tmp = tmp_path_factory.mktemp("families")
    runs = {}
    for name, analyses in FAMILY_RUNS.items():
        run = copy_fixture(f"runs/{name}", tmp)
        (run / "analyses").mkdir()
        for a in analyses:
            path, _ = expected(a, f"runs/{name}")
            shutil.copy(path, run / "analyses" / f"{a}.json")
        assert main([str(run), "--no-compute", "--no-progress"]) == 0
        runs[name] = run
    return runs


def open_at(browser, run: Path, k: int) -> tuple[Page, int]:
    page = Page(browser, run / "analyses" / "explore.html")
    page.page.locator("#slider").fill(str(k))
    return page, page.js("window.explore.data.steps")[k]


def last_at_or_before(steps: list[int], step: int) -> int:
    return max(i for i, s in enumerate(steps) if s <= step) if steps[0] <= step else 0


@browser_only
def test_parity_and_landscape_panels_follow_the_slider(browser, family_pages):
    from analyses import landscape, sparsity

    run = family_pages["add"]
    sp, ls = sparsity.load(run), landscape.load(run)
    page, step = open_at(browser, run, 3)
    i = sp.steps.index(step)
    assert page.cursor("sparsity") == step and page.readout("sparsity") == \
        f"step {step}: effective sparsity {sp.effective_sparsity[i]}"
    kde_steps = sorted(int(s) for s in sp.kde["density"])
    shown = kde_steps[last_at_or_before(kde_steps, step)]
    assert close(page.trace("kde")["y"], sp.kde["density"][str(shown)])
    slices = sorted(ls.slices, key=lambda s: s["step"])
    sl = slices[last_at_or_before([s["step"] for s in slices], step)]
    assert close(page.trace("landscape", 1)["y"], sl["test_loss"]) and close(page.trace("landscape", 0)["x"],
                                                                             sl["total_norms"])
    assert page.offline(), (page.errors, page.requests)


@browser_only
def test_group_panels_show_that_steps_rows_and_best_cosets(browser, family_pages):
    from analyses import cosets
    from analyses.explore_families import colours
    from interp.cosets import coset_partitions, group_rows
    from training.tasks.groups import get_group
    from training.runs.reader import Run

    run = family_pages["s4"]
    res = cosets.load(run)
    page, step = open_at(browser, run, 2)
    i = res.steps.index(step)
    tl = res.matrices["W_U"]["timeline"]
    assert page.readout("coset_score").endswith(f"best: {tl['top_label'][i]}") and page.cursor("coset_score") == step
    part = coset_partitions(get_group(res.group))[tl["top"][i]]
    for how in ("pca", "tsne"):  # t-SNE at a few steps: the one shown is at or before the slider's
        marker = page.js(f"document.getElementById('rows_{how}_W_U').data[0].marker.color")
        shown = int(page.readout(f"rows_{how}_W_U").split(":")[0].split()[1])
        assert shown <= step and marker == colours(coset_partitions(get_group(res.group))[
            tl["top"][res.steps.index(shown)]].labels)
    assert page.js("document.getElementById('rows_pca_W_U').data[0].marker.color") == colours(part.labels)
    # the rows' principal components, by scikit-learn (signs are arbitrary)
    from sklearn.decomposition import PCA

    xy = PCA(2).fit_transform(group_rows(Run(run).model(step), res.order)["W_U"])
    t = page.trace("rows_pca_W_U")
    for got, want in ((t["x"], xy[:, 0]), (t["y"], xy[:, 1])):
        assert close([abs(v) for v in got], [abs(v) for v in want], rel=1e-3, abs_=1e-6 * max(abs(want)))
    assert page.offline(), (page.errors, page.requests)


@browser_only
def test_sequence_panels_read_out_that_steps_losses_and_head_scores(browser, family_pages):
    from analyses import sequence

    run = family_pages["repeat"]
    res = sequence.load(run)
    page, step = open_at(browser, run, 2)
    ind = res.induction
    j = last_at_or_before(ind["steps"], step)
    scores = ind["scores"][ind["score"]][j]  # [layers][heads]
    text = page.readout("induction")
    assert text.startswith(f"step {ind['steps'][j]}:") and page.cursor("induction") == step
    for layer, row in enumerate(scores):
        for head, v in enumerate(row):
            assert f"L{layer}H{head} {g4(v)}" in text
    cv = res.curves
    k = last_at_or_before(cv["steps"], step)
    for name in res.target_names:
        assert f"{name} {g4(cv['test_loss'][name][k])}" in page.readout("targets")
    assert page.offline(), (page.errors, page.requests)


@browser_only
def test_method_sweep_page_shows_each_methods_runs(browser, tmp_path):
    """A sweep with methods (fixture runs without checkpoints: no run pages, so no links)."""
    from analyses.sweep_methods import analyse
    from tests.analyses.golden import copy_fixture

    sweep = copy_fixture("sweeps/methods", tmp_path)
    assert main([str(sweep), "--no-progress"]) == 0
    res = analyse(sweep)
    page = Page(browser, sweep / "analyses" / "explore.html")
    medians = page.js("document.getElementById('sweep_methods').data[3]")  # S_gen medians
    assert medians["x"] == [g["method"] for g in res.groups] and \
        close(medians["y"], [g["S_gen"]["median"] for g in res.groups])
    assert page.page.locator("#runs tr").count() == len(res.rows) + 1
    assert page.offline(), (page.errors, page.requests)


def test_a_run_its_familys_analysis_does_not_fit_gets_the_curves(tmp_path, capsys):
    """Modular addition of 3 operands: no Fourier grid. The page has the curves and the loss landscape (which
    applies to any run), says why there is no more, and writes no Fourier result into the run."""
    from tests.conftest import tiny_config
    from training.loop import train

    run = tmp_path / "kadd"
    train(tiny_config(task="kadd", k=3, steps=20, eval_every=10), run, progress=False)
    assert main([str(run), "--no-progress", "--out", str(tmp_path / "p.html")]) == 0
    assert "no fourier panels" in capsys.readouterr().err
    assert [p.name for p in (run / "analyses").iterdir()] == ["landscape.json"]
    text = (tmp_path / "p.html").read_text()
    assert '"id":"loss"' in text and '"id":"landscape"' in text and '"id":"fourier_norms"' not in text
