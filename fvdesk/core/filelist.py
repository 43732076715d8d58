"""A folder's file list, packed: what a pass over a million images keeps per image.

A list of ``FileEntry`` objects costs about 300 bytes per file in Python objects (a dataclass, a
string, two integers) and a dict keyed by them as much again, which made a pass over 100k images
hold 85 MB of bookkeeping.  ``FileList`` keeps the relative paths as one UTF-8 block (NUL-
separated: no file name holds a NUL) with their offsets, and sizes and modification times as
integer arrays: about 30 bytes per file plus the path.  Entries are made on access, so code that
reads ``files[i].rel`` works as on a list.  ``locate`` matches another list's files against
this one by (path, size, mtime) with a sorted 64-bit key per file instead of a dict; matches are
checked on the paths themselves, so a hash collision cannot pair two different files.

The examples cache stores a segment's files in the same packing (``blob()`` and the arrays, in
a ``.files`` sidecar; ``dataset.cache``), so reading a store never builds per-row Python objects
either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np


@dataclass(frozen=True)
class FileEntry:
    """A file of the folder: its path relative to the root (POSIX), size and mtime (ns)."""

    rel: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.rel, self.size, self.mtime_ns)


class FileList(Sequence[FileEntry]):
    """Files as ``(rel, size, mtime_ns)``, packed (see the module docstring); immutable."""

    __slots__ = ("_blob", "_start", "size", "mtime_ns", "_keys", "_order")

    def __init__(self, blob: bytes, start: np.ndarray, size: np.ndarray,
                 mtime_ns: np.ndarray) -> None:  # fmt: skip
        n = len(size)
        if len(start) != n + 1 or len(mtime_ns) != n:
            raise ValueError("a file list's offsets, sizes and times disagree in length")
        self._blob = blob
        self._start = np.asarray(start, dtype=np.int64)
        self.size = np.asarray(size, dtype=np.int64)
        self.mtime_ns = np.asarray(mtime_ns, dtype=np.int64)
        self._keys: np.ndarray | None = None
        self._order: np.ndarray | None = None

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def pack(cls, rels: Iterable[str], sizes: Iterable[int], mtimes: Iterable[int]) -> FileList:
        names = rels if isinstance(rels, list) else list(rels)
        blob = ("\0".join(names) + "\0" if names else "").encode("utf-8", "surrogateescape")
        return cls.from_blob(blob, np.fromiter(sizes, np.int64, len(names)),
                              np.fromiter(mtimes, np.int64, len(names)))  # fmt: skip

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> FileList:
        """A packed copy of ``entries`` (a list of ``FileEntry`` or another ``FileList``)."""
        if isinstance(entries, FileList):
            return entries
        items = list(entries)
        return cls.pack((e.rel for e in items), (e.size for e in items),
                        (e.mtime_ns for e in items))  # fmt: skip

    @classmethod
    def from_blob(cls, blob: bytes, size: np.ndarray, mtime: np.ndarray) -> FileList:
        """The list of NUL-terminated UTF-8 paths ``blob`` with these sizes and times."""
        ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 0)
        if len(ends) != len(size):
            raise ValueError(f"{len(ends)} paths for {len(size)} files")
        start = np.empty(len(ends) + 1, np.int64)
        start[0] = 0
        start[1:] = ends + 1
        return cls(blob, start, size, mtime)

    # -- the sequence ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.size)

    def rel(self, i: int) -> str:
        a, b = int(self._start[i]), int(self._start[i + 1]) - 1
        return self._blob[a:b].decode("utf-8", "surrogateescape")

    @overload
    def __getitem__(self, i: int) -> FileEntry: ...
    @overload
    def __getitem__(self, i: slice) -> FileList: ...
    def __getitem__(self, i: int | slice) -> FileEntry | FileList:
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        n = len(self)
        k = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= k < n:
            raise IndexError("file index out of range")
        return FileEntry(self.rel(k), int(self.size[k]), int(self.mtime_ns[k]))

    def __iter__(self) -> Iterator[FileEntry]:
        for k in range(len(self)):
            yield self[k]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FileList):
            return (self._blob == other._blob and np.array_equal(self.size, other.size)
                    and np.array_equal(self.mtime_ns, other.mtime_ns))  # fmt: skip
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequences are not hashable

    def __repr__(self) -> str:
        return f"FileList({len(self):,} files)"

    def take(self, idx: Sequence[int] | np.ndarray) -> FileList:
        """The files at ``idx``, in that order: the paths copied as byte ranges, one per run of
        consecutive indices (a pass's rows are runs of the folder), never one string each."""
        ids = np.asarray(idx, dtype=np.int64).reshape(-1)
        if not len(ids):
            return FileList.pack([], [], [])
        if ids.min() < 0 or ids.max() >= len(self):
            raise IndexError("file index out of range")
        cut = np.flatnonzero(np.diff(ids) != 1) + 1
        firsts = np.concatenate([[0], cut])
        lasts = np.concatenate([cut, [len(ids)]]) - 1
        blob = b"".join(self._blob[self._start[ids[a]] : self._start[ids[b] + 1]]
                        for a, b in zip(firsts.tolist(), lasts.tolist(), strict=True))  # fmt: skip
        return FileList.from_blob(blob, self.size[ids], self.mtime_ns[ids])

    def nbytes(self) -> int:
        """Memory the list holds (paths, offsets, sizes, times, and the match keys once made)."""
        extra = 0 if self._keys is None else self._keys.nbytes + self._order.nbytes  # type: ignore[union-attr]  # set together
        return (
            len(self._blob) + self._start.nbytes + self.size.nbytes + self.mtime_ns.nbytes + extra
        )

    # -- matching --------------------------------------------------------------------------------
    def keys(self) -> np.ndarray:
        """A 64-bit key per file from its path, size and mtime (the identity the cache uses)."""
        if self._keys is None:
            out = np.empty(len(self), np.uint64)
            blob, start = self._blob, self._start
            for k in range(len(self)):
                h = hashlib.blake2b(blob[start[k] : start[k + 1]], digest_size=8)
                h.update(int(self.size[k]).to_bytes(8, "little", signed=True))
                h.update(int(self.mtime_ns[k]).to_bytes(8, "little", signed=True))
                out[k] = int.from_bytes(h.digest(), "little")
            self._keys = out
            self._order = np.argsort(out, kind="stable")
        return self._keys

    def locate(self, other: FileList) -> np.ndarray:
        """For each file of ``other``, its index in this list, or ``-1`` if this list lacks it."""
        mine = self.keys()
        order = self._order
        assert order is not None
        theirs = other.keys()
        if not len(self):
            return np.full(len(other), -1, np.int64)
        pos = np.minimum(np.searchsorted(mine, theirs, sorter=order), len(order) - 1)
        cand = order[pos]
        hit = mine[cand] == theirs
        hit &= self.size[cand] == other.size
        hit &= self.mtime_ns[cand] == other.mtime_ns
        out = np.where(hit, cand, -1).astype(np.int64)
        for j in np.flatnonzero(hit):  # the paths themselves, so a key collision cannot pair files
            if self.rel(int(out[j])) != other.rel(int(j)):
                out[j] = -1
        return out

    def blob(self) -> bytes:
        """The paths as stored: UTF-8, each followed by a NUL."""
        return self._blob
