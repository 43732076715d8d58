"""A gallery's ``index.html``: model, settings summary, contact sheet link and the captioned grid
(the page template is ``html.py``)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

from fvdesk.core.output.html import esc, examples_block, model_line, page, table, text_of
from fvdesk.core.output.items import GalleryItem
from fvdesk.core.output.manifest import CONTACT_SHEET
from fvdesk.core.output.sheet import caption_lines


def settings_summary(items: Sequence[GalleryItem]) -> list[tuple[str, str]]:
    """Settings and preprocessing as (key, value) rows; values that differ between items are
    listed together."""
    keys: dict[str, list[str]] = {}
    for it in items:
        pre = it.provenance.preprocessing
        rows = dict(it.settings)
        if pre is not None:
            rows["preprocessing"] = {k: v for k, v in pre.items() if k != "source"}
        for k, v in rows.items():
            vals = keys.setdefault(k, [])
            if (text := text_of(v)) not in vals:
                vals.append(text)
    return [(k, " | ".join(v[:6]) + (" | …" if len(v) > 6 else "")) for k, v in keys.items()]


def index_html(manifest: dict[str, Any], *, has_sheet: bool = True) -> str:
    """A self-contained page: model, settings summary, contact sheet link and the captioned grid."""
    items = [
        it if isinstance(it, GalleryItem) else GalleryItem.from_dict(it) for it in manifest["items"]
    ]
    model = manifest["model"]
    title = str(manifest.get("title") or model.get("file") or "gallery")
    figs = []
    for it in items:
        lines = caption_lines(it)
        cap = "<br>".join(esc(line) for line in lines)
        src = esc(urllib.parse.quote(it.file))
        image = (
            f'<a href="{src}"><img src="{src}" alt="{esc(lines[0])}" loading="lazy"></a>'
            f"<figcaption>{cap}</figcaption>"
        )
        if it.examples:
            value = None if it.objective == "examples" else it.value
            figs.append(
                f'<figure class="ex"><div class="render">{image}</div>'
                f"<div>{examples_block(it.examples, value)}</div></figure>"
            )
        else:
            figs.append(f"<figure>{image}</figure>")
    sheet = f'<p><a href="{CONTACT_SHEET}">contact sheet</a></p>' if has_sheet else ""
    intro = (
        f"{model_line(model)}, {len(items)} item(s), device {esc(str(manifest.get('device') or '?'))}, "
        f"fvdesk {esc(str(manifest.get('fvdesk_version', '')))}, updated {esc(str(manifest.get('updated', '')))}."
    )
    body = f'{sheet}\n<div class="grid">\n{chr(10).join(figs)}\n</div>'
    return page(title, "gallery", intro, table(settings_summary(items)), body)
