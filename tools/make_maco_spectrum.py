"""Make fvdesk's default MACO spectrum (``resources/spectra/natural.npz``) from a few photographs.

MACO needs the mean magnitude spectrum of natural images.  fvdesk downloads nothing, so its
default is measured here from photographs that ship inside PyPI wheels (see
``resources/spectra/README.md`` for the exact files and commands), and the result is committed.
Natural-image amplitude spectra are close to scale invariant (~1/f), so every photograph also
contributes random square crops at several scales, seeded, which smooths the estimate.

    python tools/make_maco_spectrum.py --images DIR [--out resources/spectra/natural.npz]

Prints a JSON summary (files, samples, the fitted spectral slope).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fvdesk.core.optim.maco import (  # noqa: E402
    SPECTRUM_SIZE,
    folder_images,
    magnitude_spectrum,
    save_spectrum,
)


def samples(files: list[Path], crops: int, seed: int, size: int) -> list[np.ndarray]:
    """Each photograph plus ``crops`` random squares between ``size`` and its short side (only
    ever shrunk to ``size``: enlarging would blur away the high frequencies being measured)."""
    rng = np.random.default_rng(seed)
    out = []
    for p in files:
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB"))
        h, w = a.shape[:2]
        out.append(a)
        for _ in range(crops):
            side = int(rng.uniform(min(size, min(h, w)), min(h, w)))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            out.append(a[y : y + side, x : x + side])
    return out


def slope(mag: np.ndarray) -> float:
    """Least-squares slope of log mean magnitude against log radial frequency (1/f gives -1)."""
    s = mag.shape[-1]
    f = np.hypot(*np.meshgrid(np.arange(s) - s // 2, np.arange(s) - s // 2, indexing="ij")) / s
    m = mag.mean(0)
    ok = (f > 2 / s) & (f < 0.5)
    return float(np.polyfit(np.log(f[ok]), np.log(m[ok]), 1)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True, help="folder of photographs")
    ap.add_argument("--out", type=Path, default=Path("resources/spectra/natural.npz"))
    ap.add_argument("--crops", type=int, default=15, help="random crops per photograph")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=SPECTRUM_SIZE)
    args = ap.parse_args()
    files = folder_images(args.images)
    source = (
        f"{len(files)} photographs ({', '.join(p.name for p in files)}) and {args.crops} random "
        f"crops of each (seed {args.seed}); see resources/spectra/README.md"
    )
    spec = magnitude_spectrum(
        samples(files, args.crops, args.seed, args.size), size=args.size, source=source
    )
    save_spectrum(spec, args.out)
    print(json.dumps({
        "out": str(args.out), "files": [p.name for p in files], "samples": spec.images,
        "size": spec.size, "slope": round(slope(spec.magnitude), 3), "sha256": spec.sha256(),
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
