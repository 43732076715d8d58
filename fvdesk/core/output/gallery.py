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

``provenance`` is the record that reproduces the item (``fvdesk.core.optim.jobs.Job.provenance``:
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
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import re
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import GalleryError
from fvdesk.core.fileio import atomic_write_bytes, atomic_write_text, parse_json
from fvdesk.core.optim.provenance import Provenance
from fvdesk.core.output.html import esc, examples_block, model_line, page, table, text_of

FORMAT = "fvdesk-gallery"
VERSION = 2
MANIFEST = "gallery.json"
CONTACT_SHEET = "contact_sheet.png"
INDEX = "index.html"
SHARD_GLOB = "gallery.shard-*-of-*.json"
_SHARD_RE = re.compile(r"^gallery\.shard-(\d+)-of-(\d+)\.json$")

#: Bound on a PNG name's stem in UTF-8 bytes (file systems allow 255; leave room for suffixes).
MAX_STEM_BYTES = 120
#: The contact sheet shows at most this many items (index.html shows all of them).
MAX_SHEET_ITEMS = 1024
#: Temporary files of shared outputs older than this are leftovers of a killed process.
_STALE_TMP_SECONDS = 15 * 60

_FORBIDDEN = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    "CONIN$",
    "CONOUT$",
    *(f"COM{i}" for i in range(10)),
    *(f"LPT{i}" for i in range(10)),
    "COM¹",
    "COM²",
    "COM³",
    "LPT¹",
    "LPT²",
    "LPT³",
}


# ------------------------------------------------------------------------------------------------
# Items and model identity
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """Which model a gallery belongs to; galleries refuse to mix models (compared by sha256)."""

    file: str  # the model's file name (display only)
    sha256: str

    @classmethod
    def from_model(cls, model: Any) -> ModelInfo:
        """From a ``LoadedModel`` (anything with ``.path`` and ``.sha256``)."""
        return cls(Path(model.path).name, str(model.sha256))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ModelInfo:
        """Hash a model file (for tools that have not loaded it)."""
        p = Path(path)
        h = hashlib.sha256()
        try:
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise GalleryError(f"Cannot read the model file {p}: {e.strerror or e}.") from None
        return cls(p.name, h.hexdigest())

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256}


ItemKey = tuple[str, int, int, str, bool, str]


