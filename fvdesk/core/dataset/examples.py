"""A layer's dataset examples: the summary a pass leaves, and the image crops it points to.

``summarize`` streams a store's rows (``cache.LayerStore``) through ``StreamingTopK`` (top and
bottom images per unit) and ``StreamingHistogram`` (the unit's objective value per image: the
channel mean, the neuron's value, the logit), in chunks, so memory is O(units x k) whatever the
folder's size.  ``LayerExamples.unit(u)`` gives one unit's ``UnitExamples``: each ``Example``
knows its image (relative to the dataset root), value, grid position and the box its receptive
field covers, in model-input pixels and in the source image's own pixels.

Ranking: ``top`` is by the unit's spatial maximum (where it fired most; the crop is centred
there), ``bottom`` by its spatial minimum (where it was most negative), for a neuron by its value
at its position.  The histogram is of the objective value a render maximizes, so a render's
value can be placed in it (``UnitExamples.fraction_below``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.dataset.cache import LayerStore, Lookup
from fvdesk.core.dataset.receptive import ReceptiveField
from fvdesk.core.dataset.stats import HistogramView, StreamingHistogram, StreamingTopK
from fvdesk.core.imagefolder import FolderScan, geometry, load_image

#: Crops are saved at most this many pixels on their longer side (and tiny ones enlarged).
CROP_PX = 128
FULL_PX = 256
_MIN_CROP_PX = 64


@dataclass(frozen=True)
class Example:
    """One image of a unit's top or bottom list."""

    rel: str  # path relative to the dataset root (POSIX)
    value: float
    grid: tuple[int, int]  # (y, x) on the layer's grid
    box: tuple[float, float, float, float]  # receptive field (x0, y0, x1, y1), model-input px
    source_box: tuple[float, float, float, float]  # the same box in the source image's px
    source_size: tuple[int, int]  # (width, height) of the source image, EXIF-rotated
    index: int = -1  # position in the folder scan

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.rel,
            "value": _finite(self.value),
            "grid": list(self.grid),
            "box": [round(v, 2) for v in self.source_box],
            "size": list(self.source_size),
        }


@dataclass
class UnitExamples:
    """One unit's examples: ``top`` (most excited first), ``bottom`` (least first), histogram."""

    layer: str
    unit: int
    measure: str
    root: Path
    count: int
    top: list[Example]
    bottom: list[Example]
    histogram: HistogramView

    def fraction_below(self, value: float | None) -> float:
        """Share of the dataset's images whose objective value is below ``value`` (0-1)."""
        return math.nan if value is None else self.histogram.fraction_below(float(value))

    def path(self, ex: Example) -> Path:
        return self.root / ex.rel


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


