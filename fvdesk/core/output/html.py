"""The one HTML page fvdesk writes (gallery and atlas indexes): self-contained, no scripts."""

from __future__ import annotations

import html
import json
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
