"""PNG names in a gallery: close to ``layer_u0003``, accepted by every file system, unique
(case- and normalization-insensitively) among the folder's items."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

#: Bound on a PNG name's stem in UTF-8 bytes (file systems allow 255; leave room for suffixes).
MAX_STEM_BYTES = 120

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


def _fit_suffix(stem: str, suffix: str) -> str:
    budget = MAX_STEM_BYTES - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(" .")
    return (cut or "_") + suffix
