"""Gantt chart files for ``rota plan --gantt``: HTML (plotly) or PNG (kaleido, else matplotlib).

The drawing is the report's timeline (:func:`rota.report.timeline.gantt_figure`):
colour by task group, state as outline and pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rota.lanes import stack_rows
from rota.report.figures import time_unit
from rota.report.model import Lane, LaneLike, ReportError, as_lanes
from rota.report.page import figure_div, page
from rota.report.timeline import (
    SHARED_LANES_NOTE,
    STATE_STYLE,
    gantt_figure,
    group_colors,
    sub_row_name,
)

_CSS = "body{font-family:system-ui,sans-serif;margin:16px;color:#1f2933}.note{color:#616e7c;font-size:13px}"


def render_gantt_file(
    lanes: Sequence[LaneLike], path: str | Path, title: str = "rota plan"
) -> Path:
    """Write a Gantt chart of ``lanes`` to ``path`` and return it.

    ``.html``/``.htm``: plotly, self-contained. ``.png``: plotly + kaleido when
    both import and work, else matplotlib when installed, else a ReportError
    naming what to install. Any other suffix, or an unwritable path, is a
    ReportError.
    """
    out = Path(path)
    lane_list = as_lanes(lanes)
    suffix = out.suffix.lower()
    try:
        if suffix in (".html", ".htm"):
            fig = gantt_figure(lane_list, title)
            out.write_text(page(title, [figure_div(fig, "gantt"), f"<p class=note>{SHARED_LANES_NOTE}</p>"],
                                _CSS), encoding="utf-8")
            return out
        if suffix != ".png":
            raise ReportError(f"--gantt file must end in .html or .png, found {out.name!r}")
        kaleido_error: Exception | None = None
        try:
            import kaleido  # noqa: F401

            fig = gantt_figure(lane_list, title)
            fig.write_image(str(out), width=1400, height=int(fig.layout.height or 400))
            return out
        except ImportError:
            pass
        except (OSError, RuntimeError, ValueError) as exc:  # kaleido present but unusable
            kaleido_error = exc
        try:
            _gantt_png_matplotlib(lane_list, out, title)
        except ImportError as exc:
            hint = f" (kaleido failed: {kaleido_error})" if kaleido_error else ""
            raise ReportError(
                "writing a PNG Gantt needs kaleido or matplotlib: "
                f"pip install 'rota[report]' kaleido, or pip install matplotlib{hint}; "
                "or write .html instead"
            ) from exc
        return out
    except OSError as exc:
        raise ReportError(f"cannot write Gantt chart to {str(out)!r}: {exc}") from exc


def _gantt_png_matplotlib(lanes: list[Lane], out: Path, title: str) -> dict[str, str]:
    """The PNG without kaleido: the same rows, colours (by group, in order of first start, as
    :func:`gantt_figure`) and state styles, with the legend of groups beside it; returns the
    legend, ``{group: colour}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max((b for lane in lanes for _, _, b in lane.items), default=1.0)
    unit, scale = time_unit(end)
    rows: list[str] = []
    bars: list[tuple[int, float, float, str, str, str]] = []
    for lane in lanes:
        sub = stack_rows([(a, b) for _, a, b in lane.items])
        base = len(rows)
        rows += [sub_row_name(lane.name, r) for r in range(max(sub, default=0) + 1)]
        for k, (label, a, b) in enumerate(lane.items):
            state = lane.states[k] if lane.states else ""
            bars.append((base + sub[k], a / scale, (b - a) / scale, label, state, lane.group(k)))
    # Colours in order of first start (ties: lane order), as the HTML Gantt gives them: by lane
    # order the PNG and the HTML of one plan coloured the same group differently.
    colors = group_colors([b[5] for b in sorted(bars, key=lambda b: b[1])])
    fig, ax = plt.subplots(figsize=(14, max(2.5, 0.9 + 0.4 * len(rows), 1.2 + 0.25 * len(colors))), dpi=100)
    try:
        for row, left, width, label, state, group in bars:
            pattern, outline, lw = STATE_STYLE.get(state, ("", "white", 1.0))
            ax.barh(row, width, left=left, color=colors[group], edgecolor=outline, linewidth=lw,
                    hatch={"x": "xx", "/": "//", ".": ".."}.get(pattern), alpha=0.45 if state == "cached" else 1.0)
            if width * scale / end * 1150 >= 6.6 * len(label) + 8:  # the label only where it fits
                ax.text(left + 0.005 * end / scale, row, label, va="center", fontsize=7, clip_on=True)
        ax.set_yticks(range(len(rows)), rows)
        ax.invert_yaxis()
        ax.set_xlabel(f"time since start ({unit})")
        ax.set_title(title)
        ax.set_axisbelow(True)
        ax.grid(axis="x", color="#eee")
        # Which colour is which group: the HTML's legend (without it the PNG could not be read).
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(facecolor=c, label=g) for g, c in colors.items()], title="task group",
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=9, frameon=False)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return colors
