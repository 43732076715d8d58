"""The examples cache: per-image summaries of a layer's units, so reopening a folder is instant.

Location: ``$FVDESK_CACHE_DIR`` when set (tests, a second profile), else the platform's user
cache folder (``$XDG_CACHE_HOME/fvdesk`` or ``~/.cache/fvdesk`` on Linux, ``~/Library/Caches/
fvdesk`` on macOS, ``%LOCALAPPDATA%\\fvdesk\\Cache`` on Windows), never the image folder.

A *store* is one folder per (model sha256, preprocessing, input size and fit policy, image folder,
layer, measure), named by a hash of that key (``key.json`` inside says it in words), under
``examples/<model sha256 prefix>/``.  Another model, preprocessing or input size is another store,
so a cache is never used for something it was not computed for.

A store holds *segments*: ``seg-*.rows`` (raw rows: per image and unit the spatial max and its
position, the spatial min and its position, the objective value), ``seg-*.files`` (which
files, by relative path + size + mtime, the rows are, with the source sizes: packed, so a
store of a million rows reads without a Python object per row) and ``seg-*.json`` (the counts,
the files found unreadable).  A pass
writes one new segment for the files no segment covers, so a changed or added file costs only
its own row; rows of files that changed or disappeared are ignored, and the store is compacted
into one segment when stale rows or segments pile up.  Rows are written and renamed atomically
and the JSON (written last, also atomically) is the commit point: a killed pass leaves at most
an orphan ``.rows`` file that a later compaction removes.  Concurrent writers (atlas shards)
only ever add segments.  Summaries read rows in chunks, so memory stays flat however big the
folder is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import DatasetError
from fvdesk.core.fileio import atomic_open, atomic_write_text, parse_json
from fvdesk.core.filelist import FileEntry, FileList
from fvdesk.core.imagefolder import FolderScan

CACHE_ENV = "FVDESK_CACHE_DIR"
#: How an image becomes the model input; part of every key (change it when the policy changes).
FIT_POLICY = "shorter-side-bilinear+centre-crop/2"
SEGMENT_FORMAT = "fvdesk-examples-segment"
SEGMENT_VERSION = 2  # 2: the rows' files in a binary ``.files``; 1 (a JSON list) still reads
#: Compact when a store has more segments than this, or more stale rows than valid ones.
MAX_SEGMENTS = 8
_ORPHAN_AGE = 15 * 60


def cache_root() -> Path:
    """The user's cache folder for fvdesk (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "fvdesk" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "fvdesk"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache") / "fvdesk"


def examples_dir() -> Path:
    return cache_root() / "examples"


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).stat().st_size
    return total


def cache_size(model_sha256: str | None = None) -> int:
    """Bytes the examples cache uses (of one model when ``model_sha256`` is given)."""
    base = examples_dir()
    return _tree_size(base / model_sha256[:16] if model_sha256 else base)


def clear_cache(model_sha256: str | None = None) -> int:
    """Delete the examples cache (of one model, or all of it); returns the bytes freed.  The
    prepared images (``dataset.prepared``: fitted pixels, shared by every model) go with any
    model's cache: clearing is how a user gets the disk back, and they are cheap to redo."""
    base = examples_dir()
    targets = [base / model_sha256[:16], base / "prepared"] if model_sha256 else [base]
    size = 0
    for target in targets:
        size += _tree_size(target)
        if target.exists():
            try:
                shutil.rmtree(target)
            except OSError as e:
                raise DatasetError(
                    f"Cannot clear the examples cache {target} ({e.strerror or e})."
                ) from None
    return size


def format_bytes(n: int) -> str:
    """``1.2 MB``: cache sizes as people read them."""
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


