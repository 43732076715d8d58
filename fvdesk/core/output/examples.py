"""Dataset examples in galleries: crops copied in, and the record each item carries.

``attach_examples`` gives items of a gallery their unit's examples: each crop is cut from the
source image, written atomically into the gallery's ``examples/`` folder, and then the items'
manifest entries are committed with an ``examples`` record (see ``fvdesk.core.output.gallery``)
naming the crops, values, source paths relative to the dataset folder and the unit's
histogram.  A crash in between leaves orphan crops (pruned later), never an entry without its
files.  ``write_examples_gallery`` writes a gallery of examples alone (no render): each item's
picture is a grid of the unit's top crops.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.dataset.cache import FIT_POLICY
from fvdesk.core.dataset.examples import (
    Example,
    ExampleImages,
    LayerExamples,
    UnitExamples,
    example_images,
    montage,
)
from fvdesk.core.errors import GalleryError
from fvdesk.core.fileio import atomic_write_bytes
from fvdesk.core.imagefolder import ImageSkipped
from fvdesk.core.output.gallery import (
    EXAMPLES_DIR,
    Gallery,
    GalleryItem,
    ModelInfo,
    encode_png,
)

#: Bins of the histogram stored with an item (merged from the pass's finer one).
RECORD_BINS = 32


@dataclass
class ItemExamples:
    """What one gallery item shows: its unit's examples, with ``top`` replaced when the item
    stands for part of them (a cluster facet shows its cluster's members)."""

    unit: UnitExamples
    top: list[Example] | None = None


class Crops:
    """Cuts example crops, decoding each source image once per run (a small LRU)."""

    def __init__(self, size: int = 64, images: int = 8) -> None:
        self._cache = _Lru(size)  # (root, rel, box) -> ExampleImages, or None: unreadable
        self._decoded = _Lru(images)  # decoded sources: a photo is in many units' examples

    def get(self, root: Path, ex: Example) -> ExampleImages | None:
        """``None`` when the source can no longer be read."""
        key = (str(root), ex.rel, ex.source_box)
        if key in self._cache:
            return self._cache[key]
        try:
            value: ExampleImages | None = example_images(root, ex, decoded=self._decoded)
        except (ImageSkipped, OSError):
            value = None
        self._cache[key] = value
        return value


class _Lru(OrderedDict):
    """A mapping that keeps its ``size`` most recently used entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __getitem__(self, key: Any) -> Any:
        self.move_to_end(key)
        return super().__getitem__(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def _coarse(edges: np.ndarray, counts: np.ndarray, bins: int) -> tuple[list[float], list[int]]:
    """Merge neighbouring bins down to at most ``bins`` (exact: whole bins are summed)."""
    k = max(1, math.ceil(len(counts) / bins))
    n = math.ceil(len(counts) / k)
    c = np.zeros(n, np.int64)
    np.add.at(c, np.arange(len(counts)) // k, counts)
    e = [float(edges[min(i * k, len(edges) - 1)]) for i in range(n)] + [float(edges[-1])]
    return e, [int(v) for v in c]


def examples_record(ie: ItemExamples, top_files: Sequence[tuple[Example, str]],
                    bottom_files: Sequence[tuple[Example, str]], value: float | None,
                    preprocessing: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The ``examples`` entry of a gallery item (see ``fvdesk.core.output.gallery``)."""
    ux = ie.unit
    h = ux.histogram
    edges, counts = _coarse(h.edges, h.counts, RECORD_BINS) if h.count else ([], [])
    below = ux.fraction_below(value) if value is not None else math.nan
    return {
        "dataset": str(ux.root),
        "measure": ux.measure,
        "count": ux.count,
        "fit": FIT_POLICY,
        "preprocessing": preprocessing or {},
        "top": [{"file": f, **ex.to_dict()} for ex, f in top_files],
        "bottom": [{"file": f, **ex.to_dict()} for ex, f in bottom_files],
        "histogram": {"edges": edges, "counts": counts},
        "below": None if not math.isfinite(below) else round(below, 6),
    }


def _write_crops(folder: Path, stem: str, part: str, ux: UnitExamples,
                 examples: Sequence[Example], crops: Crops) -> list[tuple[Example, str]]:  # fmt: skip
    out = []
    for j, ex in enumerate(examples):
        images = crops.get(ux.root, ex)
        if images is None:
            continue
        rel = f"{EXAMPLES_DIR}/{stem}_{part}{j}.png"
        try:
            atomic_write_bytes(folder / rel, encode_png(images.crop))
        except OSError as e:
            raise GalleryError(f"Cannot write {folder / rel}: {e.strerror or e}.") from None
        out.append((ex, rel))
    return out


def attach_examples(
    gallery: Gallery,
    lookup: Callable[[GalleryItem], ItemExamples | None],
    *,
    preprocessing: dict[str, Any] | None = None,
    again: bool = False,
    crops: Crops | None = None,
    batch: int = 64,
) -> int:
    """Give this writer's items their examples (those without any, or all when ``again``);
    ``lookup(item)`` says which (``None``: none for it).  Returns how many items got them."""
    crops = crops or Crops()
    todo = [it for it in gallery.own_items if again or not it.examples]
    done = 0
    for start in range(0, len(todo), batch):
        updated = []
        for it in todo[start : start + batch]:
            ie = lookup(it)
            if ie is None:
                continue
            stem = Path(it.file).stem
            top = ie.top if ie.top is not None else ie.unit.top
            tf = _write_crops(gallery.folder, stem, "top", ie.unit, top, crops)
            bf = _write_crops(gallery.folder, stem, "bottom", ie.unit, ie.unit.bottom, crops)
            value = None if it.objective == "examples" else it.value
            rec = examples_record(ie, tf, bf, value, preprocessing)
            updated.append(replace(it, examples=rec))
        if updated:
            gallery.update_items(updated)
            done += len(updated)
    return done


def write_examples_gallery(
    out: str | Path,
    model_info: ModelInfo | Any,
    layer: LayerExamples,
    units: Sequence[int],
    *,
    labels: Callable[[int], str | None] = lambda _u: None,
    top: int | None = None,
    bottom: int | None = None,
    preprocessing: dict[str, Any] | None = None,
    device: str = "",
    title: str = "",
) -> Gallery:
    """A gallery of ``units``' examples alone: one item per unit (objective ``examples``),
    pictured by a grid of its top crops, carrying the full examples record."""
    g = Gallery.open(out, model_info, title=title or f"examples of {layer.layer}", device=device)
    crops = Crops(size=max(64, 2 * (top or layer.k)))
    per_unit: dict[int, UnitExamples] = {}
    for start in range(0, len(units), 64):
        pairs = []
        for u in units[start : start + 64]:
            ux = layer.unit(u, top=top, bottom=bottom)
            per_unit[u] = ux
            pics = [c.crop for c in (crops.get(ux.root, ex) for ex in ux.top) if c is not None]
            item = GalleryItem(
                layer=layer.layer,
                unit=u,
                label=labels(u),
                objective="examples",
                value=ux.top[0].value if ux.top else None,
                caption=f"{layer.layer}:{u} examples",
            )
            pairs.append((item, montage(pics) if pics else np.full((8, 8, 3), 255, np.uint8)))
        g.add_many(pairs)
    attach_examples(g, lambda it: ItemExamples(per_unit[it.unit]) if it.unit in per_unit else None,
                    preprocessing=preprocessing, again=True, crops=crops)  # fmt: skip
    g.finalize(prune=True)
    return g
