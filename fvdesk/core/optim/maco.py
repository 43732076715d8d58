"""MACO: a Fourier parameterization whose magnitude is fixed and whose phase alone is optimized.

Fel et al. (2023, "Unlocking feature visualization for deeper networks with magnitude constrained
optimization") keep the amplitude spectrum of every image equal to the mean amplitude spectrum of
natural images and let the optimizer change only the phase, where most of an image's structure
lives.  The render can then never put more energy into high frequencies than natural images
have: the article's "enemy" is ruled out by construction, not penalized.

This module holds:

* ``magnitude_spectrum`` / ``magnitude_spectrum_of_folder``: the mean magnitude ``|FFT|`` of a set
  of images, measured per channel in the decorrelated colour space the renderer optimizes in (any
  folder of the user's images; the dataset pass of the app saves one too);
* the spectrum file format (``save_spectrum`` / ``load_spectrum``): an ``.npz`` holding
  ``format = "fvdesk-spectrum"``, ``version``, ``magnitude`` (float, (C, S, S), zero frequency at
  the centre: index ``i`` is ``(i - S // 2) / S`` cycles per pixel on both axes), ``source`` (what
  it was made from), ``images`` (how many) and ``color_matrix`` (the 3x3 colour square root of the
  decorrelated space, normalized as ``param.normalized_color_matrix`` does);
* the default spectrum ``resources/spectra/natural.npz`` (made by ``tools/make_maco_spectrum.py``;
  ``resources/spectra/README.md`` says from which photographs);
* ``MacoParam``, the parameterization (``RenderSettings.param = "maco"``).

A spectrum is resampled to any canvas by frequency (cycles per pixel), so one file serves every
size; its magnitude is scaled once so the latent has unit standard deviation, which keeps the
sigmoid in its useful range without any per-step normalization (the magnitude stays exactly the
target's, a test checks it).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fvdesk.core.errors import ConfigError
from fvdesk.core.fileio import atomic_write_bytes
from fvdesk.core.optim.param import (
    ImageParam,
    gaussian_blur,
    normalized_color_matrix,
)
from fvdesk.core.resources import resource_path

SPECTRUM_FORMAT = "fvdesk-spectrum"
SPECTRUM_VERSION = 1
#: Side of the grid spectra are measured on (resampled to any canvas when used).
SPECTRUM_SIZE = 256
#: Standard deviation of the MACO latent (before colour mixing and the sigmoid).
MACO_STD = 1.0
#: Radians of phase per unit of the optimized parameter: Adam moves a parameter by about the
#: learning rate per step; phases need larger steps than Fourier coefficients to form structure
#: within a few hundred steps (Fel et al. use a learning rate of 1 on the phase); of 1, 5 and
#: 20, 5 gave the demo model's classes the highest logits at 128 steps.
PHASE_SCALE = 5.0


@dataclass
class Spectrum:
    """A mean magnitude spectrum, (C, S, S) with zero frequency at index ``S // 2``."""

    magnitude: np.ndarray
    source: str = ""
    images: int = 0
    color_matrix: list[list[float]] | None = field(default=None)

    @property
    def size(self) -> int:
        return int(self.magnitude.shape[-1])

    def sha256(self) -> str:
        """The content hash provenance records pin (the values, not the file's bytes)."""
        a = np.ascontiguousarray(self.magnitude, dtype=np.float32)
        return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()


# -- measuring ------------------------------------------------------------------------------------
def _square(img: np.ndarray, size: int) -> np.ndarray:
    """An RGB image as float (size, size, 3) in [0, 1]: shorter side scaled to ``size``, centre crop."""
    from PIL import Image

    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a if a.ndim == 3 else a[:, :, None].repeat(3, 2)).convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.LANCZOS)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float64) / 255.0


def magnitude_spectrum(
    images: Iterable[np.ndarray],
    *,
    size: int = SPECTRUM_SIZE,
    color_matrix: Sequence[Sequence[float]] | None = None,
    source: str = "",
) -> Spectrum:
    """Mean ``|FFT|`` of ``images`` (H x W x 3 uint8, or float in [0, 1]), per decorrelated channel.

    Each image is squared to ``size`` (shorter side scaled, centre crop), its mean removed, its
    colours mapped into the decorrelated space (the inverse of the normalized colour matrix) and
    its orthonormal 2-D FFT magnitude accumulated.
    """
    inv = np.linalg.inv(normalized_color_matrix(color_matrix).double().numpy())
    total = np.zeros((3, size, size))
    n = 0
    for img in images:
        x = _square(img, size)
        x = (x - x.mean((0, 1))) @ inv.T  # per pixel: latent = C^-1 (x - mean)
        total += np.abs(np.fft.fft2(x.transpose(2, 0, 1), norm="ortho"))
        n += 1
    if n == 0:
        raise ConfigError("A magnitude spectrum needs at least one image.")
    mag = np.fft.fftshift(total / n, axes=(1, 2))
    c = size // 2  # the removed mean leaves a hole at zero frequency: fill it from its neighbours
    mag[:, c, c] = (mag[:, c - 1, c] + mag[:, c + 1, c] + mag[:, c, c - 1] + mag[:, c, c + 1]) / 4
    matrix = normalized_color_matrix(color_matrix).double().numpy().tolist()
    return Spectrum(mag.astype(np.float32), source, n, matrix)


