"""Decoding a folder's images for the pass, in this process or in worker processes.

Torch-free (numpy + Pillow only), so a worker process started for decoding imports no more than
that: ``decode_chunk`` is what the pass hands a ``ProcessPoolExecutor``.  Every result is a
tuple ``(status, value, size)``: ``("ok", pixels, (width, height))``, ``("skip", reason, None)``
or ``("gone", reason, None)``; they pickle cheaply (uint8 pixels at the model's input size).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fvdesk.core.imagefolder import ImageSkipped, fit_image

Decoded = tuple[str, Any, Any]


def decode_file(root: Path, rel: str, h: int, w: int, reduced: bool = True) -> Decoded:
    """One file of the folder fitted to ``h`` x ``w`` (see the module docstring)."""
    try:
        pixels, geo = fit_image(root / rel, h, w, reduced=reduced)
    except ImageSkipped as e:
        return ("skip", e.reason, None)
    except FileNotFoundError:
        return ("gone", "vanished during the pass", None)
    except OSError as e:  # a permission problem, a network drive going away
        if not root.is_dir():
            return ("gone", "vanished during the pass", None)
        return ("skip", f"unreadable ({e.strerror or e})", None)
    return ("ok", pixels, (geo.src_w, geo.src_h))


def decode_chunk(root: str, rels: Sequence[str], h: int, w: int, reduced: bool) -> list[Decoded]:
    """A whole batch in one task: one round trip to a worker process per batch, not per file."""
    base = Path(root)
    return [decode_file(base, rel, h, w, reduced) for rel in rels]


def process_context() -> Any:
    """``forkserver`` where there is one (Linux), else ``spawn``: never a plain ``fork`` of a
    process whose torch and onnxruntime threads may hold locks."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
