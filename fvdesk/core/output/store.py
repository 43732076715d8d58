"""``Gallery``: a gallery folder opened for writing, committed so no crash can corrupt it (the
PNG first, then the manifest, each atomically); one writer per manifest file."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import GalleryError
from fvdesk.core.fileio import atomic_write_bytes, atomic_write_text
from fvdesk.core.output.index_page import index_html
from fvdesk.core.output.items import EXAMPLES_DIR, GalleryItem, ItemKey, ModelInfo, _now, item_key
from fvdesk.core.output.manifest import (
    CONTACT_SHEET,
    FORMAT,
    INDEX,
    MANIFEST,
    VERSION,
    _dumps,
    _load,
    _Loaded,
    _sorted_items,
    manifest_files,
    shard_manifest_name,
)
from fvdesk.core.output.naming import _fit_suffix, _fold, _short_hash, item_stem, safe_stem
from fvdesk.core.output.sheet import MAX_SHEET_ITEMS, _read_png, contact_sheet_png, encode_png

#: Temporary files of shared outputs older than this are leftovers of a killed process.
_STALE_TMP_SECONDS = 15 * 60


@dataclass(eq=False)
class Gallery:
    """A gallery folder opened for writing (or, with ``model_info=None``, read-only use).

    Use ``Gallery.open``; the constructor is internal.  ``_items`` holds every item known (this
    writer's and other manifests'), ``_own`` those in this writer's manifest file.

    Duplicate keys, for every writer (the CLI, atlases, the app's Save Gallery): a gallery holds
    one image per key (``GalleryItem.key``).  An item saved under the key of a committed item
    replaces it (a unit rendered again, a resumed or forced atlas); items of one save that share
    a key are all kept, each after the first on the next facet free in the gallery (two renders
    of one unit on the app's canvas).  ``placed`` is that rule.
    """

    folder: Path
    model: ModelInfo
    shard: tuple[int, int] | None
    title: str
    device: str
    created: str
    updated: str
    _items: dict[ItemKey, GalleryItem]
    _own: dict[ItemKey, GalleryItem]
    _writable: bool

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        model_info: ModelInfo | Any | None,
        *,
        create: bool = True,
        shard: tuple[int, int] | None = None,
        title: str = "",
        device: str = "",
    ) -> Gallery:
        """Create a gallery in ``folder`` or resume the one there.

        ``model_info`` is a ``ModelInfo`` or a ``LoadedModel``; an existing gallery of another
        model (different sha256) is refused, as is a non-empty folder that is not a gallery and a
        corrupt manifest (all ``GalleryError`` naming the folder or file).  With ``create`` the
        folder and this writer's manifest file are created at once, so a folder holding PNGs is
        always recognisable as a gallery.  ``shard=(i, n)`` makes this writer own
        ``gallery.shard-i-of-n.json`` and leave other writers' manifests alone.  With
        ``model_info=None`` the gallery is opened read-only (for ``finalize``/``merge``) and takes
        the model from its manifests.
        """
        path = Path(folder)
        loaded = _open_folder(path, create)
        if model_info is not None and not isinstance(model_info, ModelInfo):
            model_info = ModelInfo.from_model(model_info)
        model = _model_of(path, loaded, model_info)
        own_name = shard_manifest_name(shard)
        own = dict(loaded.items) if shard is None else dict(loaded.by_file.get(own_name, {}))
        now = _now()
        g = cls(
            path,
            model,
            shard,
            title or loaded.title,
            device or loaded.device,
            loaded.created or now,
            loaded.updated or now,
            dict(loaded.items),
            own,
            model_info is not None,
        )
        if g._writable:
            g._clean_stale_tmp(own_name, max_age=0)
            if not (path / own_name).exists():
                g._commit()
        return g

    # -- queries ---------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        """The manifest file this writer commits to."""
        return self.folder / shard_manifest_name(self.shard)

    @property
    def items(self) -> list[GalleryItem]:
        """All items known to this writer (its own plus other manifests' at open/reload time)."""
        return _sorted_items(self._items.values())

    @property
    def own_items(self) -> list[GalleryItem]:
        """The items in this writer's manifest file (what ``update_items`` may change)."""
        return _sorted_items(self._own.values())

    def __len__(self) -> int:
        return len(self._items)

    def get(self, *key: Any, **named: Any) -> GalleryItem | None:
        """The committed item with this key (``layer, unit[, facet, objective, negative]``)."""
        return self._items.get(item_key(*key, **named))

    def has(self, *key: Any, **named: Any) -> bool:
        """Whether the item is committed (its PNG is then guaranteed to exist)."""
        return self.get(*key, **named) is not None

    def reload(self) -> None:
        """Re-read every manifest file (to see what concurrent shards committed meanwhile)."""
        loaded = _load(self.folder)
        merged = dict(loaded.items)
        for k, it in self._own.items():  # our own view is authoritative for our entries
            old = merged.get(k)
            if old is None or it.timestamp >= old.timestamp:
                merged[k] = it
        self._items = merged
        if loaded.created:
            self.created = min(self.created, loaded.created)
        self.updated = max(self.updated, loaded.updated)

    # -- writing ---------------------------------------------------------------------------------
    def file_name_for(self, item: GalleryItem, also: Iterable[GalleryItem] = ()) -> str:
        """The PNG name an item gets: deterministic for a key, unique (case-insensitively)
        among the committed items and ``also`` (items being staged with it)."""
        existing = self._items.get(item.key)
        others = [*self._items.values(), *also]
        taken = {_fold(Path(it.file).stem) for it in others if it.key != item.key}
        taken |= {_fold(Path(CONTACT_SHEET).stem)}
        raw = item_stem(item.layer, item.unit, item.facet, item.objective, item.negative)
        stem = safe_stem(raw)
        if existing is not None:
            # Replacing: write beside the old PNG so the committed entry keeps a valid file until
            # the manifest switches over (the superseded PNG is pruned by finalize(prune=True)).
            taken.add(_fold(Path(existing.file).stem))
            stem = _fit_suffix(
                stem, "-" + _short_hash([list(item.key), item.timestamp or _now()], 6)
            )
        n = 6
        while _fold(stem) in taken:
            stem = _fit_suffix(safe_stem(raw), "-" + _short_hash([list(item.key), n], n))
            n += 1
        return stem + ".png"

    def placed(self, item: GalleryItem, staged: Iterable[GalleryItem] = ()) -> GalleryItem:
        """``item`` as the duplicate-key rule (class docstring) files it among ``staged``, the
        items of the same save: unchanged unless one of them holds its key, else on the next
        facet that neither they nor the committed items hold."""
        staged_keys = {it.key for it in staged}
        if item.key not in staged_keys:
            return item
        taken = staged_keys | set(self._items)
        facet = item.facet
        while True:
            facet += 1
            moved = replace(item, facet=facet, file="")
            if moved.key not in taken:
                return moved

    def add(self, item: GalleryItem, image: np.ndarray) -> GalleryItem:
        """Write the item's PNG atomically, then commit it to the manifest atomically.

        Returns the item as committed (``file`` and ``timestamp`` filled in).  Raises
        ``GalleryError`` when the folder cannot be written; the manifest is then unchanged.
        """
        return self.add_many([(item, image)])[0]

    def add_many(self, pairs: Sequence[tuple[GalleryItem, np.ndarray]]) -> list[GalleryItem]:
        """``add`` for the units of one finished batch: all PNGs first, then one manifest commit.

        The manifest is rewritten whole on every commit, so committing per batch instead of per
        image keeps big layers (thousands of units) from costing quadratic I/O.
        """
        self._require_writable()
        staged: list[GalleryItem] = []
        now = _now()
        for item, image in pairs:
            item = replace(item, timestamp=item.timestamp or now, device=item.device or self.device)
            item = self.placed(item, staged)
            name = self.file_name_for(item, staged)
            item = replace(item, file=name)
            target = self.folder / name
            self._clean_stale_tmp(name, max_age=0)
            try:
                atomic_write_bytes(target, encode_png(image, item))
            except OSError as e:
                raise GalleryError(f"Cannot write {target}: {e.strerror or e}.") from None
            staged.append(item)
        self._commit_items(staged)
        return staged

    def update_items(self, items: Sequence[GalleryItem]) -> None:
        """Commit new manifest entries for items this writer already holds (same key and file),
        e.g. with examples attached; their PNGs are not touched."""
        self._require_writable()
        for item in items:
            old = self._own.get(item.key)
            if old is None or old.file != item.file:
                raise GalleryError(
                    f"The gallery {self.folder} has no item {item.caption or item.file} to update."
                )
        self._commit_items(items)

    def _commit_items(self, items: Sequence[GalleryItem]) -> None:
        """Enter ``items`` and commit the manifest; on failure the entries are as before."""
        before = (dict(self._items), dict(self._own))
        for item in items:
            self._items[item.key] = item
            self._own[item.key] = item
        try:
            self._commit()
        except BaseException:
            self._items, self._own = before
            raise

    def _commit(self) -> None:
        self.updated = _now()
        try:
            atomic_write_text(self.manifest_path, _dumps(self._manifest_dict(self._own.values())))
        except OSError as e:
            raise GalleryError(
                f"Cannot write the gallery manifest {self.manifest_path}: {e.strerror or e}."
            ) from None

    def _manifest_dict(self, items: Iterable[GalleryItem]) -> dict[str, Any]:
        from fvdesk import __version__

        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "fvdesk_version": __version__,
            "title": self.title,
            "model": self.model.to_dict(),
            "device": self.device,
            "created": self.created,
            "updated": self.updated,
        }
        if self.shard is not None:
            d["shard"] = {"index": self.shard[0], "count": self.shard[1]}
        d["items"] = [it.to_dict() for it in _sorted_items(items)]
        return d

    def manifest(self) -> dict[str, Any]:
        """The merged manifest as a JSON-ready dict (all items known to this object)."""
        d = self._manifest_dict(self._items.values())
        d.pop("shard", None)
        return d

    def finalize(self, *, prune: bool = False) -> None:
        """Re-read all manifests and write ``contact_sheet.png`` and ``index.html`` atomically.

        Safe to call while other shards are writing (each file is replaced atomically).
        ``prune`` also deletes PNGs no manifest references and stale temporary files; use it
        only when no other writer is active (single writer, or after all shards finished).
        """
        self.reload()
        items = self.items
        try:
            if items:
                shown = items[:MAX_SHEET_ITEMS]
                images = [self._image_for(it) for it in shown]
                tile = 128 if len(shown) <= 256 else 96
                sheet = contact_sheet_png(shown, images, tile=tile)
                atomic_write_bytes(self.folder / CONTACT_SHEET, sheet)
            else:
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / CONTACT_SHEET).unlink()
            atomic_write_text(
                self.folder / INDEX, index_html(self.manifest(), has_sheet=bool(items))
            )
        except OSError as e:
            raise GalleryError(
                f"Cannot write the gallery index in {self.folder}: {e.strerror or e}."
            ) from None
        for shared in (CONTACT_SHEET, INDEX, MANIFEST):
            self._clean_stale_tmp(shared, max_age=_STALE_TMP_SECONDS)
        if prune:
            self.prune()

    def prune(self) -> list[str]:
        """Delete PNGs that no manifest references and leftover temporary files (single writer only)."""
        self.reload()
        keep = {_fold(it.file) for it in self._items.values()} | {_fold(CONTACT_SHEET)}
        keep |= {_fold(f) for it in self._items.values() for f in it.example_files}
        removed = []
        crops = self.folder / EXAMPLES_DIR
        listing = [*self.folder.iterdir(), *(crops.iterdir() if crops.is_dir() else [])]
        for p in listing:
            rel = p.relative_to(self.folder).as_posix()
            stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
            orphan = p.suffix.lower() == ".png" and _fold(rel) not in keep
            if p.is_file() and (stale_tmp or orphan):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(rel)
        return removed

    def _image_for(self, item: GalleryItem) -> np.ndarray:
        return _read_png(self.folder / item.file)

    def _require_writable(self) -> None:
        if not self._writable:
            raise GalleryError(f"The gallery {self.folder} was opened read-only.")

    def _clean_stale_tmp(self, target_name: str, *, max_age: float) -> None:
        """Remove temp files an atomic write of ``target_name`` left behind when it was killed.

        Only the owner of ``target_name`` may use ``max_age=0``; shared outputs use an age limit
        so a concurrent writer's in-flight temp file is never removed.
        """
        now = time.time()
        prefix = f".{target_name}."
        with contextlib.suppress(OSError):
            for p in self.folder.iterdir():
                if p.name.startswith(prefix) and p.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if max_age <= 0 or now - p.stat().st_mtime > max_age:
                            p.unlink()


def _open_folder(path: Path, create: bool) -> _Loaded:
    """The manifests of ``path`` (created when missing and ``create``); a folder that is neither
    a gallery nor empty is refused."""
    if path.exists() and not path.is_dir():
        raise GalleryError(f"{path} is a file, not a gallery folder.")
    if not path.exists():
        if not create:
            raise GalleryError(f"The gallery folder {path} does not exist.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GalleryError(
                f"Cannot create the gallery folder {path}: {e.strerror or e}."
            ) from None
    loaded = _load(path)
    if not loaded.present and not create:
        raise GalleryError(f"The folder {path} is not an fvdesk gallery (it has no {MANIFEST}).")
    if not loaded.present:
        try:
            foreign = [p.name for p in path.iterdir() if not p.name.startswith(".")]
        except OSError as e:
            raise GalleryError(
                f"Cannot read the gallery folder {path}: {e.strerror or e}."
            ) from None
        if foreign and manifest_files(path):  # a concurrent shard created it meanwhile
            loaded = _load(path)
        elif foreign:
            raise GalleryError(
                f"The folder {path} is not empty and is not an fvdesk gallery (it has no {MANIFEST}); "
                "choose a new or empty folder."
            )
    return loaded


def _model_of(path: Path, loaded: _Loaded, model_info: ModelInfo | None) -> ModelInfo:
    """The gallery's model: the writer's, which must be the one the manifests name."""
    if (
        loaded.model is not None
        and model_info is not None
        and loaded.model.sha256 != model_info.sha256
    ):
        raise GalleryError(
            f"The gallery folder {path} belongs to a different model ({loaded.model.file}, sha256 "
            f"{loaded.model.sha256[:12]}…) than {model_info.file} (sha256 {model_info.sha256[:12]}…); "
            "choose another folder."
        )
    model = model_info or loaded.model
    if model is None:
        raise GalleryError(f"The folder {path} is not an fvdesk gallery (it has no {MANIFEST}).")
    return model