class LayerExamples:
    """The summary of one layer over a folder (see the module docstring)."""

    def __init__(self, *, layer: str, measure: str, root: Path, count: int, grid: tuple[int, int],
                 field: ReceptiveField, input_size: tuple[int, int], top: StreamingTopK,
                 bottom: StreamingTopK, hist: StreamingHistogram,
                 files: dict[int, tuple[str, int, int]]) -> None:  # fmt: skip
        self.layer, self.measure, self.root, self.count = layer, measure, root, count
        self.grid, self.field, self.input_size = grid, field, input_size
        self._top, self._bottom, self._hist, self._files = top, bottom, hist, files

    @property
    def units(self) -> int:
        return self._top.units

    @property
    def k(self) -> int:
        return self._top.k

    def unit(self, u: int, *, top: int | None = None, bottom: int | None = None) -> UnitExamples:
        """Unit ``u``'s examples (the first ``top`` / ``bottom`` of those kept)."""
        if not 0 <= u < self.units:
            raise IndexError(f"unit {u} is out of range: {self.layer} has {self.units} units")
        return UnitExamples(
            self.layer,
            u,
            self.measure,
            self.root,
            self.count,
            self._examples(self._top, u, top),
            self._examples(self._bottom, u, bottom),
            self._hist.view(u),
        )

    def _examples(self, tk: StreamingTopK, u: int, n: int | None) -> list[Example]:
        out = []
        gh, gw = self.grid
        h, w = self.input_size
        for j in range(min(tk.values.shape[1], tk.k if n is None else n)):
            i = int(tk.index[u, j])
            rel, sw, sh = self._files[i]
            p = int(tk.pos[u, j])
            gy, gx = (p // gw, p % gw) if gw else (0, 0)
            box = self.field.box(gy, gx)
            src = geometry(sw, sh, h, w).to_source(box)
            out.append(Example(rel, float(tk.values[u, j]), (gy, gx), box, src, (sw, sh), i))
        return out


def summarize(store: LayerStore, lk: Lookup, scan: FolderScan, *, layer: Any, measure: str,
              field: ReceptiveField, input_size: tuple[int, int], top: int, bottom: int,
              bins: int = 64) -> LayerExamples:  # fmt: skip
    """Stream the store's valid rows into top/bottom lists and histograms (see module)."""
    units = store.units
    tk = StreamingTopK(units, top)
    bk = StreamingTopK(units, bottom, largest=False)
    hist = StreamingHistogram(units, bins)
    for gidx, rows in store.rows(lk):
        tk.update(rows["max"], gidx, rows["amax"])
        bk.update(rows["min"], gidx, rows["amin"])
        hist.update(rows["mean"])
    used = {int(i) for i in np.unique(np.concatenate([tk.index.ravel(), bk.index.ravel()]))}
    files = {i: (scan.images.rel(i), *lk.size_of(i)) for i in used}
    grid = layer.spatial or (1, 1)
    return LayerExamples(layer=layer.name, measure=measure, root=scan.root, count=lk.valid,
                         grid=(int(grid[0]) or 1, int(grid[1]) or 1), field=field,
                         input_size=input_size, top=tk, bottom=bk, hist=hist, files=files)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Images of examples
# ------------------------------------------------------------------------------------------------
@dataclass
class ExampleImages:
    """What a viewer shows for an example: the whole image (at most ``FULL_PX``) with the crop's
    box in its pixels, and the crop (at most ``CROP_PX``); uint8 (H, W, 3)."""

    full: np.ndarray
    box: tuple[float, float, float, float]
    crop: np.ndarray


def example_images(root: str | os.PathLike[str], ex: Example, *, full_px: int = FULL_PX,
                   crop_px: int = CROP_PX, decoded: Any = None) -> ExampleImages:  # fmt: skip
    """Decode ``ex``'s source image and cut its crop (raises ``ImageSkipped`` when the file can
    no longer be read, ``FileNotFoundError`` when it is gone).  ``decoded``: a mapping the
    caller keeps (``output.examples.Crops``), so the examples of one image at one layer, which
    ask for the same decode, share it."""
    from PIL import Image

    draft = _draft_size(ex, full_px, crop_px)
    key = (str(root), ex.rel, draft)
    if decoded is not None and key in decoded:
        img, (w, h) = decoded[key]
    else:
        img, (w, h) = load_image(Path(root) / ex.rel, draft=draft)
        if decoded is not None:
            decoded[key] = (img, (w, h))
    k = img.width / w if w else 1.0
    x0, y0, x1, y1 = (v * k for v in ex.source_box)
    crop = img.crop((int(math.floor(x0)), int(math.floor(y0)),
                     max(int(math.ceil(x1)), int(math.floor(x0)) + 1),
                     max(int(math.ceil(y1)), int(math.floor(y0)) + 1)))  # fmt: skip
    crop = _fit_px(crop, crop_px)
    s = min(1.0, full_px / max(img.width, img.height))
    full = (
        img
        if s >= 1
        else img.resize(
            (max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.BILINEAR
        )
    )
    box = (x0 * s, y0 * s, x1 * s, y1 * s)
    return ExampleImages(np.asarray(full, np.uint8), box, np.asarray(crop, np.uint8))


def _draft_size(ex: Example, full_px: int, crop_px: int) -> tuple[int, int] | None:
    """The smallest decode that still gives the crop ``crop_px`` and the whole image ``full_px``
    on their longer sides (a JPEG then decodes at 1/2-1/8 scale: a 12 MP photo's crops cost a
    tenth); ``None`` (every pixel) when the source size is unknown."""
    sw, sh = ex.source_size
    x0, y0, x1, y1 = ex.source_box
    box = max(x1 - x0, y1 - y0)
    if sw <= 0 or sh <= 0 or box <= 0:
        return None
    k = min(1.0, max(crop_px / box, full_px / max(sw, sh)))
    side = math.ceil(k * min(sw, sh))  # load_image asks for both sides to be at least this
    return (side, side)


def _fit_px(img: Any, px: int) -> Any:
    """At most ``px`` on the longer side; tiny crops enlarged by a whole factor (pixels kept)."""
    from PIL import Image

    side = max(img.width, img.height)
    if side > px:
        s = px / side
        return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                          Image.Resampling.BILINEAR)  # fmt: skip
    if side < _MIN_CROP_PX:
        f = math.ceil(_MIN_CROP_PX / side)
        return img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)
    return img


def montage(
    images: Sequence[np.ndarray], *, cols: int = 3, cell: int = 96, gap: int = 2
) -> np.ndarray:
    """Crops side by side in a grid on white (the picture of an examples-only gallery item)."""
    from PIL import Image

    n = max(1, len(images))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    sheet = Image.new("RGB", (cols * cell + (cols - 1) * gap, rows * cell + (rows - 1) * gap),
                      (255, 255, 255))  # fmt: skip
    for i, a in enumerate(images):
        im = Image.fromarray(np.asarray(a, np.uint8)).convert("RGB")
        s = cell / max(im.width, im.height)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                       Image.Resampling.BILINEAR if s < 1 else Image.Resampling.NEAREST)  # fmt: skip
        r, c = divmod(i, cols)
        x = c * (cell + gap) + (cell - im.width) // 2
        y = r * (cell + gap) + (cell - im.height) // 2
        sheet.paste(im, (x, y))
    return np.asarray(sheet, np.uint8)
