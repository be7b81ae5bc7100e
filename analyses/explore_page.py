"""The HTML of `python -m analyses.explore`'s pages: plotly.js embedded, the data as one JSON block, and a small
script that draws the panels and, when the slider moves, restyles the moving traces, moves the cursors and
rewrites the readouts (one Plotly.update or relayout per panel: no figure is rebuilt)."""

from __future__ import annotations

import html
import json
from typing import Any

CSS = """body{font-family:sans-serif;margin:1em;max-width:1400px}h1{font-size:1.3em}
#bar{position:sticky;top:0;background:#fff;padding:.5em 0;z-index:10;border-bottom:1px solid #ddd}
#slider{width:100%}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1em}
.panel{border:1px solid #eee;padding:.3em;min-width:0}.readout{font-size:.85em;color:#333;min-height:1.2em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em}
@media (max-width:900px){.grid{grid-template-columns:1fr}}"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById('explore-data').textContent);
const CONFIG = {responsive: true, displaylogo: false};
function base(p) {
  for (const ax of ['xaxis', 'yaxis']) {  // axis titles as plain strings in the data; plotly.js wants {text}
    if (p.layout[ax] && typeof p.layout[ax].title === 'string') p.layout[ax].title = {text: p.layout[ax].title};
  }
  return Object.assign({title: {text: p.title, font: {size: 13}}, height: 330, autosize: true,
                        margin: {l: 55, r: 15, t: 45, b: 45}, legend: {font: {size: 10}}}, p.layout);
}
function draw() {
  for (const p of D.panels) {
    const layout = base(p);
    if (p.cursor) {
      layout.shapes = (layout.shapes || []).concat([{type: 'line', xref: 'x', yref: 'paper', x0: 1, x1: 1,
                                                     y0: 0, y1: 1, line: {color: 'black', width: 2}}]);
      p.cursorShape = layout.shapes.length - 1;
    }
    Plotly.newPlot(p.id, p.traces, layout, CONFIG);
    if (p.links) {
      document.getElementById(p.id).on('plotly_click', ev => {
        const href = ev.points[0].customdata;
        if (href) window.location.href = href;
      });
    }
  }
}
function update(i) {
  if (!D.steps) return;
  const step = D.steps[i];
  document.getElementById('step').textContent = step;
  for (const p of D.panels) {
    const k = 'shapes[' + p.cursorShape + ']';  // a step of 0 sits at 1 on a log axis
    const lay = p.cursor ? {[k + '.x0']: Math.max(step, 1), [k + '.x1']: Math.max(step, 1)} : {};
    p.dyn.forEach((d, n) => {  // the last moving trace and the cursor in one Plotly.update: one redraw
      const traces = Array.isArray(d.trace) ? d.trace : [d.trace];
      if (n === p.dyn.length - 1) Plotly.update(p.id, d.frames[d.at[i]], lay, traces);
      else Plotly.restyle(p.id, d.frames[d.at[i]], traces);
    });
    if (p.cursor && !p.dyn.length) Plotly.relayout(p.id, lay);
    if (p.readout) document.getElementById(p.id + '-readout').textContent = p.readout[i];
  }
  document.body.dataset.step = step;
}
draw();
if (D.steps) {
  const slider = document.getElementById('slider');
  slider.addEventListener('input', () => update(Number(slider.value)));
  update(Number(slider.value));
}
window.explore = {update: update, data: D};
"""


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def data_json(data: dict[str, Any]) -> str:
    """The page's data as JSON that cannot end the <script> element early."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/")


def render(title: str, intro: list[str], data: dict[str, Any], extra_html: str = "", js_src: str | None = None) -> str:
    """One page: the title, a few lines of context, the slider (when `data` has steps), the panels, `extra_html`
    (e.g. a table of links) and the script; plotly.js embedded, or loaded from the relative path `js_src` (the
    pages of a sweep share one copy)."""
    e = html.escape
    steps = data.get("steps")
    bar = ""
    if steps:
        last = len(steps) - 1
        bar = (f"<div id='bar'><label for='slider'>checkpoint: step <b id='step'>{steps[last]}</b> "
               f"({len(steps)} checkpoints, {steps[0]} to {steps[-1]})</label>"
               f"<input type='range' id='slider' min='0' max='{last}' step='1' value='{last}'></div>")
    panels = "".join(f"<div class='panel'><div id='{e(p['id'])}'></div>"
                     f"<div class='readout' id='{e(p['id'])}-readout'></div></div>" for p in data["panels"])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{e(title)}</title><style>{CSS}</style>"
            + (f"<script src='{e(js_src)}'></script>" if js_src else f"<script>{plotly_js()}</script>") + "</head>"
            f"<body><h1>{e(title)}</h1>"
            + "".join(f"<p>{line}</p>" for line in intro) + bar + f"<div class='grid'>{panels}</div>{extra_html}"
            f"<script type='application/json' id='explore-data'>{data_json(data)}</script>"
            f"<script>{SCRIPT}</script></body></html>\n")
