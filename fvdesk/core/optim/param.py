"""Image parameterizations: what the optimizer actually changes, and how that becomes an image.

The article's central practical finding is that *how* an image is parameterized changes which
image gradient descent finds: optimizing raw pixels gives high-frequency noise ("the enemy"),
optimizing a Fourier spectrum scaled so every frequency has equal energy, with colours
decorrelated, gives natural-looking images.  ``ImageParam`` implements both, plus Lucid's shared
low-resolution components (interpolation) and grayscale models.

Pipeline (``ImageParam.forward``)::

    separate latent (per image: Fourier spectrum or pixels)  + shared low-res latents
        -> [Fourier: irfft2 of spectrum * 1/max(f, 1/size)^decay, / 4]
        -> [3 channels, decorrelate: @ C.T, C = colour sqrt-covariance / max column norm]
        -> sigmoid -> NCHW RGB (or 1-channel) in [0, 1]

The model's own preprocessing (range, mean/std, BGR, NHWC) is *not* here: the optimizer always
works in [0, 1] RGB and ``LoadedModel.prepare_input`` maps that to what the graph expects.

Randomness: every image has its own seed, so an image does not depend on which other images
share its batch (chunking or halving the batch after out-of-memory leaves results unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fvdesk.core.errors import ConfigError

ParamKind = Literal["fourier", "pixel"]

#: Square root of ImageNet's colour covariance (Lucid's ``color_correlation_svd_sqrt``).
IMAGENET_COLOR_SQRT: tuple[tuple[float, float, float], ...] = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)

#: Lucid's empirical factor dividing the inverse FFT (keeps the sigmoid out of saturation).
FOURIER_MAGIC = 4.0

#: Lucid's shared low-resolution components for interpolation: (keyframes, downscale factor).
INTERPOLATION_SHARED: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 4),
    (1, 8),
    (2, 8),
    (1, 16),
    (2, 16),
)


# -- colour ---------------------------------------------------------------------------------------
def normalized_color_matrix(matrix: Sequence[Sequence[float]] | None = None) -> torch.Tensor:
    """The 3x3 colour square root divided by its largest column norm (as Lucid does).

    Normalizing keeps the decorrelated latent on the same scale whatever dataset the matrix came
    from, so one learning rate works for all.
    """
    m = torch.tensor(IMAGENET_COLOR_SQRT if matrix is None else matrix, dtype=torch.float64)
    if m.shape != (3, 3) or not torch.isfinite(m).all():
        raise ConfigError(
            f"A colour matrix must be 3x3 finite numbers, got shape {tuple(m.shape)}."
        )
    norm = m.norm(dim=0).max()
    if norm <= 0:
        raise ConfigError("The colour matrix is all zeros, so it cannot decorrelate colours.")
    return (m / norm).float()


def color_matrix_from_images(
    images: np.ndarray, method: Literal["svd", "cholesky"] = "svd"
) -> list[list[float]]:
    """A colour square root ``M`` (``M @ M.T`` = colour covariance) from images in [0, 1].

    ``images``: (N, 3, H, W) or (N, H, W, 3), float in [0, 1] or uint8.  ``svd`` gives
    ``U sqrt(S)`` (Lucid's choice), ``cholesky`` the lower-triangular factor the article names;
    both decorrelate, they differ by a rotation.
    """
    a = np.asarray(images)
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    if a.ndim != 4:
        raise ConfigError(
            f"Expected a batch of images (N, 3, H, W) or (N, H, W, 3), got shape {a.shape}."
        )
    if a.shape[1] == 3 and a.shape[-1] != 3:
        pixels = a.transpose(0, 2, 3, 1).reshape(-1, 3)
    elif a.shape[-1] == 3:
        pixels = a.reshape(-1, 3)
    else:
        raise ConfigError(f"Colour statistics need 3-channel images, got shape {a.shape}.")
    pixels = pixels.astype(np.float64)
    if len(pixels) < 2:
        raise ConfigError("Colour statistics need at least two pixels.")
    cov = np.cov(pixels, rowvar=False)
    cov = cov + np.eye(3) * 1e-8  # grey-only folders have a singular covariance
    if method == "cholesky":
        root = np.linalg.cholesky(cov)
    elif method == "svd":
        u, s, _ = np.linalg.svd(cov)
        root = u * np.sqrt(s)[None, :]
    else:
        raise ConfigError(f"Unknown colour decomposition {method!r}; use 'svd' or 'cholesky'.")
    return root.tolist()


def color_matrix_from_folder(
    folder: str | Path,
    method: Literal["svd", "cholesky"] = "svd",
    *,
    max_images: int = 512,
    size: int = 64,
) -> list[list[float]]:
    """Estimate the colour matrix from a folder of the user's images (their training-like data).

    The folder is read as the dataset-examples pass reads it (``fvdesk.core.imagefolder``:
    recursive, EXIF, 16-bit, palette and transparent images decoded as shown, bad files
    skipped); images are shrunk to ``size`` px (colour statistics do not need resolution); at
    most ``max_images`` files, in path order, are used.
    """
    from fvdesk.core.imagefolder import ImageSkipped, load_image, scan_folder

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder, so no colour statistics can be read from it.")
    arrays = []
    for f in scan_folder(root).images[:max_images]:
        try:
            im, _ = load_image(root / f.rel, draft=(size, size))
        except (ImageSkipped, OSError):
            continue
        im.thumbnail((size, size))
        arrays.append(np.asarray(im, dtype=np.float64).reshape(-1, 3) / 255.0)
    if not arrays:
        raise ConfigError(f"{root} holds no readable images.")
    pixels = np.concatenate(arrays)[None, :, None, :]  # (1, P, 1, 3)
    return color_matrix_from_images(pixels, method)


# -- Fourier basis --------------------------------------------------------------------------------
def rfft_frequencies(h: int, w: int) -> torch.Tensor:
    """|f| in cycles per pixel on the ``rfft2`` grid, shape (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay: float = 1.0, period: float = 0.0) -> torch.Tensor:
    """``1 / max(f, f_min) ** decay``: equalizes the energy of all frequencies.

    Natural images have a ~1/f amplitude spectrum, so scaling unit-variance coefficients this way
    makes a random spectrum look like a natural image and makes gradient steps equally easy at
    every frequency (the article's preconditioner).  With an orthonormal inverse FFT no extra
    ``sqrt(h*w)`` factor is needed.  ``f_min`` is ``1 / max(h, w)`` (Lucid's), or ``1 / period``
    when ``period`` (pixels) is shorter: structures larger than ``period`` then gain no more
    than it.  With a steep ``decay`` the largest structures otherwise take the largest steps,
    the more so the larger the canvas, and push whole patches past the sigmoid's range (flat,
    clipped colour).
    """
    f = rfft_frequencies(h, w)
    f_min = 1.0 / max(h, w)
    if period > 0:
        f_min = max(f_min, 1.0 / period)
    return (1.0 / torch.clamp(f, min=f_min) ** decay).float()


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return g


class ImageParam(nn.Module):
    """A batch of images as learnable parameters; ``forward()`` returns NCHW in [0, 1].

    ``separate`` holds one latent per image.  ``shared`` is a list of (keyframes, factor):
    low-resolution latents (H/factor x W/factor, ``keyframes`` of them interpolated linearly along
    the batch) added to every image's latent, so neighbouring images of an interpolation line up.
    """

    def __init__(
        self,
        batch: int,
        height: int,
        width: int | None = None,
        *,
        channels: int = 3,
        kind: ParamKind = "fourier",
        decorrelate: bool = True,
        decay: float = 1.0,
        period: float = 0.0,
        chroma: float = 1.0,
        color_matrix: Sequence[Sequence[float]] | None = None,
        sd: float = 0.01,
        seeds: Sequence[int] | None = None,
        shared: Iterable[Sequence[int]] = (),
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        width = width or height
        if batch < 1 or height < 2 or width < 2:
            raise ConfigError(
                f"An image batch needs batch >= 1 and size >= 2, got {batch}x{height}x{width}."
            )
        if kind not in ("fourier", "pixel"):
            raise ConfigError(f"Unknown parameterization {kind!r}; use 'fourier' or 'pixel'.")
        if channels not in (1, 3):
            raise ConfigError(f"Images have 1 or 3 channels, got {channels}.")
        self.batch, self.height, self.width, self.channels = batch, height, width, channels
        self.kind: ParamKind = kind
        self.decorrelate = bool(decorrelate and channels == 3)
        self.seeds = list(seeds) if seeds is not None else list(range(batch))
        if len(self.seeds) != batch:
            raise ConfigError(f"Got {len(self.seeds)} seeds for a batch of {batch} images.")
        device = torch.device(device)
        if kind == "fourier":
            # Lucid's division by 4 is folded into the spectrum scale (one pass less per step)
            scale = spectrum_scale(height, width, decay, period) / FOURIER_MAGIC
            self.register_buffer("scale", scale.to(device), persistent=False)
            self.latent_shape: tuple[int, ...] = (channels, height, width // 2 + 1, 2)
        else:
            self.scale = None
            self.latent_shape = (channels, height, width)
        self.separate = nn.Parameter(self._draw(self.seeds, sd).to(device))
        self.shared = nn.ParameterList()
        g = _generator(self.seeds[0] ^ 0x5EED)
        for keyframes, factor in shared:
            k, f = int(keyframes), int(factor)
            h, w = max(1, math.ceil(height / f)), max(1, math.ceil(width / f))
            t = torch.randn((k, channels, h, w), generator=g) * sd
            self.shared.append(nn.Parameter(t.to(device)))
        cm = normalized_color_matrix(color_matrix) if self.decorrelate else torch.eye(channels)
        if self.decorrelate and chroma != 1.0:
            # the columns after the first are the weaker colour axes (opponent colours for an
            # SVD root): Adam moves every latent coordinate alike, however little the network
            # asks of it, so colour grows as fast as luminance; ``chroma`` slows it
            cm = cm * torch.tensor([1.0, float(chroma), float(chroma)])[None, :]
        self.register_buffer("color", cm.to(device), persistent=False)

    def _draw(self, seeds: Sequence[int], sd: float) -> torch.Tensor:
        """One latent per seed, drawn on the CPU so a seed gives the same start on every device."""
        return torch.stack(
            [torch.randn(self.latent_shape, generator=_generator(s)) * sd for s in seeds]
        )

    @torch.no_grad()
    def reinit_(self, indices: Sequence[int], sd: float, salt: int = 1) -> None:
        """Restart some images from a new (e.g. stronger) random latent, seeded per image."""
        idx = list(indices)
        if idx:
            fresh = self._draw([self.seeds[i] ^ (salt * 0x9E3779B1) for i in idx], sd)
            self.separate[idx] = fresh.to(self.separate.device)

    def latent(self) -> torch.Tensor:
        """The decorrelated-space image before colour mixing and sigmoid, (B, C, H, W)."""
        x = self._spatial()
        shared = self.shared_latent()
        return x if shared is None else x + shared

    def shared_latent(self) -> torch.Tensor | None:
        """The shared low-resolution part of ``latent()`` (``None`` without shared components)."""
        out = None
        for t in self.shared:
            # (k, C, h, w) -> (1, C, k, h, w) -> trilinear to (1, C, B, H, W): the k keyframes
            # sit at the first and last image (align_corners) and blend linearly in between
            v = t.permute(1, 0, 2, 3).unsqueeze(0)
            v = F.interpolate(
                v, size=(self.batch, self.height, self.width), mode="trilinear", align_corners=True
            )
            v = v[0].permute(1, 0, 2, 3)
            out = v if out is None else out + v
        return out

    def _spatial(self) -> torch.Tensor:
        """The per-image (separate) part of the latent as images (B, C, H, W)."""
        if self.kind == "fourier":
            spectrum = torch.view_as_complex(self.separate) * self.scale  # type: ignore[operator]  # the Fourier kind always registers scale
            return torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")
        return self.separate

    def _set_spatial_(self, x: torch.Tensor) -> None:
        """Inverse of ``_spatial``: make the separate latent produce ``x`` (B, C, H, W)."""
        if self.kind == "fourier":
            spectrum = torch.fft.rfft2(x.float(), norm="ortho") / self.scale
            self.separate.copy_(torch.view_as_real(spectrum))
        else:
            self.separate.copy_(x)

    @torch.no_grad()
    def set_image_(self, x01: torch.Tensor) -> None:
        """Set the separate latent so that ``forward()`` gives ``x01`` (NCHW in [0, 1]).

        Inverts the sigmoid (values clamped a hair inside (0, 1)) and the colour mixing; shared
        components are kept and only the per-image part changes.  How image filters (bilateral)
        and octaves (upsampling) write their result back into any parameterization.
        """
        eps = 1e-4
        z = torch.logit(x01.to(self.separate.device).float().clamp(eps, 1 - eps))
        if self.decorrelate:
            inv = torch.linalg.inv(self.color.double()).float()
            z = torch.matmul(inv, z.flatten(2)).view(z.shape)
        shared = self.shared_latent()
        self._set_spatial_(z if shared is None else z - shared)

    def forward(self) -> torch.Tensor:
        x = self.latent()
        if self.decorrelate:  # x @ C.T per pixel, as one broadcast matmul over (B, 3, H*W)
            x = torch.matmul(self.color, x.flatten(2)).view(x.shape)  # type: ignore[arg-type]  # a buffer; Module.__getattr__ is typed Tensor | Module
        return torch.sigmoid(x)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Gaussian-blur the latent in place (the 'blur every k steps' frequency penalty).

        Colour mixing is linear and per pixel, so blurring the latent is blurring the image before
        the sigmoid.  Fourier latents are multiplied by the Gaussian's transfer function.
        """
        if sigma <= 0:
            return
        if self.kind == "fourier":
            f2 = rfft_frequencies(self.height, self.width).to(self.separate.device) ** 2
            gain = torch.exp(-2.0 * math.pi**2 * sigma**2 * f2).float()
            self.separate.mul_(gain[None, None, :, :, None])
        else:
            self.separate.copy_(gaussian_blur(self.separate, sigma))
        for t in self.shared:
            t.copy_(gaussian_blur(t, sigma))

    @torch.no_grad()
    def to_uint8(self) -> np.ndarray:
        """Current images as uint8 (B, H, W, C) on the host (previews and results)."""
        return images_uint8(self.forward())


def images_uint8(x01: torch.Tensor) -> np.ndarray:
    """NCHW images in [0, 1] as uint8 (B, H, W, C) on the host, rounded to nearest."""
    x = x01.detach().float().clamp(0, 1)
    return (x * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an NCHW tensor with reflect padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    # reflect cannot pad by more than size - 1 (tiny low-res latents): replicate there
    mode = "reflect" if radius < min(x.shape[2], x.shape[3]) else "replicate"
    y = F.pad(x, (radius, radius, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
