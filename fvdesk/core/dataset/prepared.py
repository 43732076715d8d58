"""Prepared images: a folder's images already decoded and fitted to an input size, kept on disk.

A pass over a folder is decode-bound on most models: a 12-megapixel JPEG costs more to decode
than a mobile network costs to run, and a 64 px PNG about what the demo model costs.  But
researchers pass over the same folder many times: another layer, the neuron measure, the
activation atlas, the next checkpoint of the same network.  What those passes share is the
fitted image (resize shorter side + centre crop to the input size), which depends only on the
file, the input size and the fit policy, not on the model or its normalisation (that is applied
to the fitted pixels afterwards).  So the pass keeps them: the first pass writes each image's
uint8 pixels next to the examples cache, and later passes at that size read them instead of
decoding, at the speed of the disk.

The store is a ``cache.LayerStore`` whose rows are pixels (the same segments, atomic commits,
file matching by path + size + mtime, compaction), one per (folder, input size, fit policy,
reduced-scale decoding), under ``examples/prepared/``; ``fvdesk examples --clear-cache`` clears
it with the rest.  It holds at most ``budget()`` bytes (``FVDESK_PREPARED_MB``, default 4096;
0 turns it off): a pass stops adding images when the store would pass it, so ImageNet at
224 px (150 KB an image) keeps its first 28k images unless the budget is raised.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.dataset.cache import (
    FIT_POLICY,
    MAX_SEGMENTS,
    LayerStore,
    Lookup,
    SegmentWriter,
    examples_dir,
)
from fvdesk.core.errors import DatasetError
from fvdesk.core.imagefolder import FolderScan

BUDGET_ENV = "FVDESK_PREPARED_MB"
DEFAULT_BUDGET_MB = 4096


def budget() -> int:
    """Bytes the store of one folder and size may hold (``FVDESK_PREPARED_MB``; 0: off)."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    try:
        mb = float(text) if text else DEFAULT_BUDGET_MB
    except ValueError:
        mb = DEFAULT_BUDGET_MB
    return max(0, int(mb * 2**20))


@dataclass(frozen=True)
class PreparedKey:
    """What fitted pixels depend on: the folder, the input size, the fit policy."""

    root: str
    input_size: tuple[int, int]
    fit: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "prepared images", "root": self.root,
                "input_size": list(self.input_size), "fit": self.fit}  # fmt: skip

    def folder(self) -> Path:
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return examples_dir() / "prepared" / hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class PreparedStore:
    """The fitted pixels of one folder at one size (see the module docstring)."""

    def __init__(self, root: Path, size: tuple[int, int], *, reduced: bool = True) -> None:
        h, w = int(size[0]), int(size[1])
        fit = FIT_POLICY if reduced else FIT_POLICY + "+full-scale-decode"
        self.key = PreparedKey(str(Path(root).resolve()), (h, w), fit)
        dtype = np.dtype([("px", "u1", (h, w, 3))])
        self.store = LayerStore(self.key, 0, 1, dtype=dtype)
        self.row_bytes = dtype.itemsize
        self._maps: dict[int, np.memmap] = {}

    def lookup(self, scan: FolderScan) -> Lookup:
        return self.store.lookup(scan)

    def room(self, lk: Lookup) -> int:
        """How many more images the budget lets this store take."""
        held = sum(seg.count for seg in lk.segments) * self.row_bytes
        return max(0, (budget() - held) // self.row_bytes)

    def read(self, lk: Lookup, ids: list[int]) -> list[tuple[str, Any, Any]]:
        """Decode results (``("ok", pixels, (width, height))``) of images the store holds; an
        unreadable segment gives ``("miss", ...)`` so the caller decodes the file instead."""
        out: list[tuple[str, Any, Any]] = []
        for i in ids:
            s, r = int(lk.seg[i]), int(lk.row[i])
            m = self._map(lk, s)
            if m is None or r >= len(m):
                out.append(("miss", None, None))
            else:
                out.append(("ok", np.array(m[r]["px"]), lk.size_of(i)))
        return out

    def _map(self, lk: Lookup, s: int) -> np.memmap | None:
        if s not in self._maps:
            path = self.store.folder / (lk.segments[s].name + ".rows")
            try:
                self._maps[s] = np.memmap(path, dtype=self.store.dtype, mode="r")
            except (OSError, ValueError):
                return None
        return self._maps[s]

    def close(self) -> None:
        """Let the segments' maps go (a compaction may then remove their files)."""
        self._maps.clear()


@dataclass
class PreparedKeeper:
    """Writes the images a pass decodes into the folder's ``PreparedStore`` (one segment per
    pass, within the store's budget), so the next pass at this size reads them instead: the
    examples pass and the activation atlas's collection share it."""

    store: PreparedStore
    lk: Lookup
    room: int
    writer: SegmentWriter

    @classmethod
    def open(cls, scan: FolderScan, size: tuple[int, int], *, reduced: bool = True,
             enabled: bool = True) -> PreparedKeeper | None:  # fmt: skip
        """``None`` when keeping is off (``enabled``, or a budget of 0)."""
        if not enabled or budget() == 0:
            return None
        store = PreparedStore(scan.root, size, reduced=reduced)
        lk = store.lookup(scan)
        return cls(store, lk, store.room(lk), store.store.writer(scan.images))

    def source(self) -> tuple[PreparedStore, Lookup]:
        """What ``passes.decoded_batches(prepared=...)`` reads from."""
        return (self.store, self.lk)

    def add(self, scan: FolderScan, ids: list[int], results: list[tuple[str, Any, Any]]) -> None:
        new = [k for k, r in enumerate(results) if r[0] == "ok" and self.lk.seg[ids[k]] < 0]
        new = new[: self.room]
        if not new:
            return
        self.room -= len(new)
        px = np.zeros(len(new), self.store.store.dtype)
        px["px"] = np.stack([results[k][1] for k in new])
        self.writer.add([ids[k] for k in new], [results[k][2] for k in new], px)

    def commit(self, scan: FolderScan) -> None:
        """Commit the pixels, compacting when segments pile up (counted from the folder: the
        full lookup ``compact`` makes is only worth it then); a cache that cannot be written
        costs the next pass its speed only."""
        self.store.close()
        try:
            self.writer.commit()
            if len(list(self.store.store.folder.glob("seg-*.json"))) > MAX_SEGMENTS:
                self.store.store.compact(scan)
        except DatasetError:
            self.writer.abort()
