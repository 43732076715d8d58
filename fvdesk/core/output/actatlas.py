"""The activation atlas folder: its manifest, the events of a run, the overview and the page.

Torch-free, so the app's view reads an atlas on the GUI thread.  Layout of ``DIR``::

    DIR/actatlas.json    the manifest: model, job, render settings, preprocessing, the command
                         that rebuilds it, the collection, the layout and every cell
    DIR/vectors.npz      the collected vectors, where each came from, their 2-D map, cell means
    DIR/tiles/cNNNN.png  each cell's render (its mean activation vector as a direction)
    DIR/crops/cNNNN_K.png  the cell's dataset crops (the receptive fields of its closest vectors)
    DIR/atlas.png        every tile at its grid place; DIR/index.html the page
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import ConfigError
from fvdesk.core.fileio import atomic_write_bytes, atomic_write_text, parse_json
from fvdesk.core.output.html import esc, model_line, page, table, text_of

FORMAT = "fvdesk-activation-atlas"
VERSION = 1
MANIFEST = "actatlas.json"
VECTORS = "vectors.npz"
OVERVIEW = "atlas.png"
INDEX = "index.html"
TILE_PX = 64  # a tile's side in the overview


@dataclass(frozen=True)
class AtlasLaidOut:
    """The vectors are laid out: ``cells`` will be rendered (``done`` of them already are)."""

    cells: int
    done: int
    out: str


@dataclass(frozen=True)
class CellRendered:
    """Cell ``cell`` is committed (its tile written, then the manifest)."""

    cell: int
    tile: str
    done: int
    total: int


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the atlas in ``out`` (``ConfigError``, one sentence, when it is not one)."""
    path = Path(out)
    if path.is_dir():
        path = path / MANIFEST
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist, so there is no activation atlas there."
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable activation atlas manifest ({e}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an fvdesk activation atlas manifest.")
    if int(data.get("version", 0)) > VERSION:
        raise ConfigError(f"{path} was written by a newer fvdesk (version {data['version']}).")
    return data


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    import json

    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def write_overview(out: Path, manifest: dict[str, Any], tile: int = TILE_PX) -> Path:
    """``atlas.png``: every rendered tile at its grid place (empty cells stay dark)."""
    from PIL import Image

    n = int(manifest["job"]["grid"])
    sheet = Image.new("RGB", (n * tile, n * tile), (24, 24, 24))
    for c in manifest["cells"]:
        if c.get("tile") and (out / c["tile"]).is_file():
            with Image.open(out / c["tile"]) as im:
                sheet.paste(im.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS),
                            (c["i"] * tile, c["j"] * tile))  # fmt: skip
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(out / OVERVIEW, buf.getvalue())
    return out / OVERVIEW


def cell_caption(c: dict[str, Any]) -> str:
    """``12 vectors · units 5, 17, 3 · supports stripes (+2.1)``: how a cell is described."""
    parts = [f"{c['count']:,} vectors", "units " + ", ".join(str(u) for u, _ in c["top_units"][:3])]
    cls = c.get("class")
    if cls:
        parts.append(f"supports {cls['label']} ({cls['score']:+.2f})")
    if c.get("folders"):
        name, k = c["folders"][0]
        parts.append(f"{100 * k / max(c['count'], 1):.0f} % {name or '(top folder)'}")
    return " · ".join(parts)


def write_index(out: Path, manifest: dict[str, Any]) -> Path:
    """``index.html``: the grid of tiles (hover for a cell's caption) and each cell's crops."""
    job = manifest["job"]
    n = int(job["grid"])
    by_place = {(c["i"], c["j"]): c for c in manifest["cells"]}
    rows = []
    for j in range(n):
        tds = []
        for i in range(n):
            c = by_place.get((i, j))
            if c is None or not c.get("tile"):
                tds.append("<td></td>")
                continue
            frame = ""
            if c.get("class"):  # the class atlas: one hue per class (as the app's frames)
                frame = f' style="outline:3px solid hsl({int(c["class"]["index"] * 137.508) % 360},70%,60%)"'
            tds.append(f'<td><a href="#c{c["id"]}"><img src="{esc(c["tile"])}" width="48" '
                       f'height="48"{frame} title="{esc(cell_caption(c))}"></a></td>')  # fmt: skip
        rows.append("<tr>" + "".join(tds) + "</tr>")
    grid = f'<table class="atlas" style="border-spacing:0">{"".join(rows)}</table>'
    cells = []
    for c in manifest["cells"]:
        crops = "".join(f'<img src="{esc(k["file"])}" width="48" title="{esc(k["source"])}">'
                        for k in c.get("crops", []))  # fmt: skip
        tile = f'<img src="{esc(c["tile"])}" width="96">' if c.get("tile") else "(not rendered)"
        cells.append(f'<div id="c{c["id"]}"><p><b>cell {c["id"]}</b> ({c["i"]}, {c["j"]}): '
                     f"{esc(cell_caption(c))}</p>{tile} {crops}</div>")  # fmt: skip
    col = manifest.get("collection", {})
    intro = (
        f"{model_line(manifest['model'])}; layer <b>{esc(job['layer'])}</b>; "
        f"{col.get('vectors', 0):,} vectors from {col.get('images', 0):,} images "
        f"({col.get('per_image', 0)} positions each); {len(manifest['cells'])} cells of a "
        f"{n}×{n} grid with at least {job['min_count']} vectors. Rebuild it with "
        f"<code>{esc(manifest.get('command', ''))}</code>."
    )
    settings = table([(k, text_of(v)) for k, v in sorted(manifest.get("settings", {}).items())])
    html = page(f"Activation atlas of {job['layer']}", "activation atlas", intro, settings,
                grid + "".join(cells))  # fmt: skip
    atomic_write_text(out / INDEX, html)
    return out / INDEX