@dataclass(frozen=True)
class GalleryItem:
    """One rendered image and everything needed to reproduce it.

    ``objective`` is the objective kind (channel, neuron, deepdream, logit, prob, combination);
    ``facet`` the index among renders of the same unit; ``provenance`` the record that reproduces
    it (empty for items of version-1 galleries, which kept only ``settings``).  ``file`` is filled
    in by ``Gallery.add`` when left empty.
    """

    layer: str
    unit: int
    facet: int = 0
    label: str | None = None
    objective: str = "channel"
    negative: bool = False
    value: float | None = None
    dead: bool = False
    seed: int | None = None
    steps: int | None = None
    provenance: Provenance = field(default_factory=Provenance)
    caption: str = ""
    timestamp: str = ""
    device: str = ""
    seconds: float | None = None
    file: str = ""
    examples: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, Provenance):  # a manifest's JSON, or a caller's dict
            object.__setattr__(self, "provenance", Provenance.of(self.provenance))

    @property
    def display_caption(self) -> str:
        """The caption the job gave it; for items saved without one (version 1), the core's
        caption of its unit."""
        if self.caption:
            return self.caption
        from fvdesk.core.optim.jobs import unit_caption

        return unit_caption(self.layer, self.unit, facet=self.facet, negative=self.negative,
                            kind=self.objective)  # fmt: skip

    @property
    def settings(self) -> dict[str, Any]:
        """The render settings it was made with (from the provenance record)."""
        return dict(self.provenance.settings or {})

    @property
    def key(self) -> ItemKey:
        variant = self.provenance.variant()
        return item_key(self.layer, self.unit, self.facet, self.objective, self.negative, variant)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["provenance"] = self.provenance.to_dict()
        d["value"] = _finite_or_none(self.value)
        d["seconds"] = _finite_or_none(self.seconds)
        return {"file": d.pop("file"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GalleryItem:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if not isinstance(kw.get("layer"), str) or not isinstance(kw.get("file", ""), str):
            raise ValueError("its layer or file is not a string")
        if "provenance" not in kw and isinstance(d.get("settings"), dict):  # version 1
            kw["provenance"] = {"settings": dict(d["settings"])}
        for name in ("objective", "timestamp", "device", "caption"):  # compared and shown as text
            if name in kw:
                kw[name] = "" if kw[name] is None else str(kw[name])
        if "label" in kw and kw["label"] is not None:
            kw["label"] = str(kw["label"])
        kw["value"] = _finite_or_none(kw.get("value"))
        kw["seconds"] = _finite_or_none(kw.get("seconds"))
        kw["unit"] = int(kw["unit"])
        kw["facet"] = int(kw.get("facet") or 0)
        kw["negative"] = bool(kw.get("negative", False))
        kw["dead"] = bool(kw.get("dead", False))
        kw["provenance"] = Provenance.of(kw.get("provenance"))
        kw["examples"] = _clean_examples(kw.get("examples"))
        return cls(**kw)

    @property
    def example_files(self) -> list[str]:
        """The crops this item's examples name (relative to the gallery folder)."""
        return [e["file"] for part in ("top", "bottom") for e in self.examples.get(part, [])]

    @classmethod
    def from_result(
        cls, result: Any, *, device: str = "", seconds: float | None = None
    ) -> GalleryItem:
        """From a job's ``UnitResult``; it carries its own provenance record."""
        return cls(
            layer=str(result.layer),
            unit=int(result.unit),
            facet=int(getattr(result, "facet", 0) or 0),
            label=getattr(result, "label", None),
            objective=str(getattr(result, "kind", "channel")),
            negative=bool(getattr(result, "negative", False)),
            value=_finite_or_none(getattr(result, "value", None)),
            dead=bool(getattr(result, "dead", False)),
            seed=_int_or_none(getattr(result, "seed", None)),
            steps=_int_or_none(getattr(result, "steps", None)),
            provenance=Provenance.of(getattr(result, "provenance", None)),
            caption=str(getattr(result, "caption", "") or ""),
            device=device,
            seconds=seconds if seconds is not None else getattr(result, "seconds", None),
        )


def item_key(
    layer: str,
    unit: int,
    facet: int = 0,
    objective: str = "channel",
    negative: bool = False,
    variant: str = "",
) -> ItemKey:
    """The identity of an item within a gallery (one PNG per key)."""
    return (str(layer), int(unit), int(facet), str(objective), bool(negative), str(variant))


def job_variant(provenance: Provenance | dict[str, Any]) -> str:
    """Which job an item belongs to, for jobs that are not one unit's render: two
    interpolations, direction files or spectrum rows on the same unit are different pictures
    and must not replace each other.  Unit renders keep ``""``, so a unit rendered again (or an
    atlas resumed) replaces its earlier image (``Provenance.variant``)."""
    return Provenance.of(provenance).variant()


EXAMPLES_DIR = "examples"


def _clean_examples(value: Any) -> dict:
    """An item's examples as read from a manifest: entries whose crop is not a plain file in
    ``examples/`` are dropped (a manifest never makes fvdesk touch files elsewhere)."""
    if not isinstance(value, dict) or not value:
        return {}
    out = dict(value)
    for part in ("top", "bottom"):
        entries = value.get(part)
        out[part] = [
            dict(e)
            for e in (entries if isinstance(entries, list) else [])
            if isinstance(e, dict)
            and isinstance(e.get("file"), str)
            and e["file"].startswith(EXAMPLES_DIR + "/")
            and Path(e["file"]).name == e["file"][len(EXAMPLES_DIR) + 1 :]
            and Path(e["file"]).name not in ("", ".", "..")
        ]
    return out


def _finite_or_none(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------------
# File names
# ------------------------------------------------------------------------------------------------
def safe_stem(text: str, max_bytes: int = MAX_STEM_BYTES) -> str:
    """A file-name stem any file system accepts, close to ``text``.

    Replaces ``/\\:*?"<>|`` and control/format characters by ``_``, strips leading and trailing
    dots and spaces (hidden files, Windows), prefixes Windows reserved device names (CON, NUL,
    COM1, ...) with ``_`` and truncates to ``max_bytes`` UTF-8 bytes, appending a hash of the
    original when it truncates so distinct long names stay distinct.
    """
    s = unicodedata.normalize("NFC", str(text))
    s = _FORBIDDEN.sub("_", s)
    s = "".join(
        "_" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") else ch for ch in s
    )
    s = s.strip(" .")
    if not s:
        s = "_"
    if s.split(".")[0].rstrip(" ").upper() in _RESERVED:
        s = "_" + s
    if len(s.encode("utf-8")) > max_bytes:
        tag = "-" + _short_hash(text, 8)
        budget = max_bytes - len(tag)
        cut = s.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(" .")
        s = cut + tag
    return s


def _short_hash(value: Any, n: int = 6) -> str:
    return hashlib.sha1(json.dumps(value, ensure_ascii=False).encode("utf-8")).hexdigest()[:n]


def item_stem(
    layer: str, unit: int, facet: int = 0, objective: str = "channel", negative: bool = False
) -> str:
    """The unsanitized name of an item: ``{layer}_u{unit:04d}[_{objective}][_f{facet}][_neg]``.

    The channel objective is the default and is left out of the name.
    """
    name = str(layer).lstrip("/")  # torch exports start every name with "/"
    s = f"{name}_u{int(unit):04d}" if int(unit) >= 0 else f"{name}_all"  # -1: the whole layer
    if objective != "channel":
        s += f"_{objective}"
    if facet:
        s += f"_f{int(facet)}"
    if negative:
        s += "_neg"
    return s


def _fold(name: str) -> str:
    # Case-insensitive, normalization-insensitive comparison (macOS, Windows).
    return unicodedata.normalize("NFC", name).casefold()


# ------------------------------------------------------------------------------------------------
# Manifest reading
# ------------------------------------------------------------------------------------------------
def manifest_files(folder: Path) -> list[Path]:
    """``gallery.json`` (when present) followed by the shard manifests, in a stable order."""
    out = []
    main = folder / MANIFEST
    if main.is_file():
        out.append(main)
    shards = []
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            m = _SHARD_RE.match(p.name)
            if m and p.is_file():
                shards.append((int(m.group(2)), int(m.group(1)), p))
    out.extend(p for _, _, p in sorted(shards))
    return out


def shard_manifest_name(shard: tuple[int, int] | None) -> str:
    """The manifest file a writer owns: ``gallery.json`` or ``gallery.shard-I-of-N.json``."""
    if shard is None:
        return MANIFEST
    i, n = shard
    return f"gallery.shard-{i}-of-{n}.json"


def _read_manifest(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GalleryError(f"Cannot read the gallery manifest {path}: {e.strerror or e}.") from None
    try:
        data = parse_json(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GalleryError(
            f"The gallery manifest {path} is corrupt (not valid JSON: {e})."
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GalleryError(
            f"{path} is not an fvdesk gallery manifest (its format is not {FORMAT!r})."
        )
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise GalleryError(
            f"The gallery manifest {path} has version {version!r}, which this fvdesk (reads {VERSION}) cannot read."
        )
    model = data.get("model")
    if (
        not isinstance(model, dict)
        or "sha256" not in model
        or not isinstance(data.get("items"), list)
    ):
        raise GalleryError(f"The gallery manifest {path} is corrupt (no model or items).")
    try:
        data["items"] = [GalleryItem.from_dict(d) for d in data["items"]]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise GalleryError(f"The gallery manifest {path} is corrupt (a bad item: {e}).") from None
    for it in data["items"]:
        if not it.file or Path(it.file).name != it.file:
            raise GalleryError(
                f"The gallery manifest {path} is corrupt (item file name {it.file!r} is not a plain name)."
            )
    return data


@dataclass
class _Loaded:
    model: ModelInfo | None
    title: str
    device: str
    created: str
    updated: str
    items: dict[ItemKey, GalleryItem]  # union, newest per key
    by_file: dict[str, dict[ItemKey, GalleryItem]]  # manifest file name -> its items
    present: bool  # any manifest file exists


def _load(folder: Path) -> _Loaded:
    files = manifest_files(folder)
    model: ModelInfo | None = None
    first_path: Path | None = None
    title = device = created = updated = ""
    union: dict[ItemKey, GalleryItem] = {}
    by_file: dict[str, dict[ItemKey, GalleryItem]] = {}
    for path in files:
        data = _read_manifest(path)
        m = ModelInfo(str(data["model"].get("file", "")), str(data["model"]["sha256"]))
        if model is None:
            model, first_path = m, path
        elif m.sha256 != model.sha256:
            raise GalleryError(
                f"The gallery folder {folder} mixes models: {path.name} is for {m.file} but "
                f"{first_path.name if first_path else MANIFEST} is for {model.file}."
            )
        title = title or str(data.get("title") or "")
        device = device or str(data.get("device") or "")
        c = str(data.get("created") or "")
        u = str(data.get("updated") or "")
        created = min(created, c) if created and c else (created or c)
        updated = max(updated, u)
        mine: dict[ItemKey, GalleryItem] = {}
        for it in data["items"]:
            mine[it.key] = it
            old = union.get(it.key)
            if old is None or it.timestamp >= old.timestamp:
                union[it.key] = it
        by_file[path.name] = mine
    return _Loaded(model, title, device, created, updated, union, by_file, bool(files))


def _sorted_items(items: Iterable[GalleryItem]) -> list[GalleryItem]:
    return sorted(items, key=lambda it: (it.layer, it.objective, it.unit, it.negative, it.facet))


# ------------------------------------------------------------------------------------------------
# The gallery
# ------------------------------------------------------------------------------------------------
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
            raise GalleryError(
                f"The folder {path} is not an fvdesk gallery (it has no {MANIFEST})."
            )
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
        if model_info is not None and not isinstance(model_info, ModelInfo):
            model_info = ModelInfo.from_model(model_info)
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
            raise GalleryError(
                f"The folder {path} is not an fvdesk gallery (it has no {MANIFEST})."
            )
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


def _fit_suffix(stem: str, suffix: str) -> str:
    budget = MAX_STEM_BYTES - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(" .")
    return (cut or "_") + suffix


def _dumps(d: dict) -> str:
    return json.dumps(d, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# index.html
# ------------------------------------------------------------------------------------------------
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
