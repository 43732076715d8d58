"""The gallery format: a folder of PNGs plus a manifest, written so no crash can corrupt it.

A gallery folder holds:

* one PNG per item, named from layer and unit (``conv1_u0003.png``; sanitized so any file system
  accepts it, with a short hash appended when sanitizing or truncating makes two names collide),
* ``gallery.json``, the manifest (see below); sharded writers use ``gallery.shard-I-of-N.json``
  instead, and readers take the union of all manifest files (newest entry wins per item),
* ``contact_sheet.png``, a captioned grid of all items, and
* ``index.html``, a self-contained page showing the grid with captions and the settings.

Manifest (``format`` ``"fvdesk-gallery"``, ``version`` 2)::

    {"format", "version", "fvdesk_version", "title", "model": {"file", "sha256"}, "device",
     "created", "updated",
     "items": [{"file", "layer", "unit", "facet", "label", "caption", "objective", "negative",
                "value", "dead", "seed", "steps", "provenance", "timestamp", "device",
                "seconds", "examples"}, ...]}

``provenance`` is the record that reproduces the item (``fvdesk.core.jobs.job.Job.provenance``:
the job with its objective terms, the item's slot and batch, settings, preprocessing, seed, model
hash); ``fvdesk render --from gallery.json --item N`` renders it again.  Version 1 manifests (a
``settings`` dict instead of ``provenance``) are read as items without a full record.

``examples`` (optional; absent in older manifests, which read as items without examples) holds
the unit's dataset examples (``fvdesk.core.output.examples``)::

    {"dataset": absolute folder, "measure", "count", "preprocessing", "fit",
     "top": [{"file": "examples/NAME.png", "source": path relative to the dataset, "value",
              "box": [x0, y0, x1, y1] in the source image's pixels, "size": [w, h]}, ...],
     "bottom": [...], "histogram": {"edges": [...], "counts": [...]}, "below": fraction}

The crops live in the gallery's ``examples/`` sub-folder, written before the manifest entry that
names them (so an entry never names a missing crop); ``prune`` removes crops no entry names.

Crash safety: ``Gallery.add`` writes the PNG atomically and *then* commits the manifest
atomically, so an entry always has its PNG; a PNG without an entry (the process died between the
two steps) is simply rendered again and overwritten.  Derived files (contact sheet, index) are
rebuilt from the manifest by ``finalize``.

Concurrency: each writer owns exactly one manifest file.  N shards of an atlas can therefore
write into the same folder at once (each into ``gallery.shard-I-of-N.json``); ``merge_gallery``
folds them into ``gallery.json``.  Two writers with the *same* manifest file are not supported.

This module is Qt-free; the GUI's Save Gallery and the CLI both write through it.

The parts: ``items.py`` (items, model identity), ``naming.py`` (PNG names), ``manifest.py``
(the folder's files, reading manifests), ``store.py`` (``Gallery``, the writer), ``sheet.py``
(PNGs, the contact sheet), ``index_page.py`` (index.html); their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import GalleryError
from fvdesk.core.fileio import atomic_write_bytes, atomic_write_text
from fvdesk.core.output.index_page import index_html, settings_summary  # noqa: F401
from fvdesk.core.output.items import (  # noqa: F401 - the format's names, importable from here
    EXAMPLES_DIR,
    GalleryItem,
    ItemKey,
    ModelInfo,
    _clean_examples,
    _finite_or_none,
    _int_or_none,
    _now,
    item_key,
    job_variant,
)
from fvdesk.core.output.manifest import (  # noqa: F401
    _SHARD_RE,
    CONTACT_SHEET,
    FORMAT,
    INDEX,
    MANIFEST,
    SHARD_GLOB,
    VERSION,
    _dumps,
    _load,
    _Loaded,
    _read_manifest,
    _sorted_items,
    manifest_files,
    shard_manifest_name,
)
from fvdesk.core.output.naming import (  # noqa: F401
    _FORBIDDEN,
    _RESERVED,
    MAX_STEM_BYTES,
    _fit_suffix,
    _fold,
    _short_hash,
    item_stem,
    safe_stem,
)
from fvdesk.core.output.sheet import (  # noqa: F401
    _ASCII,
    _SHEET_FONTS,
    MAX_SHEET_ITEMS,
    _fit_text,
    _line_height,
    _read_png,
    _thumbnail,
    as_uint8_image,
    caption_lines,
    contact_sheet_png,
    encode_png,
    sheet_font,
    sheet_text,
)
from fvdesk.core.output.store import _STALE_TMP_SECONDS, Gallery  # noqa: F401


# ------------------------------------------------------------------------------------------------
# Convenience API (GUI, CLI)
# ------------------------------------------------------------------------------------------------
def read_gallery(
    folder: str | os.PathLike[str],
    *,
    images: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[dict[str, Any], list[tuple[GalleryItem, np.ndarray | None]]]:
    """Load a gallery back: ``(manifest, [(item, image), ...])``.

    ``manifest`` is the merged manifest dict (items as dicts, all manifest files combined);
    images are HxWxC uint8 (``None`` with ``images=False``).  A missing or unreadable PNG, a
    corrupt manifest or a folder that is not a gallery raises ``GalleryError``.  ``progress``
    (fraction, message) follows the images decoded: a large atlas takes a while.
    """
    path = Path(folder)
    if not path.is_dir():
        raise GalleryError(f"The gallery folder {path} does not exist.")
    g = Gallery.open(path, None, create=False)
    out: list[tuple[GalleryItem, np.ndarray | None]] = []
    items = g.items
    for n, it in enumerate(items):
        if progress is not None:
            progress(n / len(items), f"Reading {path.name}: image {n + 1} of {len(items)}")
        if images:
            out.append((it, g._image_for(it)))
        elif (path / it.file).is_file():
            out.append((it, None))
        else:
            raise GalleryError(f"The gallery image {path / it.file} is missing.")
    return g.manifest(), out


def write_gallery(
    folder: str | os.PathLike[str],
    model_info: ModelInfo | Any,
    items_with_images: Iterable[tuple[GalleryItem, np.ndarray]],
    *,
    title: str = "",
    device: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> Path:
    """Save a set of renders as a gallery in one go (the GUI's Save Gallery); returns the folder.

    Into a new or empty folder, or into an existing gallery of the same model (the duplicate-key
    rule of ``Gallery``: an item with a committed item's key replaces it, items of this save that
    share a key are all kept).  All-or-nothing: new
    PNGs are written under names no committed entry uses, then the manifest is committed once,
    then the contact sheet and index are replaced and superseded PNGs deleted.  If anything fails
    before the end, the new files are removed and the previous manifest, contact sheet and index
    are restored, so an earlier gallery in the folder is left as it was.
    """
    path = Path(folder)
    created_dir = not path.exists()
    pairs = [(it, as_uint8_image(img)) for it, img in items_with_images]
    snapshot: dict[str, bytes | None] = {}
    if path.is_dir():
        snapshot = {name: _read_bytes(path / name) for name in (MANIFEST, CONTACT_SHEET, INDEX)}
    else:
        snapshot = dict.fromkeys((MANIFEST, CONTACT_SHEET, INDEX))
    g = Gallery.open(path, model_info, title=title, device=device)
    if title:
        g.title = title
    old_items = dict(g._items)
    written: list[Path] = []
    try:
        staged: dict[ItemKey, GalleryItem] = {}
        now = _now()
        for n, (it, img) in enumerate(pairs):
            if progress is not None:  # the contact sheet and index count as one more image
                progress(n / (len(pairs) + 1), f"Saving image {n + 1} of {len(pairs)}")
            it = replace(it, timestamp=it.timestamp or now, device=it.device or g.device)
            # Never overwrite a committed PNG: a key that exists gets a fresh name (see
            # file_name_for), so until the commit below the old entries keep their files.
            g._items = {**old_items, **staged}
            it = g.placed(it, staged.values())
            name = g.file_name_for(replace(it, timestamp=f"{it.timestamp}#{n}"))
            it = replace(it, file=name)
            atomic_write_bytes(path / name, encode_png(img, it))
            written.append(path / name)
            staged[it.key] = it
        g._items = {**old_items, **staged}
        g._own = dict(g._items)
        g._commit()  # the commit point
        if progress is not None:
            progress(len(pairs) / (len(pairs) + 1), "Writing the contact sheet and index")
        images = [_lookup_image(it, pairs, path) for it in g.items]
        atomic_write_bytes(path / CONTACT_SHEET, contact_sheet_png(g.items, images))
        atomic_write_text(path / INDEX, index_html(g.manifest(), has_sheet=True))
    except BaseException as exc:
        _rollback(path, snapshot, written, created_dir)
        if isinstance(exc, GalleryError):
            raise
        if isinstance(exc, OSError):
            raise GalleryError(
                f"Cannot save the gallery in {path}: {exc.strerror or exc}; nothing was changed."
            ) from None
        raise
    referenced = {_fold(it.file) for it in g.items}
    for p in {*(path / it.file for it in old_items.values()), *written}:
        if _fold(p.name) not in referenced:
            with contextlib.suppress(OSError):
                p.unlink()
    return path


def _lookup_image(
    item: GalleryItem, pairs: list[tuple[GalleryItem, np.ndarray]], folder: Path
) -> np.ndarray:
    for it, img in reversed(pairs):
        if it.key == item.key:
            return img
    return _read_png(folder / item.file)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise GalleryError(f"Cannot read {path}: {e.strerror or e}.") from None


def _rollback(
    folder: Path, snapshot: dict[str, bytes | None], written: list[Path], created_dir: bool
) -> None:
    """Best effort: restore the snapshot files and delete what this save wrote."""
    for p in written:
        with contextlib.suppress(OSError):
            p.unlink()
    for name, data in snapshot.items():
        with contextlib.suppress(OSError):
            if data is None:
                (folder / name).unlink(missing_ok=True)
            elif _read_bytes(folder / name) != data:
                atomic_write_bytes(folder / name, data)
    if created_dir:
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp"):
                    p.unlink()
            folder.rmdir()


def merge_gallery(folder: str | os.PathLike[str]) -> Gallery:
    """Fold all shard manifests into ``gallery.json`` and rebuild the contact sheet and index.

    Shard files are kept (they remain each shard's resume record; readers deduplicate).  Run it
    after all shards have finished: it also prunes unreferenced PNGs and stale temp files.
    """
    path = Path(folder)
    ro = Gallery.open(path, None, create=False)
    g = Gallery.open(path, ro.model, create=False, title=ro.title, device=ro.device)
    g._own = dict(g._items)
    g._commit()
    g.finalize(prune=True)
    return g


def is_gallery(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds at least one gallery manifest file."""
    p = Path(folder)
    return p.is_dir() and bool(manifest_files(p))
