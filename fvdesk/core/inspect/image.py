"""The inspected image: one file, prepared exactly as the dataset pass prepares its images.

Decoding and fitting are the image folder's (``fvdesk.core.imagefolder``: EXIF orientation,
16-bit, RGBA on white, shorter side scaled and the centre cropped), so a unit's value on an
inspected image is the value a dataset pass would rank that image by.  The file's sha256 goes
into every job made from it, and a runner refuses a file whose bytes changed since: a saved
record then always names the pixels it was computed from.

Torch-free (numpy + Pillow): the app opens images on a background call without the engine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import ImageError
from fvdesk.core.imagefolder import Geometry, ImageSkipped, fit_image


@dataclass(frozen=True, eq=False)
class InspectedImage:
    """A decoded image at the model's input size: uint8 ``pixels`` (H, W, 3), the file's
    ``sha256`` and how model pixels map back to the source (``geometry``)."""

    path: Path
    sha256: str
    pixels: np.ndarray
    geometry: Geometry

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the prepared image (the model's input size)."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def source_size(self) -> tuple[int, int]:
        """(width, height) of the file after EXIF rotation."""
        return self.geometry.src_w, self.geometry.src_h

    def x01(self) -> np.ndarray:
        """float32 (1, 3, H, W) in [0, 1]: what ``LoadedModel.prepare_input`` takes."""
        return (self.pixels.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (``ImageError`` when it cannot be read)."""
    try:
        data = Path(path).read_bytes()  # images are small next to memory (the decoder holds more)
    except OSError as e:
        raise ImageError(f"The image {path} cannot be read ({e.strerror or e}).") from None
    return hashlib.sha256(data).hexdigest()


def _input_size(target: Any) -> tuple[int, int]:
    if isinstance(target, tuple | list):
        return int(target[0]), int(target[1])
    spec = target.input  # a LoadedModel
    return int(spec.height), int(spec.width)


def open_image(path: str | os.PathLike[str], target: Any,
               *, sha256: str | None = None) -> InspectedImage:  # fmt: skip
    """``path`` fitted to ``target`` (a ``LoadedModel``, or ``(height, width)``).

    ``sha256``: the bytes a job was made from; a file that changed since is refused.  Every
    failure is an ``ImageError`` whose message is one sentence naming the file.
    """
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise ImageError(f"The image {p} does not exist.")
    if not p.is_file():
        raise ImageError(f"The image {p} is not a file.")
    digest = file_sha256(p)
    if sha256 and digest != sha256:
        raise ImageError(
            f"The image {p} changed since the job was made (sha256 {digest[:12]}…, "
            f"the record names {sha256[:12]}…)."
        )
    h, w = _input_size(target)
    try:
        pixels, geo = fit_image(p, h, w)
    except ImageSkipped as e:
        raise ImageError(f"The image {p} cannot be used: {e.reason}.") from None
    except FileNotFoundError:
        raise ImageError(f"The image {p} does not exist.") from None
    return InspectedImage(p, digest, np.ascontiguousarray(pixels), geo)


def find_image(path: str, sha256: str, search: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Where a job's image is now: ``path`` when its bytes still match, else a file of the same
    name under one of ``search`` (a saved gallery's ``inspected/`` copy) that matches."""
    p = Path(path)
    candidates = [p] + [Path(d) / p.name for d in search] + [
        Path(d) / INSPECTED_DIR / p.name for d in search
    ]  # fmt: skip
    for c in candidates:
        if c.is_file() and (not sha256 or file_sha256(c) == sha256):
            return c
    return p


_SEARCH: list[Path] = []


def search_dirs() -> tuple[Path, ...]:
    """Folders (saved galleries) where a job's image is looked for when its path is gone."""
    return tuple(_SEARCH)


def search_in(folder: str | os.PathLike[str]) -> None:
    """Look for moved images in ``folder`` too (``render --from`` adds the gallery it reads)."""
    p = Path(folder)
    if p not in _SEARCH:
        _SEARCH.append(p)


#: The folder of a saved gallery that holds a copy of the inspected image.
INSPECTED_DIR = "inspected"


def copy_into(folder: str | os.PathLike[str], image: InspectedImage) -> Path:
    """Copy the inspected file into ``folder/inspected/`` (atomically) so the gallery carries
    the image its items were computed from."""
    from fvdesk.core.fileio import atomic_write_bytes

    dest = Path(folder) / INSPECTED_DIR / image.path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (dest.is_file() and file_sha256(dest) == image.sha256):
        atomic_write_bytes(dest, image.path.read_bytes())
    return dest


__all__ = ["INSPECTED_DIR", "InspectedImage", "copy_into", "file_sha256", "find_image",
           "open_image", "search_dirs", "search_in"]  # fmt: skip
