"""Images and galleries for scripts: ``RenderedImage``, ``GalleryView``, ``open_gallery`` and
``save_gallery``, and how they show themselves in a notebook.

Captions are the core's (``caption_lines`` of the gallery item a result becomes), so a notebook
shows what the saved gallery, the CLI and the app show.  Saving commits results the way
``fvdesk render --out`` does (``BatchCommitter``, then ``finalize``).  Torch-free.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from fvdesk.core.errors import GalleryError
from fvdesk.core.optim.events import UnitDoneEvent
from fvdesk.core.output.atlas import BatchCommitter
from fvdesk.core.output.gallery import (
    MAX_SHEET_ITEMS,
    Gallery,
    GalleryItem,
    ModelInfo,
    caption_lines,
    contact_sheet_png,
    encode_png,
    read_gallery,
)
from fvdesk.core.output.html import esc

__all__ = ["GalleryView", "RenderedImage", "open_gallery", "save_gallery"]

#: Rows a notebook table shows before "and N more".
TABLE_ROWS = 64


class RenderedImage:
    """One image and the gallery item it is (or would be) saved as: its caption, label, value,
    unit, and the provenance record that renders it again."""

    def __init__(self, item: GalleryItem, image: np.ndarray) -> None:
        self.item = item
        self.image = image

    @property
    def caption(self) -> str:
        """How fvdesk names the image everywhere (tiles, galleries, contact sheets)."""
        return caption_lines(self.item)[0]

    @property
    def label(self) -> str | None:
        """The class name of the unit, when it has one."""
        return self.item.label

    @property
    def value(self) -> float | None:
        """The objective's value on the final image (not negated for negative renders)."""
        return self.item.value

    @property
    def layer(self) -> str:
        """The layer the image is filed under."""
        return self.item.layer

    @property
    def unit(self) -> int:
        """The unit (-1 when the image is not about one unit)."""
        return self.item.unit

    @property
    def facet(self) -> int:
        """Which of the unit's images this is."""
        return self.item.facet

    @property
    def provenance(self) -> dict[str, Any]:
        """The record that reproduces the pixels (``fvdesk render --from`` reads it)."""
        return dict(self.item.provenance)

    def png(self) -> bytes:
        """The image as PNG bytes, with its gallery entry embedded as gallery PNGs have it."""
        return encode_png(self.image, self.item)

    def __repr__(self) -> str:
        h, w = self.image.shape[:2]
        return f"<fvdesk.RenderedImage {self.caption} {w}x{h} value {self.item.value}>"

    def _repr_png_(self) -> bytes:
        return contact_sheet_png([self.item], [self.image])

    def _repr_html_(self) -> str:
        return items_html([self.item], [self.image], "")


def items_html(items: Sequence[GalleryItem], images: Sequence[np.ndarray], title: str) -> str:
    """A small table for notebooks: each image (inline PNG) beside its caption lines."""
    rows = []
    for it, img in list(zip(items, images, strict=True))[:TABLE_ROWS]:
        data = base64.b64encode(encode_png(img)).decode("ascii")
        cap = "<br>".join(esc(line) for line in caption_lines(it))
        rows.append(
            f'<tr><td><img src="data:image/png;base64,{data}" width="64" '
            f'style="image-rendering: pixelated" alt="{esc(caption_lines(it)[0])}"></td>'
            f"<td>{cap}</td></tr>"
        )
    more = len(items) - TABLE_ROWS
    tail = f"<tr><td></td><td>… and {more} more</td></tr>" if more > 0 else ""
    head = f"<p><b>{esc(title)}</b>: {len(items)} image(s)</p>" if title else ""
    return f"{head}<table>{''.join(rows)}{tail}</table>"


def sheet_png(items: Sequence[GalleryItem], images: Sequence[np.ndarray]) -> bytes:
    """The contact sheet a gallery would write for these items (at most the sheet's limit)."""
    return contact_sheet_png(list(items)[:MAX_SHEET_ITEMS], list(images)[:MAX_SHEET_ITEMS])


