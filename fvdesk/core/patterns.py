"""Procedural pattern images: the training data of the embedded demo model.

The demo model ships with fvdesk so the app has something to open without downloading weights,
and so the engine's tests have a model whose "right answer" is known: a render that maximizes
"horizontal stripes" should contain horizontal stripes. That only works if each class has one
defining visual cue, so everything else (colours, period, phase, thickness, edge softness,
noise) is randomized here and the cue is left as the only thing that separates the classes.

Conventions: images are float32 RGB in [0, 1], shape ``(n, 3, size, size)``; ``y`` grows
downwards, as in every image format. Periods are in pixels and do not scale with ``size``, so a
larger image shows more of the same texture (the model is fully convolutional and is meant to
work at any input size). Qt-free and numpy-only so tools and tests can use it headless.
"""

from __future__ import annotations

import numpy as np

CLASSES: tuple[str, ...] = (
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes /",
    "diagonal stripes \\",
    "checkerboard",
    "dots",
    "rings",
    "colour blobs",
)

# Direction (radians, x right / y down) along which intensity varies, for each stripe class.
# Horizontal stripes vary along y; "/" lines run bottom-left to top-right, i.e. along x + y = c,
# so they vary along (1, 1); "\" lines run along x - y = c and vary along (1, -1).
_STRIPE_ANGLE = {0: np.pi / 2, 1: 0.0, 2: np.pi / 4, 3: -np.pi / 4}
_ANGLE_JITTER = np.deg2rad(7.0)  # well under the 45 degrees between stripe classes
_MIN_COLOUR_DISTANCE = 0.35  # RGB euclidean distance, so every pattern stays visible