# ------------------------------------------------------------------------------------------------
# Keys and rows
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreKey:
    """What a store's rows depend on; ``measure`` is ``channel`` or ``neuron@x,y``."""

    model_sha256: str
    preprocessing: str  # canonical JSON of the preprocessing values (not where they came from)
    input_size: tuple[int, int]
    root: str
    layer: str
    measure: str
    fit: str = FIT_POLICY

    @classmethod
    def make(cls, model: Any, pre: Any, root: Path, layer: str, measure: str) -> StoreKey:
        values = {k: v for k, v in pre.to_dict().items() if k != "source"}
        return cls(
            str(model.sha256),
            json.dumps(values, sort_keys=True),
            (int(model.input.height), int(model.input.width)),
            str(Path(root).resolve()),
            layer,
            measure,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_sha256": self.model_sha256,
            "preprocessing": json.loads(self.preprocessing),
            "input_size": list(self.input_size),
            "root": self.root,
            "layer": self.layer,
            "measure": self.measure,
            "fit": self.fit,
        }

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]

    def folder(self) -> Path:
        return examples_dir() / self.model_sha256[:16] / self.digest()


def row_dtype(units: int, positions: int) -> np.dtype:
    """One image's row: per unit the max and its flat grid position, the min and its position,
    and the objective value (the channel mean, or the value itself)."""
    pos = "<u2" if positions <= 1 << 16 else "<u4"
    return np.dtype([("max", "<f4", (units,)), ("amax", pos, (units,)), ("min", "<f4", (units,)),
                     ("amin", pos, (units,)), ("mean", "<f4", (units,))])  # fmt: skip


_NO_FILES = FileList.pack([], [], [])


@dataclass
class Segment:
    """A committed segment: its rows' files (``files``, packed) with the source image sizes
    (``wh``: width, height per row) and the files found unreadable."""

    name: str
    files: FileList
    wh: np.ndarray  # (rows, 2) int64
    skipped: list[tuple[str, int, int, str]]  # rel, size, mtime_ns, reason
    count: int = -1  # rows in the segment (kept when a ``Lookup`` lets ``files`` go)

    def __post_init__(self) -> None:
        if self.count < 0:
            self.count = len(self.files)

    @property
    def rows(self) -> list[tuple[str, int, int, int, int]]:
        """``(rel, size, mtime_ns, width, height)`` per row (built on demand: costs memory)."""
        return [(f.rel, f.size, f.mtime_ns, int(w), int(h))
                for f, (w, h) in zip(self.files, self.wh, strict=True)]  # fmt: skip


@dataclass
class Lookup:
    """Where the current folder's images are in a store, as arrays over the folder's images:
    ``seg[i]``/``row[i]`` (``-1``: no row), ``wh[i]`` the source size; ``skipped[i] = reason``
    for files found unreadable; ``todo`` the images to compute (folder indices, ascending)."""

    segments: list[Segment]
    seg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    wh: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    skipped: dict[int, str] = field(default_factory=dict)
    todo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stale: int = 0  # rows no current file uses

    @property
    def valid(self) -> int:
        return int(np.count_nonzero(self.seg >= 0))

    def size_of(self, i: int) -> tuple[int, int]:
        """Source ``(width, height)`` of image ``i`` (one that has a row)."""
        return int(self.wh[i, 0]), int(self.wh[i, 1])

    @property
    def where(self) -> dict[int, tuple[int, int]]:
        """``image -> (segment, row)`` as a dict (built on demand: costs memory)."""
        return {int(i): (int(self.seg[i]), int(self.row[i])) for i in np.flatnonzero(self.seg >= 0)}

    @property
    def sizes(self) -> dict[int, tuple[int, int]]:
        """``image -> (width, height)`` as a dict (built on demand: costs memory)."""
        return {int(i): self.size_of(int(i)) for i in np.flatnonzero(self.seg >= 0)}