class _Images(Sequence[RenderedImage]):
    """Shared by ``Renders`` and ``GalleryView``: a sequence of ``RenderedImage`` that shows
    itself as a contact sheet (PNG) or a captioned table (HTML)."""

    title: str
    _images: list[RenderedImage]

    def __len__(self) -> int:
        return len(self._images)

    @overload
    def __getitem__(self, k: int) -> RenderedImage: ...
    @overload
    def __getitem__(self, k: slice) -> list[RenderedImage]: ...
    def __getitem__(self, k: int | slice) -> RenderedImage | list[RenderedImage]:
        return self._images[k]

    def __iter__(self) -> Iterator[RenderedImage]:
        return iter(self._images)

    @property
    def images(self) -> list[np.ndarray]:
        """The images, uint8 (H, W, C), in order."""
        return [x.image for x in self._images]

    @property
    def captions(self) -> list[str]:
        """Each image's caption, in order."""
        return [x.caption for x in self._images]

    def _repr_png_(self) -> bytes | None:
        if not self._images:
            return None
        return sheet_png([x.item for x in self._images], self.images)

    def _repr_html_(self) -> str:
        return items_html([x.item for x in self._images], self.images, self.title)


class GalleryView(_Images):
    """A gallery folder read back: its items with their images and captions."""

    def __init__(self, folder: Path, manifest: dict[str, Any], pairs: Sequence[tuple[GalleryItem, Any]]) -> None:  # fmt: skip
        self.folder = folder
        self.manifest = manifest
        self.title = str(manifest.get("title") or folder.name)
        self._images = [RenderedImage(it, img) for it, img in pairs]

    @property
    def model(self) -> dict[str, str]:
        """The model the gallery belongs to: its ``file`` name and ``sha256``."""
        return dict(self.manifest.get("model") or {})

    @property
    def index_html(self) -> Path:
        """The gallery's ``index.html`` (open it in a browser)."""
        return self.folder / "index.html"

    def __repr__(self) -> str:
        return (
            f"<fvdesk.GalleryView {self.folder}: {len(self)} image(s) of {self.model.get('file')}>"
        )


def open_gallery(folder: str | os.PathLike[str]) -> GalleryView:
    """Read a gallery folder (or its ``gallery.json``) back; ``GalleryError`` names the folder
    when it is missing, not a gallery, or damaged."""
    path = Path(folder)
    path = path.parent if path.suffix.lower() == ".json" else path
    manifest, pairs = read_gallery(path)
    return GalleryView(path, manifest, pairs)


def save_gallery(folder: str | os.PathLike[str], renders: Any | Iterable[Any], *, title: str = "") -> GalleryView:  # fmt: skip
    """Save one ``Renders`` (or several, of one model) as a gallery in ``folder`` (new, empty or
    a gallery of the same model, whose items with the same keys are replaced) and read it back.

    The images are committed as ``fvdesk render --out`` commits them, with the contact sheet and
    ``index.html``; ``GalleryError`` names the folder when it cannot be written or belongs to
    another model."""
    group: list[Any] = [renders] if hasattr(renders, "results") else list(renders)
    if not group:
        raise GalleryError(f"There is nothing to save in {folder}.")
    models = {r.model.sha256 for r in group}
    if len(models) > 1:
        raise GalleryError(
            f"A gallery holds one model's images; the renders to save in {folder} come from "
            f"{len(models)} models."
        )
    first = group[0]
    name = title or (first.title if len(group) == 1 else f"{first.title} and {len(group) - 1} more")
    gallery = Gallery.open(folder, ModelInfo.from_model(first.model.loaded), title=name,
                           device=first.device)  # fmt: skip
    for r in group:
        committer = BatchCommitter(gallery, device=r.device)
        for result in r.results:
            committer.offer(UnitDoneEvent(result))
        committer.flush()
    gallery.finalize(prune=True)
    return open_gallery(folder)
