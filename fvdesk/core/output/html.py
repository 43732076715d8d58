"""The one HTML page fvdesk writes (gallery and atlas indexes): self-contained, no scripts."""

from __future__ import annotations

import html
import json
import urllib.parse
from collections.abc import Iterable
from typing import Any

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
figure { margin: 0; }
img { image-rendering: pixelated; background: #eee; }
.grid img { width: 100%; }
figcaption { font-size: 12px; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 1em; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }
td.t img { width: 48px; height: 48px; margin-right: 2px; }
.examples { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 4px; }
.examples img { width: 48px; height: 48px; image-rendering: auto; }
figure.ex { grid-column: span 3; display: flex; gap: 10px; align-items: flex-start; }
figure.ex > div.render { flex: 0 0 150px; }
figure.ex > div.render img { width: 150px; }
figure.ex .side { font-size: 11px; color: #555; }
figure.ex .side b { color: #222; }
svg.hist rect { fill: #9ab; } svg.hist line { stroke: #d33; stroke-width: 1.5; }
"""

esc = html.escape


def text_of(value: Any) -> str:
    """A setting's value as people read it (strings as they are, the rest as JSON)."""
    return (
        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    )


def table(rows: Iterable[tuple[str, str]], header: Iterable[str] = ()) -> str:
    """Rows of already-escaped-free text cells as a table (every cell escaped here)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


def examples_block(examples: dict[str, Any], value: float | None = None) -> str:
    """A gallery item's dataset examples: the top and bottom crops (each linking to itself,
    titled with its value and source file) and the unit's histogram with ``value`` marked."""
    parts = []
    count = examples.get("count")
    where = f"{count:,} images in " if isinstance(count, int) else ""
    parts.append(
        f'<div class="side">{esc(where)}<code>{esc(str(examples.get("dataset", "")))}</code>, '
        f"{esc(str(examples.get('measure', '')))}</div>"
    )
    for part, name in (("top", "most excited"), ("bottom", "least excited")):
        entries = examples.get(part) or []
        if not entries:
            continue
        imgs = "".join(
            f'<a href="{esc(urllib.parse.quote(e["file"]))}"><img src="{esc(urllib.parse.quote(e["file"]))}" '
            f'loading="lazy" alt="" title="{esc(_value_text(e.get("value")))} — {esc(str(e.get("source", "")))}"></a>'
            for e in entries
        )
        parts.append(f'<div class="side"><b>{name}</b></div><div class="examples">{imgs}</div>')
    hist = examples.get("histogram") or {}
    svg = histogram_svg(hist.get("edges") or [], hist.get("counts") or [], value)
    below = examples.get("below")
    if svg:
        note = (
            f" render above {100 * below:.1f}% of the images"
            if isinstance(below, (int, float)) and value is not None
            else ""
        )
        parts.append(f'<div class="side">{svg}{esc(note)}</div>')
    return "".join(parts)


def _value_text(v: Any) -> str:
    return "value n/a" if not isinstance(v, (int, float)) else f"value {v:.4g}"


def histogram_svg(edges: list[float], counts: list[int], value: float | None = None,
                  width: int = 160, height: int = 28) -> str:  # fmt: skip
    """A small inline bar chart of a histogram, ``value`` drawn as a red line."""
    if len(counts) < 1 or len(edges) != len(counts) + 1 or max(counts, default=0) <= 0:
        return ""
    lo, hi = float(edges[0]), float(edges[-1])
    span = (hi - lo) or 1.0
    top = max(counts)
    bars = []
    for i, c in enumerate(counts):
        x0 = (float(edges[i]) - lo) / span * width
        x1 = (float(edges[i + 1]) - lo) / span * width
        h = c / top * (height - 2)
        bars.append(
            f'<rect x="{x0:.1f}" y="{height - h:.1f}" width="{max(x1 - x0, 0.5):.1f}" height="{h:.1f}"/>'
        )
    mark = ""
    if value is not None and lo <= value <= hi:
        x = (value - lo) / span * width
        mark = f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}"/>'
    elif value is not None:
        x = width if value > hi else 0
        mark = f'<line x1="{x}" y1="0" x2="{x}" y2="{height}"/>'
    return (
        f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"{''.join(bars)}{mark}</svg>"
    )


def model_line(model: dict[str, Any]) -> str:
    return (
        f"Model <b>{esc(str(model.get('file', '?')))}</b> "
        f"(sha256 <code>{esc(str(model.get('sha256', ''))[:16])}…</code>)"
    )


def page(title: str, kind: str, intro: str, settings: str, body: str) -> str:
    """``intro``, ``settings`` and ``body`` are HTML fragments built with ``esc``."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{esc(title)} — fvdesk {esc(kind)}</title>
<style>{_CSS}</style></head><body>
<h1>{esc(title)}</h1>
<p>{intro}</p>
<details><summary>Settings</summary>{settings}</details>
{body}
</body></html>
"""