def folder_images(folder: str | Path, max_images: int = 2048) -> list[Path]:
    """The image files under ``folder`` (sorted, at most ``max_images``; listed as the
    dataset-examples pass lists them); ``ConfigError`` if none."""
    from fvdesk.core.imagefolder import scan_folder

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder of images.")
    files = [root / f.rel for f in scan_folder(root).images[:max_images]]
    if not files:
        raise ConfigError(f"{root} holds no images.")
    return files


def magnitude_spectrum_of_folder(
    folder: str | Path,
    *,
    size: int = SPECTRUM_SIZE,
    max_images: int = 2048,
    color_matrix: Sequence[Sequence[float]] | None = None,
) -> Spectrum:
    """The magnitude spectrum of a folder of images (unreadable files are skipped)."""
    from fvdesk.core.imagefolder import ImageSkipped, load_image

    files = folder_images(folder, max_images)

    def read() -> Iterable[np.ndarray]:
        for p in files:  # decoded as shown: EXIF rotation, 16-bit, palette, alpha on white
            try:
                yield np.asarray(load_image(p)[0])
            except (ImageSkipped, OSError):
                continue

    try:
        return magnitude_spectrum(
            read(), size=size, color_matrix=color_matrix, source=f"folder {Path(folder).name}"
        )
    except ConfigError:
        raise ConfigError(f"{folder} holds no readable images.") from None


# -- the file format ------------------------------------------------------------------------------
def save_spectrum(spectrum: Spectrum, path: str | Path) -> Path:
    """Write ``spectrum`` as an ``.npz`` (atomically); returns the path."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        format=np.array(SPECTRUM_FORMAT),
        version=np.array(SPECTRUM_VERSION),
        magnitude=spectrum.magnitude.astype(np.float32),
        source=np.array(spectrum.source),
        images=np.array(int(spectrum.images)),
        color_matrix=np.asarray(spectrum.color_matrix if spectrum.color_matrix else np.eye(3)),
    )
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_spectrum(path: str | Path) -> Spectrum:
    """Read a spectrum file; ``ConfigError`` naming the file when it is not a valid one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != SPECTRUM_FORMAT:
                raise KeyError("format")
            if int(z["version"]) > SPECTRUM_VERSION:
                raise ConfigError(
                    f"{path} was written by a newer fvdesk; update fvdesk to read it."
                )
            mag = np.asarray(z["magnitude"], dtype=np.float32)
            spec = Spectrum(mag, str(z["source"]), int(z["images"]), z["color_matrix"].tolist())
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist, so no spectrum can be read from it.") from None
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"{path} is not an fvdesk spectrum file ({e}).") from None
    m = spec.magnitude
    if m.ndim != 3 or m.shape[0] not in (1, 3) or m.shape[1] != m.shape[2] or m.shape[1] < 8:
        raise ConfigError(f"{path} holds a spectrum of shape {m.shape}, not (C, S, S).")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ConfigError(f"{path} holds negative or non-finite magnitudes.")
    return spec


def default_spectrum_path() -> Path:
    return resource_path("spectra", "natural.npz")


_CACHE: dict[tuple[str, float], Spectrum] = {}
_LOCK = threading.Lock()


def spectrum_for(source: str | None) -> Spectrum:
    """The spectrum a render uses: ``None`` = the shipped one, a ``.npz`` file, or a folder of
    images (measured once per folder state and kept in memory)."""
    path = Path(source) if source else default_spectrum_path()
    try:
        stamp = max(
            [os.stat(path).st_mtime]
            + ([os.stat(p).st_mtime for p in folder_images(path)] if path.is_dir() else [])
        )
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist, so MACO has no spectrum.") from None
    key = (str(path.resolve()), stamp)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    spec = magnitude_spectrum_of_folder(path) if path.is_dir() else load_spectrum(path)
    with _LOCK:
        _CACHE.clear()  # one spectrum in use at a time is the common case
        _CACHE[key] = spec
    return spec


