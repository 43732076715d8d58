"""The files of a gallery folder and reading its manifests: ``gallery.json`` and the shards'
``gallery.shard-I-of-N.json``, checked and merged (newest entry per item)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fvdesk.core.errors import GalleryError
from fvdesk.core.fileio import parse_json
from fvdesk.core.output.items import GalleryItem, ItemKey, ModelInfo

FORMAT = "fvdesk-gallery"
VERSION = 2
MANIFEST = "gallery.json"
CONTACT_SHEET = "contact_sheet.png"
INDEX = "index.html"
SHARD_GLOB = "gallery.shard-*-of-*.json"
_SHARD_RE = re.compile(r"^gallery\.shard-(\d+)-of-(\d+)\.json$")


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


def _dumps(d: dict) -> str:
    return json.dumps(d, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