def generate(
    n: int,
    size: int = 64,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n`` random pattern images and their class indices into :data:`CLASSES`.

    Classes are balanced (counts differ by at most one) and shuffled. Pass ``seed`` for a
    reproducible batch, or ``rng`` to draw successive batches from one stream (training).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if rng is not None and seed is not None:
        raise ValueError("pass either seed or rng, not both")
    if rng is None:
        rng = np.random.default_rng(seed)

    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(CLASSES))
    images = np.empty((n, 3, size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    for cls in range(len(CLASSES)):
        idx = np.flatnonzero(labels == cls)
        if idx.size:
            images[idx] = _render_class(cls, idx.size, size, xx, yy, rng)

    # Sensor-like noise so the model cannot rely on perfectly flat regions. Uniform rather than
    # gaussian (cheaper to draw, same effect); chunked to avoid a second full-size temporary.
    noise_amp = rng.uniform(0.0, 0.12, size=(n, 1, 1, 1)).astype(np.float32)
    for start in range(0, n, 1024):
        chunk = images[start : start + 1024]
        noise = rng.random(chunk.shape, dtype=np.float32)
        noise -= 0.5
        noise *= noise_amp[start : start + 1024]
        chunk += noise
    np.clip(images, 0.0, 1.0, out=images)
    return images, labels


def _render_class(
    cls: int, m: int, size: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Render ``m`` images of one class, shape ``(m, 3, size, size)``."""
    if cls == 7:
        return _blobs(m, size, xx, yy, rng)
    if cls in _STRIPE_ANGLE:
        mask = _stripes(m, _STRIPE_ANGLE[cls], xx, yy, rng)
    elif cls == 4:
        mask = _checkerboard(m, xx, yy, rng)
    elif cls == 5:
        mask = _dots(m, xx, yy, rng)
    else:
        mask = _rings(m, size, xx, yy, rng)
    fg, bg = _colour_pairs(m, rng)
    mask = mask[:, None]  # (m, 1, H, W)
    return bg[:, :, None, None] * (1.0 - mask) + fg[:, :, None, None] * mask


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image parameters as float32 ``(m, 1, 1)`` for broadcasting over the pixel grid."""
    return values.astype(np.float32)[:, None, None]


def _threshold(wave: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Turn a [-1, 1] wave into a mask with random thickness (duty cycle) and edge softness."""
    level = _col(rng.uniform(-0.5, 0.5, m))  # duty cycle arccos(level)/pi in [1/3, 2/3]
    soft = _col(rng.uniform(0.1, 0.9, m))  # small: hard edges, large: nearly sinusoidal
    return np.clip((wave - level) / soft + 0.5, 0.0, 1.0)


def _periods(m: int, rng: np.random.Generator, lo: float = 5.0, hi: float = 16.0) -> np.ndarray:
    """Log-uniform periods in pixels, so fine and coarse patterns are equally common."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), m))


def _rotated(
    m: int, angle: float | np.ndarray, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``angle`` plus a small random jitter, shape ``(m, H, W)``."""
    theta = angle + rng.uniform(-_ANGLE_JITTER, _ANGLE_JITTER, m)
    c, s = _col(np.cos(theta)), _col(np.sin(theta))
    return xx * c + yy * s, -xx * s + yy * c


def _stripes(
    m: int, angle: float, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    u, _ = _rotated(m, angle, xx, yy, rng)
    phase = _col(rng.uniform(0.0, 1.0, m))
    return _threshold(np.cos(2 * np.pi * (u / _col(_periods(m, rng)) + phase)), m, rng)


def _checkerboard(m: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u, v = _rotated(m, 0.0, xx, yy, rng)
    p = _col(_periods(m, rng, 6.0, 18.0))  # one period = two squares
    pu, pv = _col(rng.uniform(0, 1, m)), _col(rng.uniform(0, 1, m))
    wave = np.cos(2 * np.pi * (u / p + pu)) * np.cos(2 * np.pi * (v / p + pv))
    soft = _col(rng.uniform(0.1, 0.5, m))  # squares must meet at corners, so no thickness
    return np.clip(wave / soft + 0.5, 0.0, 1.0)


def _dots(m: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round dots on a square or hexagonal grid, never touching (unlike checkerboard squares)."""
    u, v = _rotated(m, 0.0, xx, yy, rng)
    p = _col(_periods(m, rng, 7.0, 18.0))
    gu = u / p + _col(rng.uniform(0, 1, m))
    gv = v / p + _col(rng.uniform(0, 1, m))
    hexagonal = _col(rng.random(m) < 0.5)
    gu = gu + 0.5 * hexagonal * (np.floor(gv) % 2)
    du = (gu - np.floor(gu) - 0.5) * p
    dv = (gv - np.floor(gv) - 0.5) * p
    radius = p * _col(rng.uniform(0.15, 0.32, m))
    soft = _col(rng.uniform(0.7, 2.0, m))
    return np.clip((radius - np.hypot(du, dv)) / soft + 0.5, 0.0, 1.0)


def _rings(
    m: int, size: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Concentric rings around a random centre inside the image (so curvature is visible)."""
    cx = _col(rng.uniform(0.15, 0.85, m) * size)
    cy = _col(rng.uniform(0.15, 0.85, m) * size)
    r = np.hypot(xx - cx, yy - cy)
    phase = _col(rng.uniform(0.0, 1.0, m))
    return _threshold(np.cos(2 * np.pi * (r / _col(_periods(m, rng)) + phase)), m, rng)


def _blobs(
    m: int, size: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """2-5 smooth gaussian blobs of distinct colours: colour and smoothness, no periodicity."""
    max_blobs = 5
    count = rng.integers(2, max_blobs + 1, m)
    bg = rng.random((m, 3), dtype=np.float32)
    img = np.broadcast_to(bg[:, :, None, None], (m, 3, size, size)).astype(np.float32)
    for k in range(max_blobs):
        colour = _colours_far_from(bg, rng)
        cx = _col(rng.uniform(0.0, 1.0, m) * size)
        cy = _col(rng.uniform(0.0, 1.0, m) * size)
        sigma = _col(rng.uniform(0.08, 0.22, m) * size)
        amp = _col(rng.uniform(0.7, 1.0, m) * (k < count))
        alpha = amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        alpha = alpha[:, None]
        img = img * (1.0 - alpha) + colour[:, :, None, None] * alpha
    return img


def _colour_pairs(m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random (foreground, background) RGB pairs far enough apart to see the pattern."""
    bg = rng.random((m, 3), dtype=np.float32)
    return _colours_far_from(bg, rng), bg


def _colours_far_from(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random RGB colours at least ``_MIN_COLOUR_DISTANCE`` from ``ref`` (rejection sampling)."""
    out = rng.random(ref.shape, dtype=np.float32)
    for _ in range(100):
        close = np.linalg.norm(out - ref, axis=1) < _MIN_COLOUR_DISTANCE
        if not close.any():
            return out
        out[close] = rng.random((int(close.sum()), 3), dtype=np.float32)
    # Astronomically unlikely; the opposite corner of the RGB cube is always far enough.
    out[close] = np.where(ref[close] > 0.5, 0.0, 1.0)  # pragma: no cover
    return out  # pragma: no cover
