"""Self-contained HTML pages of plotly figures: plotly.js once per file, compressed.

Why a report used to weigh 4.8 MB: plotly.min.js alone is 4.8 MB (plotly 6+),
and ``fig.to_html(include_plotlyjs=True)`` inlines it as text. Here it is
inlined once per page, gzip-compressed and base64-encoded (~1.4 MB), and the
page decompresses it with the browser's own ``DecompressionStream`` before
drawing the figures. No network is needed (``offline`` by default); with
``plotlyjs="cdn"`` the page links plotly's CDN instead (a few kB).

Figures travel as plotly JSON (``<script type=application/json>``, with ``<``
escaped so no run-supplied string can close the script). :func:`figure_dict`
and :func:`figure_div` are what a live view (``rota serve``) reuses: the dict
for ``Plotly.react``, the div for a page built with :func:`page`.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from rota.report.model import ReportError

PlotlyJs = Literal["inline", "cdn"]

PLOTLY_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}

_LOADER = """<script>
(function () {
  function draw() {
    document.querySelectorAll("div.rota-fig").forEach(function (div) {
      var spec = JSON.parse(document.getElementById(div.id + "-json").textContent);
      Plotly.newPlot(div, spec.data || [], spec.layout || {}, spec.config || {});
    });
    document.body.setAttribute("data-figures-drawn", "1");
  }
  var packed = document.getElementById("rota-plotly-gz");
  if (!packed) { draw(); return; }
  var bin = atob(packed.textContent.trim()), bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  new Response(stream).text().then(function (src) {
    var s = document.createElement("script");
    s.textContent = src;
    document.head.appendChild(s);
    draw();
  });
})();
</script>"""


def esc(text: object) -> str:
    """HTML-escape any value (quotes too)."""
    return html.escape(str(text), quote=True)


def _plotly() -> Any:
    try:
        import plotly.io as pio
    except ImportError as exc:
        raise ReportError("HTML reports and Gantt files need plotly: pip install 'rota[report]'") from exc
    return pio


@functools.lru_cache(maxsize=1)
def _packed_plotly_js() -> str:
    """plotly.min.js, gzip level 9, base64 (computed once per process: ~0.5 s)."""
    from plotly.offline import get_plotlyjs

    raw = get_plotlyjs().encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def figure_dict(fig: Any) -> dict[str, Any]:
    """A plotly figure (``go.Figure`` or dict) as plain JSON-able data: ``{"data", "layout"}``."""
    if isinstance(fig, dict):
        return fig
    out: dict[str, Any] = json.loads(_plotly().to_json(fig, validate=False, pretty=False))
    return out


def _json_script(data: Any) -> str:
    # "<" as \u003c: a label holding "</script>" cannot end the element early.
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str).replace("<", "\\u003c")


def figure_div(fig: Any, div_id: str, height_px: int | None = None) -> str:
    """The HTML of one figure: an empty div the page's loader draws into, and its JSON.

    ``div_id`` must be unique in the page (letters, digits, ``-``, ``_``).
    """
    spec = figure_dict(fig)
    spec = {"data": spec.get("data", []), "layout": spec.get("layout", {}), "config": PLOTLY_CONFIG}
    height = height_px or int(spec["layout"].get("height") or 450)
    return (f'<div class=rota-fig id="{esc(div_id)}" style="width:100%;height:{height}px"></div>'
            f'<script type="application/json" id="{esc(div_id)}-json">{_json_script(spec)}</script>')


def plotly_script(plotlyjs: PlotlyJs = "inline") -> str:
    """The ``<script>`` elements that bring plotly.js (packed inline, or from plotly's CDN)."""
    if plotlyjs == "cdn":
        from plotly.offline import get_plotlyjs_version

        return f'<script src="https://cdn.plot.ly/plotly-{esc(get_plotlyjs_version())}.min.js"></script>'
    if plotlyjs != "inline":
        raise ReportError(f"plotly.js must be 'inline' or 'cdn', found {plotlyjs!r}")
    return f'<script type="application/octet-stream" id="rota-plotly-gz">{_packed_plotly_js()}</script>'


def page(title: str, body: str | Sequence[str], css: str = "", plotlyjs: PlotlyJs = "inline") -> str:
    """A whole HTML page: ``body`` (HTML, already escaped) with figures made by :func:`figure_div`.

    plotly.js comes once, at the end, then the loader that draws every figure;
    ``<body data-figures-drawn="1">`` marks that drawing finished.
    """
    _plotly()
    text = body if isinstance(body, str) else "\n".join(body)
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{css}</style></head>"
            f"<body>{text}\n{plotly_script(plotlyjs)}\n{_LOADER}</body></html>")


def figure_written(fig: Any, path: Path, plotlyjs: PlotlyJs = "inline") -> Path:
    """Write one figure to ``path``: ``.json`` plotly JSON, else a page of its own (plotly.js once)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(figure_dict(fig), allow_nan=False, default=str), encoding="utf-8")
    else:
        title = str(figure_dict(fig).get("layout", {}).get("title", {}).get("text") or path.stem)
        path.write_text(page(title, figure_div(fig, "figure"), "body{margin:8px;font-family:sans-serif}", plotlyjs),
                        encoding="utf-8")
    return path
