"""The user's image folder: which files it holds, and how one file becomes the model's input.

``scan_folder(root)`` lists every regular file under ``root`` (recursively; hidden files and
folders left out), sorted by relative POSIX path, with size and modification time: together they
are the folder's identity for the cache.  Files whose suffix no Pillow reader claims are listed
as skipped ("not an image file") without being opened; the others are decoded by ``load_image``.

Decoding handles what real folders hold: EXIF orientation (phone photos), grayscale, palette
and bilevel images, transparency (composited on white, as a page shows it), 16-bit and 32-bit
integer and float images (scaled by their bit depth, not clipped), CMYK/YCbCr/LAB, the first
frame of animations.  Unreadable, truncated, empty and oversized files raise ``ImageSkipped``
with a short reason; the pass counts and lists them and carries on.

Fitting to the model (``fit_box``): the image is scaled so its shorter side matches the model's
input (aspect kept) and the centre is cropped, the torchvision ``Resize`` + ``CenterCrop``
convention; the returned ``Geometry`` maps model-input pixels back to the source image so crop
boxes can be drawn on the original.  Pillow does the resampling (bilinear, antialiased when
shrinking; JPEGs are decoded at reduced scale when that is still large enough).  The array handed
to the model goes through ``LoadedModel.prepare_input`` like every rendered image.

Torch-free (numpy + Pillow), so the app and the colour statistics can use it without the engine.
"""

from __future__ import annotations

import os
import stat
import warnings
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.errors import DatasetError
from fvdesk.core.filelist import FileEntry as FileEntry  # the entries of a scan, re-exported
from fvdesk.core.filelist import FileList

#: Images with more pixels than this are skipped as decompression bombs (Pillow's own default).
MAX_PIXELS = 89_478_485
#: File names that operating systems leave in image folders.
_CRUFT = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
#: Background that transparent pixels are composited on (white, as a page shows them).
BACKGROUND = (255, 255, 255)


