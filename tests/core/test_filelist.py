"""The packed file list: a sequence of ``FileEntry`` that a million-image folder can afford."""

from __future__ import annotations

import numpy as np
import pytest

from fvdesk.core.filelist import FileEntry, FileList
from fvdesk.core.imagefolder import FolderScan, scan_folder


def _entries(n: int) -> list[FileEntry]:
    return [FileEntry(f"d{k % 7}/img_{k:06d}_é.png", 1000 + k, 10**18 + 7 * k) for k in range(n)]


def test_a_packed_list_reads_like_the_list_of_entries() -> None:
    entries = _entries(50)
    fl = FileList.of(entries)
    assert len(fl) == 50 and list(fl) == entries and fl == entries
    assert fl[3] == entries[3] and fl[-1] == entries[-1] and fl.rel(7) == entries[7].rel
    assert list(fl[10:13]) == entries[10:13] and isinstance(fl[10:13], FileList)
    with pytest.raises(IndexError):
        fl[50]
    back = FileList.from_blob(fl.blob(), fl.size, fl.mtime_ns)  # the cache's stored form
    assert back == fl and list(back) == entries


def test_locate_matches_path_size_and_time_and_nothing_else() -> None:
    entries = _entries(200)
    fl = FileList.of(entries)
    other = [entries[5], entries[199], FileEntry(entries[9].rel, entries[9].size + 1, entries[9].mtime_ns),
             FileEntry(entries[9].rel, entries[9].size, entries[9].mtime_ns + 1),
             FileEntry("missing.png", 1, 1), entries[0]]  # fmt: skip
    assert fl.locate(FileList.of(other)).tolist() == [5, 199, -1, -1, -1, 0]
    assert FileList.of([]).locate(FileList.of(other)).tolist() == [-1] * 6


def test_a_key_collision_cannot_pair_two_different_files(monkeypatch) -> None:
    a, b = FileList.of(_entries(3)), FileList.of([FileEntry("other.png", 1000, 10**18)])
    a.keys(), b.keys()
    b._keys = a._keys[:1].copy()  # force the same key as a's first file (same size and time)
    assert b.size[0] == a.size[0] and b.mtime_ns[0] == a.mtime_ns[0]
    assert a.locate(b).tolist() == [-1]


def test_a_folder_scan_holds_tens_of_bytes_per_image_not_hundreds(tmp_path) -> None:
    """The scan's list is the pass's per-image bookkeeping: it must not cost Python objects."""
    for k in range(300):
        (tmp_path / f"{k:05d}.png").write_bytes(b"x")
    scan = scan_folder(tmp_path)
    assert len(scan.images) == 300 and scan.images[0].rel == "00000.png"
    per = scan.images.nbytes() / 300
    assert per < 60, per
    scan.images.keys()
    assert scan.images.nbytes() / 300 < 80
    # a list of entries given to a FolderScan is packed too
    assert isinstance(FolderScan(tmp_path, list(scan.images), []).images, FileList)


def test_the_packed_list_is_sorted_like_the_paths(tmp_path) -> None:
    for rel in ("b.png", "a/b.png", "a.png", "a-b/c.png", "Z.png"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    rels = [f.rel for f in scan_folder(tmp_path).images]
    assert rels == ["Z.png", "a/b.png", "a-b/c.png", "a.png", "b.png"]  # component by component
    assert np.all(scan_folder(tmp_path).images.size == 1)


def test_take_copies_runs_and_single_files_alike() -> None:
    entries = _entries(30)
    fl = FileList.of(entries)
    for ids in ([], [4], [0, 1, 2, 3], [29, 3, 4, 5, 10, 0], list(range(30))[::-1]):
        assert list(fl.take(ids)) == [entries[i] for i in ids]
    with pytest.raises(IndexError):
        fl.take([30])
