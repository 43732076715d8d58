"""Images in a gallery: PNG encoding (the item's entry embedded), and the contact sheet, a
captioned grid of every item."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import GalleryError
from fvdesk.core.output.items import GalleryItem

#: The contact sheet shows at most this many items (index.html shows all of them).
MAX_SHEET_ITEMS = 1024


def as_uint8_image(image: np.ndarray) -> np.ndarray:
    """HxWxC uint8 (C = 1, 3 or 4) from uint8 or float-in-[0, 1] arrays, HxW or CxHxW-free."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise GalleryError(f"A gallery image must be HxWxC with C in 1, 3, 4; got shape {a.shape}.")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise GalleryError(f"A gallery image must be uint8 or float in [0, 1]; got {a.dtype}.")
        a = (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def encode_png(image: np.ndarray, item: GalleryItem | None = None) -> bytes:
    """PNG bytes; the item's manifest entry is embedded as a ``fvdesk`` text chunk."""
    from PIL import Image, PngImagePlugin

    a = as_uint8_image(image)
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    info = PngImagePlugin.PngInfo()
    if item is not None:
        info.add_itxt("fvdesk", json.dumps(item.to_dict(), ensure_ascii=False))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("RGB", "L", "RGBA"):
                img = img.convert("RGB")
            a = np.asarray(img)
    except FileNotFoundError:
        raise GalleryError(f"The gallery image {path} is missing.") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise GalleryError(f"The gallery image {path} cannot be read ({e}).") from None
    return a[:, :, None] if a.ndim == 2 else a


def caption_lines(item: GalleryItem) -> list[str]:
    """The item's caption (the one the job gave it), its class label, its value."""
    head = item.display_caption
    lines = [head]
    if item.label and item.label not in head:
        lines.append(str(item.label))
    value = "n/a" if item.value is None else f"{item.value:.4g}"
    lines.append(f"value {value}" + (" dead" if item.dead else ""))
    return lines


#: Fonts with wide coverage (Greek, math signs, accents) that Pillow finds on common systems.
_SHEET_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "LiberationSans-Regular.ttf",
                "Arial Unicode.ttf", "arial.ttf", "Arial.ttf")  # fmt: skip
#: Pillow's built-in font lacks the signs fvdesk's own captions use; spelled out in ASCII there.
_ASCII = str.maketrans({"−": "-", "·": "*", "×": "x", "∞": "inf", "Ø": "O", "…": "...",
                        "²": "^2", "λ": "lambda", "σ": "sigma"})  # fmt: skip


def sheet_text(line: str, full: bool) -> str:
    """A caption as the sheet's font can draw it (no boxes for missing glyphs)."""
    return line if full else line.translate(_ASCII)


@functools.lru_cache(maxsize=1)
def sheet_font() -> tuple[Any, bool]:
    """The caption font and whether it covers more than ASCII (else captions are spelled out)."""
    from PIL import ImageFont

    for name in _SHEET_FONTS:
        with contextlib.suppress(OSError):
            return ImageFont.truetype(name, 11), True
    return ImageFont.load_default(), False


def contact_sheet_png(
    items: Sequence[GalleryItem],
    images: Sequence[np.ndarray],
    *,
    tile: int = 128,
    max_cols: int = 12,
) -> bytes:
    """A captioned grid; small tiles are upscaled by an integer factor with nearest neighbour."""
    from PIL import Image, ImageDraw

    n = len(items)
    cols = max(1, min(n, max_cols, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols) if n else 1
    font, full = sheet_font()
    line_h = _line_height(font)
    pad = 6
    cap_h = 3 * line_h + 4
    cell_w, cell_h = tile + 2 * pad, tile + cap_h + 2 * pad
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (item, image) in enumerate(zip(items, images, strict=True)):
        r, c = divmod(i, cols)
        x0, y0 = c * cell_w + pad, r * cell_h + pad
        thumb = _thumbnail(as_uint8_image(image), tile)
        sheet.paste(thumb, (x0 + (tile - thumb.width) // 2, y0 + (tile - thumb.height) // 2))
        ty = y0 + tile + 2
        for k, line in enumerate(caption_lines(item)[:3]):
            text = _fit_text(draw, sheet_text(line, full), font, tile, keep_end=k == 0)
            draw.text((x0, ty), text, fill=(20, 20, 20), font=font)
            ty += line_h
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _line_height(font: Any) -> int:
    try:
        box = font.getbbox("Ag")
        return int(box[3] - min(box[1], 0)) + 3
    except AttributeError:  # pragma: no cover - very old bitmap font API
        return 13


def _thumbnail(a: np.ndarray, tile: int) -> Any:
    from PIL import Image

    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).convert("RGB")
    h, w = a.shape[:2]
    side = max(h, w)
    if side <= tile:
        k = max(1, tile // side)
        return img.resize((w * k, h * k), Image.Resampling.NEAREST)
    s = tile / side
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def _fit_text(draw: Any, text: str, font: Any, width: int, *, keep_end: bool = False) -> str:
    """Shorten ``text`` with an ellipsis to fit ``width`` px; ``keep_end`` keeps the tail (where
    ``layer:unit`` has the unit number and the distinctive part of a long layer path)."""
    if draw.textlength(text, font=font) <= width:
        return text

    def cut(k: int) -> str:
        return "…" + text[len(text) - k :] if keep_end else text[:k] + "…"

    lo, hi = 0, len(text)
    while lo < hi:  # the most characters that fit with the ellipsis
        mid = (lo + hi + 1) // 2
        if draw.textlength(cut(mid), font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    return cut(lo)