# -- the parameterization -------------------------------------------------------------------------
def magnitude_grid(spectrum: Spectrum, h: int, w: int, channels: int = 3) -> torch.Tensor:
    """The spectrum resampled by frequency onto the ``rfft2`` grid of an ``h`` x ``w`` canvas,
    (channels, h, w // 2 + 1), zero at zero frequency."""
    m = torch.from_numpy(np.asarray(spectrum.magnitude, dtype=np.float32))
    s = m.shape[-1]
    # close the grid periodically: index s is +0.5 cycles/px, the same bin as index 0 (-0.5)
    m = torch.cat([m, m[:, :1]], 1)
    m = torch.cat([m, m[:, :, :1]], 2)[None]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)
    # f cycles/px -> index f*s + s//2 of s+1 points (align_corners): normalized -1 + 2 i / s
    ny = (-1 + 2 * (fy * s + s // 2) / s).float()
    nx = (-1 + 2 * (fx * s + s // 2) / s).float()
    grid = torch.stack(torch.broadcast_tensors(nx[None, :], ny[:, None]), -1)[None]
    out = F.grid_sample(m, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    out[:, 0, 0] = 0.0
    if channels == 1:
        return out[:1]
    return out if out.shape[0] == 3 else out.expand(3, -1, -1).clone()


def _hermitian_phase(phase: torch.Tensor, w: int) -> torch.Tensor:
    """Phases whose self-conjugate columns (0 and, for even ``w``, the last) are odd in y, so the
    inverse real FFT keeps every magnitude exactly (it would otherwise average conjugate pairs)."""
    cols = [0] + ([phase.shape[-1] - 1] if w % 2 == 0 else [])
    out = phase.clone()
    for c in cols:
        col = phase[..., c]
        flipped = torch.roll(torch.flip(col, dims=[-1]), 1, dims=-1)  # value at -ky
        out[..., c] = (col - flipped) / 2
    return out


class MacoParam(ImageParam):
    """``ImageParam`` whose separate latent is the Fourier *phase*; the magnitude is a fixed buffer.

    ``magnitude`` (C, H, W // 2 + 1) is the target times one gain (unit latent std), so
    ``|rfft2(latent)| == magnitude`` holds exactly for every image at every step.
    """

    def __init__(self, batch: int, height: int, width: int | None = None, *,
                 spectrum: Spectrum, **kwargs: object) -> None:  # fmt: skip
        super().__init__(batch, height, width, kind="fourier", **kwargs)  # type: ignore[arg-type]  # kwargs are ImageParam's
        self.kind = "maco"  # type: ignore[assignment]  # a kind ImageParam does not know
        dev = self.separate.device
        mag = magnitude_grid(spectrum, self.height, self.width, self.channels)
        weights = torch.full((self.width // 2 + 1,), 2.0)
        weights[0] = 1.0
        if self.width % 2 == 0:
            weights[-1] = 1.0
        var = (mag.pow(2) * weights).sum((1, 2)) / (self.height * self.width)
        gain = MACO_STD / var.mean().sqrt().clamp_min(1e-12)
        self.register_buffer("magnitude", (mag * gain).to(dev), persistent=False)
        self.latent_shape = (self.channels, self.height, self.width // 2 + 1)

    def _draw(self, seeds: Sequence[int], sd: float) -> torch.Tensor:
        """Uniform random phases (a natural-spectrum noise image); ``sd`` does not apply."""
        shape = (self.channels, self.height, self.width // 2 + 1)
        return torch.stack(
            [
                (torch.rand(shape, generator=_gen(s)) * 2 - 1) * (torch.pi / PHASE_SCALE)
                for s in seeds
            ]
        )

    def _spatial(self) -> torch.Tensor:
        phase = _hermitian_phase(self.separate * PHASE_SCALE, self.width)
        spectrum = torch.polar(self.magnitude.expand_as(phase), phase)  # type: ignore[operator]  # a buffer; Module.__getattr__ is typed Tensor | Module
        return torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")

    def _set_spatial_(self, x: torch.Tensor) -> None:
        phase = torch.angle(torch.fft.rfft2(x.float(), norm="ortho"))
        self.separate.copy_(phase / PHASE_SCALE)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Blur the image's latent and keep its phase: the magnitude stays the target's."""
        if sigma > 0:
            self._set_spatial_(gaussian_blur(self._spatial(), sigma))


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return g


__all__ = [
    "MacoParam",
    "Spectrum",
    "default_spectrum_path",
    "load_spectrum",
    "magnitude_grid",
    "magnitude_spectrum",
    "magnitude_spectrum_of_folder",
    "save_spectrum",
    "spectrum_for",
]
