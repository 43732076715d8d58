"""Image folders built in tests: generated pattern images of known classes (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fvdesk.core.patterns import CLASSES, generate


def class_dir(c: int) -> str:
    """The sub-folder holding class ``c``'s images (``c0`` ... ``c7``)."""
    return f"c{c}"


def save_png(path: Path, chw: np.ndarray) -> Path:
    """A float (3, H, W) image in [0, 1] as a PNG (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((chw.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(path)
    return path


def pattern_folder(root: Path, per_class: int = 12, size: int = 64, seed: int = 11) -> Path:
    """``per_class`` pattern images of each demo class, one sub-folder per class."""
    x, y = generate(per_class * len(CLASSES), size, seed=seed)
    for i in range(len(x)):
        save_png(root / class_dir(int(y[i])) / f"{i:03d}.png", x[i])
    return root