class LayerStore:
    """One store (see the module docstring)."""

    def __init__(self, key: StoreKey | Any, units: int, positions: int, *,
                 dtype: np.dtype | None = None) -> None:  # fmt: skip
        """``dtype``: rows of another kind (``prepared.PreparedStore``'s pixels); ``key`` then
        only needs ``to_dict()`` and ``folder()``."""
        self.key = key
        self.units = int(units)
        self.dtype = dtype if dtype is not None else row_dtype(self.units, positions)
        self.folder = key.folder()

    # -- reading ---------------------------------------------------------------------------------
    def segments(self) -> list[Segment]:
        """The committed segments, oldest first (a damaged or mismatched one is ignored)."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for meta in sorted(self.folder.glob("seg-*.json")):
                seg = self._read_segment(meta)
                if seg is not None:
                    out.append(seg)
        return out

    def _read_segment(self, meta: Path) -> Segment | None:
        try:
            d = parse_json(meta.read_text(encoding="utf-8"))
            if d.get("format") != SEGMENT_FORMAT or int(d.get("version", 0)) not in (
                1,
                SEGMENT_VERSION,
            ):
                return None
            if int(d["units"]) != self.units or d["dtype"] != self.dtype.descr.__repr__():
                return None
            if int(d["version"]) == 1:  # rows as a JSON list (written before version 2)
                rows = d["rows"]
                files = FileList.pack((str(r[0]) for r in rows), (int(r[1]) for r in rows),
                                      (int(r[2]) for r in rows))  # fmt: skip
                wh = np.array([(int(r[3]), int(r[4])) for r in rows], np.int64).reshape(-1, 2)
            else:
                files, wh = _read_files(self.folder / (meta.stem + ".files"), int(d["count"]),
                                        int(d["path_bytes"]))  # fmt: skip
            skipped = [(str(r[0]), int(r[1]), int(r[2]), str(r[3])) for r in d["skipped"]]
            size = (self.folder / (meta.stem + ".rows")).stat().st_size
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        if len(wh) != len(files) or size != len(files) * self.dtype.itemsize:
            return None
        return Segment(meta.stem, files, wh, skipped)

    def lookup(self, scan: FolderScan) -> Lookup:
        """Match the folder's current files against the committed rows (newest segment wins)."""
        segs = self.segments()
        n = len(scan.images)
        lk = Lookup(segs, np.full(n, -1, np.int32), np.full(n, -1, np.int64),
                    np.zeros((n, 2), np.int64))  # fmt: skip
        skipped: dict[int, str] = {}
        for s, seg in enumerate(segs):
            at = scan.images.locate(seg.files)
            hit = np.flatnonzero(at >= 0)
            lk.stale += len(at) - len(hit)
            ids = at[hit]
            lk.stale += int(np.count_nonzero(lk.seg[ids] >= 0))  # rows a newer segment replaces
            lk.seg[ids] = s
            lk.row[ids] = hit
            lk.wh[ids] = seg.wh[hit]
            for i in ids.tolist() if skipped else ():
                skipped.pop(i, None)
            if seg.skipped:
                bad = FileList.pack((r[0] for r in seg.skipped), (r[1] for r in seg.skipped),
                                    (r[2] for r in seg.skipped))  # fmt: skip
                for j, i in enumerate(scan.images.locate(bad).tolist()):
                    if i >= 0 and lk.seg[i] < 0:
                        skipped[i] = seg.skipped[j][3]
        lk.skipped = skipped
        for seg in segs:  # the lookup's arrays say all that is needed; the file lists can go
            seg.files, seg.wh = _NO_FILES, seg.wh[:0]
        free = lk.seg < 0
        if skipped:
            free[np.fromiter(skipped, np.int64, len(skipped))] = False
        lk.todo = np.flatnonzero(free).astype(np.int64)
        return lk

    def rows(self, lk: Lookup, chunk: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(image indices, rows)`` of every valid row, ``chunk`` rows at a time."""
        for s, seg in enumerate(lk.segments):
            ids = np.flatnonzero(lk.seg == s)
            if not len(ids):
                continue
            rows_of = lk.row[ids]
            order = np.argsort(rows_of, kind="stable")
            ids, rows_of = ids[order], rows_of[order]
            path = self.folder / (seg.name + ".rows")
            n_rows = seg.count
            try:
                with open(path, "rb") as fh:
                    for start in range(0, n_rows, chunk):
                        lo, hi = np.searchsorted(rows_of, [start, start + chunk])
                        if lo == hi:
                            continue
                        stop = min(start + chunk, n_rows)
                        fh.seek(start * self.dtype.itemsize)
                        block = np.fromfile(fh, dtype=self.dtype, count=stop - start)
                        yield ids[lo:hi].astype(np.int64), block[rows_of[lo:hi] - start]
            except OSError as e:
                raise DatasetError(
                    f"The examples cache {path} cannot be read ({e.strerror or e}); "
                    "clear the cache and run again."
                ) from None

    # -- writing ---------------------------------------------------------------------------------
    def writer(self, source: FileList | None = None) -> SegmentWriter:
        return SegmentWriter(self, source)

    def write_key(self) -> None:
        path = self.folder / "key.json"
        if not path.exists():
            atomic_write_text(path, json.dumps(self.key.to_dict(), indent=1) + "\n")

    def compact(self, scan: FolderScan, lk: Lookup | None = None) -> bool:
        """Rewrite the valid rows into one segment when stale rows or segments pile up."""
        lk = lk or self.lookup(scan)
        if len(lk.segments) <= MAX_SEGMENTS and lk.stale <= max(lk.valid, 64):
            self._remove_orphans(lk)
            return False
        w = self.writer(scan.images)
        try:
            for gidx, rows in self.rows(lk):
                w.add(gidx.tolist(), [lk.size_of(int(i)) for i in gidx], rows)
            for i, reason in lk.skipped.items():
                w.skip(scan.images[i], reason)
        except BaseException:
            w.abort()
            raise
        w.commit()
        for seg in lk.segments:
            for suffix in (
                ".json",
                ".rows",
                ".files",
            ):  # the JSON first: a half-removed segment is ignored
                with contextlib.suppress(OSError):
                    (self.folder / (seg.name + suffix)).unlink()
        self._remove_orphans(lk)
        return True

    def _remove_orphans(self, lk: Lookup) -> None:
        known = {seg.name for seg in lk.segments}
        now = time.time()
        with contextlib.suppress(OSError):
            for p in self.folder.iterdir():
                if (
                    p.suffix in (".rows", ".files")
                    and p.stem not in known
                    and not (self.folder / (p.stem + ".json")).exists()
                ):
                    with contextlib.suppress(OSError):
                        if now - p.stat().st_mtime > _ORPHAN_AGE:
                            p.unlink()


def _write_files(path: Path, files: FileList, width: array, height: array) -> int:
    """A segment's files beside its rows (``.files``: the NUL-terminated UTF-8 paths, then
    sizes, mtimes, widths and heights as little-endian int64), written atomically before the
    JSON that commits them; returns the paths' byte count, which the JSON records."""
    blob = files.blob()
    with atomic_open(path, "wb") as fh:
        fh.write(blob)
        for col in (files.size, files.mtime_ns, np.frombuffer(width, np.int64),
                    np.frombuffer(height, np.int64)):  # fmt: skip
            fh.write(np.ascontiguousarray(col, dtype="<i8").tobytes())
    return len(blob)


