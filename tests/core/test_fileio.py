"""Atomic writes: all or nothing, and files with the permissions the user's umask gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from fvdesk.core.fileio import atomic_open, atomic_write_text
from fvdesk.core.model.preprocessing import PRESETS
from fvdesk.core.model.sidecar import save_sidecar
from fvdesk.core.output.gallery import GalleryItem, ModelInfo, write_gallery

posix = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@posix
def test_files_get_the_umask_permissions(tmp_path: Path, umask) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    assert mode(tmp_path / "a.txt") == 0o644
    umask(0o077)
    atomic_write_text(tmp_path / "b.txt", "x")
    assert mode(tmp_path / "b.txt") == 0o600
    umask(0o002)
    atomic_write_text(tmp_path / "a.txt", "y")  # replacing takes the new file's mode
    assert mode(tmp_path / "a.txt") == 0o664


@posix
def test_galleries_and_sidecars_are_shareable(tmp_path: Path, umask) -> None:
    pairs = [(GalleryItem("conv", 1), np.zeros((8, 8, 3), np.uint8))]
    folder = write_gallery(tmp_path / "g", ModelInfo("m.onnx", "a" * 64), pairs)
    files = [p for p in folder.iterdir() if p.is_file()]
    assert len(files) == 4 and {mode(p) for p in files} == {0o644}
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    side = save_sidecar(model, preprocessing=PRESETS["caffe"])
    assert mode(side) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("new")
        raise RuntimeError("disk pulled")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]