class ImageSkipped(Exception):
    """One file could not be used; ``reason`` is a few words for the skipped-files list."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class FolderScan:
    """What ``scan_folder`` found: candidate images (sorted) and files that are not images.

    ``images`` is a packed ``FileList`` (a list of ``FileEntry`` given here is packed), so a
    folder of a million images costs tens of megabytes, not a gigabyte of Python objects."""

    root: Path
    images: FileList
    other: list[tuple[str, str]]  # (relative path, reason)

    def __post_init__(self) -> None:
        self.images = FileList.of(self.images)

    def index(self) -> dict[tuple[str, int, int], int]:
        """``FileEntry.key`` -> position in ``images``; ``images.locate`` matches without it."""
        return {f.key: i for i, f in enumerate(self.images)}


@dataclass(frozen=True)
class Geometry:
    """How a source image (``src_w`` x ``src_h`` px, after EXIF rotation) maps to the model input:
    model pixel ``(u, v)`` is source pixel ``(x0 + u / scale, y0 + v / scale)``."""

    src_w: int
    src_h: int
    x0: float
    y0: float
    scale: float

    def to_source(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """A box ``(x0, y0, x1, y1)`` in model-input pixels as source pixels, inside the image."""
        a, b, c, d = (float(v) for v in box)
        s = self.scale
        x0 = min(max(self.x0 + a / s, 0.0), self.src_w)
        y0 = min(max(self.y0 + b / s, 0.0), self.src_h)
        x1 = min(max(self.x0 + c / s, 0.0), self.src_w)
        y1 = min(max(self.y0 + d / s, 0.0), self.src_h)
        return (x0, y0, x1, y1)


def geometry(src_w: int, src_h: int, out_h: int, out_w: int) -> Geometry:
    """Scale the shorter side to the output, crop the centre (``Resize`` + ``CenterCrop``)."""
    scale = max(out_w / src_w, out_h / src_h)
    return Geometry(src_w, src_h, (src_w - out_w / scale) / 2, (src_h - out_h / scale) / 2, scale)


# ------------------------------------------------------------------------------------------------
# Scanning
# ------------------------------------------------------------------------------------------------
def image_suffixes() -> frozenset[str]:
    """Suffixes (lower case, with the dot) of the formats Pillow can open here."""
    from PIL import Image

    ext = Image.registered_extensions()
    return frozenset(k.lower() for k, fmt in ext.items() if fmt in Image.OPEN)


def scan_folder(root: str | os.PathLike[str]) -> FolderScan:
    """Every file under ``root`` (recursive, hidden entries and OS cruft left out, symlinked
    folders not followed), in path order component by component (a folder's entries sorted by
    name, a subfolder's files where the subfolder sorts); ``DatasetError`` when ``root`` is no
    folder.  Each file goes straight into the packed list: the listing holds no Python object
    per file, only the entries of the folder being read."""
    base = Path(root)
    if not base.is_dir():
        what = "does not exist" if not base.exists() else "is not a folder"
        raise DatasetError(f"The image folder {base} {what}.")
    suffixes = image_suffixes()
    blob = bytearray()
    sizes, mtimes = array("q"), array("q")
    other: list[tuple[str, str]] = []
    stack = [(iter(_entries(str(base), base, "", other)), "")]
    while stack:
        entry = next(stack[-1][0], None)
        if entry is None:
            stack.pop()
            continue
        sub, name = stack[-1][1], entry.name
        rel = f"{sub}/{name}" if sub else name
        if _is_dir(entry):
            if not entry.is_symlink():
                stack.append((iter(_entries(entry.path, base, rel, other)), rel))
            continue
        if name.lower() in _CRUFT:
            continue
        try:
            st = os.stat(entry.path)
        except OSError:
            other.append((rel, "cannot be read"))
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if os.path.splitext(name)[1].lower() not in suffixes:
            other.append((rel, "not an image file"))
            continue
        blob += rel.encode("utf-8", "surrogateescape") + b"\0"
        sizes.append(int(st.st_size))
        mtimes.append(int(st.st_mtime_ns))
    other.sort()
    images = FileList.from_blob(bytes(blob), np.frombuffer(sizes, np.int64),
                                np.frombuffer(mtimes, np.int64))  # fmt: skip
    return FolderScan(base, images, other)


def _entries(path: str, base: Path, rel: str, other: list[tuple[str, str]]) -> list[Any]:
    """A folder's visible entries sorted by name; an unreadable subfolder is listed in ``other``."""
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        if not rel:
            raise DatasetError(
                f"The image folder {base} cannot be read ({e.strerror or e})."
            ) from None
        other.append((rel, "folder cannot be read"))
        return []


def _is_dir(entry: Any) -> bool:
    try:
        return bool(entry.is_dir())
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------
_QUIET = False


def _quiet_bomb_warning() -> None:
    """Pillow warns about large images on open; ``load_image`` checks the size itself and skips
    them with a reason, so the warning would only repeat that on stderr."""
    global _QUIET
    if not _QUIET:
        from PIL import Image

        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        _QUIET = True


def load_image(path: str | os.PathLike[str], *, draft: tuple[int, int] | None = None) -> Any:
    """Decode ``path`` as an 8-bit RGB ``PIL.Image`` in its displayed orientation.

    Returns ``(image, (width, height))`` where the size is the full-resolution size after EXIF
    rotation; with ``draft=(w, h)`` a JPEG may be decoded at a reduced scale no smaller than
    that (the returned image is then smaller than the size).  Raises ``ImageSkipped``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _quiet_bomb_warning()
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageSkipped("empty file")
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageSkipped(
                    f"decompression bomb ({w}x{h} px, over the {MAX_PIXELS // 1_000_000} MP limit)"
                )
            if draft is not None and im.format == "JPEG":
                side = max(draft)  # either side may end up the shorter one after rotation
                im.draft("RGB", (side, side))
            im.load()
            orientation = _orientation(im)
            if orientation in (5, 6, 7, 8):
                w, h = h, w
            im = ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
            rgb = _to_rgb(im)
    except ImageSkipped:
        raise
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError:
        raise ImageSkipped(
            f"decompression bomb (over the {MAX_PIXELS // 1_000_000} MP limit)"
        ) from None
    except UnidentifiedImageError:
        raise ImageSkipped("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        text = str(e).lower()
        if "truncated" in text or isinstance(e, EOFError):
            raise ImageSkipped("truncated image data") from None
        if isinstance(e, OSError) and not p.exists():
            raise FileNotFoundError(str(p)) from None
        raise ImageSkipped(f"unreadable ({_first_line(e)})") from None
    return rgb, (w, h)


def _orientation(im: Any) -> int | None:
    """The EXIF orientation tag (read only where a format can carry one: parsing costs time)."""
    if "exif" not in im.info and im.format not in ("TIFF", "MPO"):
        return None
    try:
        value = im.getexif().get(0x0112)
    except (AttributeError, OSError, SyntaxError, ValueError):
        return None
    return int(value) if isinstance(value, int) else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:80]


def _to_rgb(im: Any) -> Any:
    """Any Pillow mode as 8-bit RGB: deep images scaled by their depth, alpha on white."""
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16"):
            a = a / 65535.0
        elif mode == "I":
            a = a / (65535.0 if a.max(initial=0) <= 65535 else float(a.max()))
        elif a.size and (a.min() < 0 or a.max() > 1):  # float images outside [0, 1]
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        g = (np.clip(np.nan_to_num(a), 0, 1) * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(g).convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, BACKGROUND)
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im if im.mode == "RGB" else im.convert("RGB")


#: Shrinking by more than this factor first averages whole blocks of pixels (Pillow's
#: ``reducing_gap``), then resamples: a PNG or WebP photo cut to the model's size resizes 3x as
#: fast (their decoders have no reduced scale, so the full decode stays the main cost).
REDUCING_GAP = 3.0


def fit_image(path: str | os.PathLike[str], out_h: int, out_w: int, *,
              reduced: bool = True) -> tuple[np.ndarray, Geometry]:  # fmt: skip
    """``path`` scaled and centre-cropped to ``out_h`` x ``out_w``: uint8 (H, W, 3) and how the
    result maps back to the source image.  Raises ``ImageSkipped`` / ``FileNotFoundError``.

    ``reduced`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale when that is still at least the
    output size on both sides (the documented preparation's crop never needs more pixels) and a
    large shrink start with a block average (``REDUCING_GAP``); ``False`` decodes every pixel
    (``tests/core/dataset/test_dataset.py`` shows the rankings agree within a stated tolerance)."""
    from PIL import Image

    img, (w, h) = load_image(path, draft=(out_w, out_h) if reduced else None)
    geo0 = geometry(w, h, out_h, out_w)
    if img.size == (out_w, out_h):
        return np.asarray(img, dtype=np.uint8), geo0
    # The (possibly JPEG-draft-reduced) decoded image has its own scale; crop the same region.
    k = img.width / w
    box = (geo0.x0 * k, geo0.y0 * k, (geo0.x0 + out_w / geo0.scale) * k,
           (geo0.y0 + out_h / geo0.scale) * k)  # fmt: skip
    # The uncropped side's offset is 0 up to rounding (-1e-14 for a 384x191 image): Pillow
    # refuses a box even that far outside the image.
    box = (max(0.0, box[0]), max(0.0, box[1]), min(float(img.width), box[2]),
           min(float(img.height), box[3]))  # fmt: skip
    gap = REDUCING_GAP if reduced else None
    small = img.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box, reducing_gap=gap)
    return np.asarray(small, dtype=np.uint8), geo0