def _read_files(path: Path, count: int, path_bytes: int) -> tuple[FileList, np.ndarray]:
    """``_write_files``' list and the ``(count, 2)`` source sizes; ``ValueError`` if damaged."""
    raw = path.read_bytes()
    if len(raw) != path_bytes + 32 * count:
        raise ValueError(f"{path.name}: {len(raw)} bytes, expected {path_bytes + 32 * count}")
    cols = np.frombuffer(raw, "<i8", offset=path_bytes).astype(np.int64).reshape(4, count)
    files = FileList.from_blob(raw[:path_bytes], cols[0], cols[1])
    return files, np.ascontiguousarray(cols[2:].T)


class SegmentWriter:
    """Streams rows of one new segment; ``commit`` makes them visible, ``abort`` drops them.

    With ``source`` (the scan's ``FileList``), ``add`` takes the files as indices into it and
    the writer keeps 24 bytes per row until the commit; otherwise it takes ``FileEntry``s."""

    def __init__(self, store: LayerStore, source: FileList | None = None) -> None:
        self.store = store
        self.name = f"seg-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._source = source
        self._rels: list[str] = []  # without a source
        self._ids = array("q")  # with a source
        self._cols: tuple[array, array, array, array] = (
            array("q"),
            array("q"),
            array("q"),
            array("q"),
        )  # size, mtime (without a source), width, height
        self.skipped: list[tuple[str, int, int, str]] = []
        self._stack: contextlib.ExitStack | None = None
        self._fh: Any = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._cols[2])

    def _open(self) -> None:
        try:
            self.store.folder.mkdir(parents=True, exist_ok=True)
            self.store.write_key()
            self._stack = contextlib.ExitStack()
            self._fh = self._stack.enter_context(
                atomic_open(self.store.folder / (self.name + ".rows"), "wb")
            )
        except OSError as e:
            raise DatasetError(
                f"Cannot write the examples cache in {self.store.folder} ({e.strerror or e})."
            ) from None

    def add(self, entries: Sequence[FileEntry] | Sequence[int], sizes: Sequence[tuple[int, int]],
            rows: np.ndarray) -> None:  # fmt: skip
        """Append rows; ``entries`` are ``FileEntry``s, or indices into the writer's source."""
        if not len(entries) or self._closed:
            return
        if self._stack is None:
            self._open()
        data = np.ascontiguousarray(rows, dtype=self.store.dtype)
        try:
            self._fh.seek(len(self) * self.store.dtype.itemsize)
            self._fh.write(data.tobytes())
        except OSError as e:
            self.abort()
            raise DatasetError(
                f"Cannot write the examples cache in {self.store.folder} ({e.strerror or e})."
            ) from None
        size, mtime, width, height = self._cols
        for w, h in sizes:
            width.append(int(w))
            height.append(int(h))
        if self._source is not None:
            self._ids.extend(int(i) for i in entries)  # type: ignore[arg-type]  # indices here
            return
        for f in entries:
            assert isinstance(f, FileEntry)
            self._rels.append(f.rel)
            size.append(f.size)
            mtime.append(f.mtime_ns)

    def _files(self) -> FileList:
        if self._source is not None:
            return self._source.take(np.frombuffer(self._ids, np.int64))
        return FileList.pack(self._rels, self._cols[0], self._cols[1])

    @property
    def rows(self) -> list[tuple[str, int, int, int, int]]:
        """The rows added so far as ``(rel, size, mtime_ns, width, height)``."""
        files = self._files()
        return [(f.rel, f.size, f.mtime_ns, int(w), int(h))
                for f, w, h in zip(files, self._cols[2], self._cols[3], strict=True)]  # fmt: skip

    def skip(self, entry: FileEntry, reason: str) -> None:
        self.skipped.append((entry.rel, entry.size, entry.mtime_ns, reason))

    def commit(self) -> None:
        """Rename the rows into place, then write the JSON (the commit point)."""
        if self._closed:
            return
        if not len(self) and not self.skipped:
            self.abort()
            return
        try:
            if self._stack is None:
                self._open()
            assert self._stack is not None
            # an interrupted add() may have written a row it did not record: keep recorded rows
            self._fh.truncate(len(self) * self.store.dtype.itemsize)
            self._stack.close()
            self._stack = None
            meta = {
                "format": SEGMENT_FORMAT,
                "version": SEGMENT_VERSION,
                "units": self.store.units,
                "dtype": self.store.dtype.descr.__repr__(),
                "count": len(self),
                "path_bytes": _write_files(
                    self.store.folder / (self.name + ".files"),
                    self._files(),
                    self._cols[2],
                    self._cols[3],
                ),  # fmt: skip
                "skipped": self.skipped,
            }
            atomic_write_text(self.store.folder / (self.name + ".json"), json.dumps(meta))
            self._closed = True
        except OSError as e:
            raise DatasetError(
                f"Cannot write the examples cache in {self.store.folder} ({e.strerror or e})."
            ) from None

    def abort(self) -> None:
        self._closed = True
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.__exit__(_Aborted, _Aborted(), None)


class _Aborted(Exception):
    """Thrown into the atomic write so it removes its temporary file."""
