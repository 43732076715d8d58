"""Image-quality measures for rendered images: how robust, how noisy, how natural.

The article judges a visualization by whether it shows what the unit responds to rather than a
"neural network optical illusion": pixel-exact high-frequency patterns.  These measures put
numbers on that, on the final image as saved (uint8):

* ``objective_values``: the objective on the untransformed image (the "clean" objective);
* ``robust_values``: the objective averaged over fixed random jitter / scale / rotation versions
  of the image with reflection padding (``robustness_draws``); an image whose response rests on
  pixel-exact detail loses much of it, so ``robust / clean`` measures how much is real structure;
* ``high_frequency_share``: the share of (non-DC) spectral power of the grayscale image, under a
  Hann window (no edge leakage), above 0.25 cycles/px (half the Nyquist frequency);
* ``spectral_slope``: the slope of log radial power against log frequency; natural photographs
  are near -2 (steeper = smoother), white noise is 0;
* ``dead_mask``: images whose objective has exactly zero gradient (nothing to show);
* ``clipped_share``: the share of channel values at 0 or 255, where the image has run out of
  range (flat patches of pure colour, posterized gradients that the eye sees at once);
* ``colourfulness``: Hasler and Suesstrunk's (2003) measure on the opponent axes red-green and
  yellow-blue; natural photographs mostly lie between about 15 and 110 (``NATURAL_COLOURFULNESS``),
  garish renders far above;
* ``saturation``: the mean HSV saturation, a second view of the same excess;
* ``plausibility``: how much the render's activation pattern at the unit's layer resembles that
  of the unit's top examples among natural photographs (``photo_crops``, ``top_examples``): the
  idea of Fel et al.'s (2023) plausibility score, for one unit instead of one class; at
  ``layer_below`` too (the unit's top examples, compared where the layer's inputs are made), since
  a render can match the unit's layer through features its inputs never show together;
* ``natural_ranges`` / ``in_range``: the spread of every image measure over the photo crops, the
  range a render should fall in.

The benchmark ``benchmarks/bench_fidelity.py`` and the engine's tests share these definitions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim.objectives import Objective

#: Luma weights (ITU-R BT.601) used to turn RGB into grayscale.
LUMA = (0.299, 0.587, 0.114)


# -- spectra --------------------------------------------------------------------------------------
def grayscale(images: np.ndarray) -> np.ndarray:
    """(B, H, W[, C]) uint8 or float in [0, 1] -> (B, H, W) float64 in [0, 1]."""
    x = np.asarray(images)
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    if x.ndim == 4:
        c = x.shape[-1]
        x = x @ np.asarray(LUMA) if c == 3 else x.mean(-1)
    if x.ndim != 3:
        raise ValueError(f"expected images (B, H, W[, C]), got shape {np.shape(images)}")
    return x


def power_spectrum(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(power (B, H, W), radial frequency (H, W) in cycles/px) of the windowed grayscale images.

    The mean is removed and a 2-D Hann window applied first, so the image border (a jump for a
    periodic transform) adds no spurious high frequencies.
    """
    g = grayscale(images)
    h, w = g.shape[1:]
    g = g - g.mean((1, 2), keepdims=True)
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(g * window)) ** 2
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    return power, f


def high_frequency_share(images: np.ndarray, cut: float = 0.25) -> np.ndarray:
    """Per image, the share of non-DC power at radial frequency > ``cut`` cycles/px."""
    power, f = power_spectrum(images)
    total = power[:, f > 0].sum(1)
    high = power[:, f > cut].sum(1)
    return np.where(total > 0, high / np.maximum(total, 1e-300), 0.0)


def spectral_slope(images: np.ndarray, bins: int = 16) -> np.ndarray:
    """Per image, the least-squares slope of log10 radial power vs log10 frequency.

    Power is averaged in ``bins`` log-spaced rings from 2 / min(H, W) to 0.5 cycles/px (the
    lowest frequencies are dominated by the window, the corners beyond 0.5 are not full rings).
    A flat (all-grey) image gets NaN.
    """
    power, f = power_spectrum(images)
    h, w = f.shape
    edges = np.geomspace(2.0 / min(h, w), 0.5, bins + 1)
    which = np.digitize(f, edges) - 1  # ring index, -1 / bins outside
    out = np.full(power.shape[0], np.nan)
    for i, p in enumerate(power):
        xs, ys = [], []
        for k in range(bins):
            ring = which == k
            if ring.any():
                mean = p[ring].mean()
                if mean > 0:
                    xs.append(np.log10(f[ring].mean()))
                    ys.append(np.log10(mean))
        if len(xs) >= 3:
            out[i] = np.polyfit(xs, ys, 1)[0]
    return out


# -- colour and range ----------------------------------------------------------------------------
#: The range of colourfulness of natural photographs: Hasler and Suesstrunk rate 15 "slightly",
#: 33 "moderately", 59 "quite", 82 "highly" and 109 "extremely colourful"; above that is rare in
#: photographs.
NATURAL_COLOURFULNESS = (15.0, 110.0)


def _rgb255(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8, or float in [0, 1] -> float64 in [0, 255]."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images (B, H, W, 3), got shape {x.shape}")
    return x.astype(np.float64) if x.dtype == np.uint8 else x.astype(np.float64) * 255.0


def clipped_share(images: np.ndarray) -> np.ndarray:
    """Per image, the share of channel values at the ends of the range (0 or 255 once saved).

    Counted on the saved 8-bit values, so a float image is first quantized the way PNGs are.
    """
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"expected images (B, H, W, C), got shape {x.shape}")
    q = x if x.dtype == np.uint8 else np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255)
    return ((q == 0) | (q == 255)).reshape(len(q), -1).mean(1)


def colourfulness(images: np.ndarray) -> np.ndarray:
    """Per image, Hasler-Suesstrunk colourfulness: the spread plus 0.3 x the mean distance from
    grey on the opponent axes rg = R - G and yb = (R + G) / 2 - B (0..255 scale)."""
    x = _rgb255(images)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = (r - g).reshape(len(x), -1)
    yb = (0.5 * (r + g) - b).reshape(len(x), -1)
    spread = np.sqrt(rg.std(1) ** 2 + yb.std(1) ** 2)
    mean = np.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return spread + 0.3 * mean


def saturation(images: np.ndarray) -> np.ndarray:
    """Per image, the mean HSV saturation (max - min) / max, 0 for black pixels."""
    x = _rgb255(images)
    hi, lo = x.max(-1), x.min(-1)
    s = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-12), 0.0)
    return s.reshape(len(x), -1).mean(1)


# -- objective values -----------------------------------------------------------------------------
def robustness_draws(
    n: int = 32,
    *,
    jitter: float = 8.0,
    scale: tuple[float, float] = (0.9, 1.1),
    angle: float = 5.0,
    seed: int = 20171107,
) -> np.ndarray:
    """``n`` fixed random transforms, (n, 4): shift x, shift y (px), scale, angle (degrees).

    Drawn uniformly from +-``jitter`` px, ``scale`` and +-``angle`` degrees with a fixed seed, so
    every image of every method is scored under the same transforms.
    """
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.uniform(-jitter, jitter, n),
            rng.uniform(-jitter, jitter, n),
            rng.uniform(scale[0], scale[1], n),
            rng.uniform(-angle, angle, n),
        ],
        1,
    )


def warp(x: torch.Tensor, draw: np.ndarray) -> torch.Tensor:
    """Shift, scale and rotate a batch (B, C, H, W) about its centre, reflecting at the border."""
    b, _, h, w = x.shape
    dx, dy, s, a = (float(v) for v in draw)
    cos, sin = math.cos(math.radians(a)) / s, math.sin(math.radians(a)) / s
    # output pixel q (centred) samples the input at R(-a) q / s - d, in normalized coordinates
    theta = torch.tensor(
        [[cos, sin * h / w, -2.0 * dx / w], [-sin * w / h, cos, -2.0 * dy / h]],
        dtype=x.dtype,
        device=x.device,
    )
    grid = F.affine_grid(theta.expand(b, 2, 3), [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, C) -> float NCHW in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float() / 255.0


def _values(model: LoadedModel, objective: Objective, x: torch.Tensor) -> torch.Tensor:
    ext = model.extractor(list(objective.layers))
    return objective(ext(model.prepare_input(x)))


@torch.no_grad()
def objective_values(model: LoadedModel, objective: Objective, images: np.ndarray) -> np.ndarray:
    """Per image, the objective on the untransformed image (the clean objective)."""
    x = to_tensor(images, model.device)
    return _values(model, objective, x).float().cpu().numpy().astype(np.float64)


@torch.no_grad()
def robust_values(
    model: LoadedModel,
    objective: Objective,
    images: np.ndarray,
    draws: np.ndarray | None = None,
) -> np.ndarray:
    """Per image, the objective averaged over the transforms ``draws`` (default: 32 fixed ones)."""
    draws = robustness_draws() if draws is None else draws
    x = to_tensor(images, model.device)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for d in draws:
        total += _values(model, objective, warp(x, d)).double().cpu()
    return (total / len(draws)).numpy()


def dead_mask(model: LoadedModel, objective: Objective, images: np.ndarray) -> np.ndarray:
    """Per image, True when the objective's gradient with respect to the image is exactly zero."""
    x = to_tensor(images, model.device).requires_grad_(True)
    (g,) = torch.autograd.grad(_values(model, objective, x).sum(), x)
    return (g.flatten(1).abs().amax(1) == 0).cpu().numpy()


# -- plausibility against natural photographs ----------------------------------------------------
def photo_crops(
    photos: list[np.ndarray],
    height: int,
    width: int,
    per_photo: int = 32,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Random crops of ``photos`` (H, W, 3 uint8) resized to ``height x width``: uint8 (N, h, w, 3).

    Per photograph, ``per_photo`` crops of the canvas's aspect ratio, their short side drawn
    log-uniformly from 1/8 to all of the photograph's, half of them mirrored: a handful of
    photographs becomes a dataset with objects at many scales, as a unit's top examples need.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for photo in photos:
        im = Image.fromarray(np.asarray(photo, np.uint8)).convert("RGB")
        pw, ph = im.size
        fit = min(pw / width, ph / height)  # largest crop of the canvas's aspect ratio, in canvases
        for _ in range(per_photo):
            k = fit * math.exp(rng.uniform(math.log(1 / 8), 0.0))
            cw, ch = max(1, round(width * k)), max(1, round(height * k))
            x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
            c = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((width, height), Image.Resampling.BOX)
            a = np.asarray(c, np.uint8)
            out.append(a[:, ::-1] if rng.random() < 0.5 else a)
    if not out:
        raise ValueError("photo_crops needs at least one photograph")
    return np.stack(out)


@torch.no_grad()
def channel_means(
    model: LoadedModel, layer: str, images: np.ndarray, batch: int = 32
) -> np.ndarray:
    """(N, C): each image's activations at ``layer`` averaged over positions (its pattern)."""
    ext = model.extractor([layer])
    rows = []
    for i in range(0, len(images), batch):
        x = to_tensor(images[i : i + batch], model.device)
        a = ext(model.prepare_input(x))[layer].float()
        rows.append(a.flatten(2).mean(2) if a.ndim > 2 else a)
    return torch.cat(rows).double().cpu().numpy()


def top_examples(crop_means: np.ndarray, units: list[int], k: int = 4) -> list[np.ndarray]:
    """Per unit, the indices of the ``k`` crops with the highest channel mean, best first
    (``crop_means``: ``channel_means`` of the crops)."""
    return [np.argsort(-crop_means[:, u], kind="stable")[:k] for u in units]


def pattern_similarity(render: np.ndarray, tops: np.ndarray, centre: np.ndarray) -> float:
    """Cosine similarity of ``render`` (C,) and the mean of ``tops`` (k, C), both taken relative
    to ``centre`` (C,), the photographs' mean pattern.

    Centring removes what every image shares (post-ReLU activations are all positive, so raw
    patterns are all alike): +1 when the render departs from an average photograph the way the
    unit's top photographs do, 0 when unrelated, negative when opposite.
    """
    a = np.asarray(render, np.float64) - centre
    b = np.asarray(tops, np.float64).mean(0) - centre
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def plausibility(
    model: LoadedModel,
    layer: str,
    units: list[int],
    renders: np.ndarray,
    crop_means: np.ndarray,
    k: int = 4,
    *,
    tops: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Per render ``i`` (of unit ``units[i]``), ``pattern_similarity`` of its pattern at ``layer``
    to that of the unit's top ``k`` photo crops, relative to the mean crop (``crop_means``:
    ``channel_means`` of the crops at ``layer``).

    Unlike the objective, which one channel decides, this compares all channels of the layer: a
    render that drives its unit with colours or textures no photograph has scores low even when
    its objective is high.  ``tops`` (per render, crop indices) chooses the top examples
    elsewhere: at ``layer_below`` they are still the unit's, chosen at the unit's layer.
    """
    top = top_examples(crop_means, units, k) if tops is None else tops
    centre = crop_means.mean(0)
    mine = channel_means(model, layer, renders)
    return np.asarray(
        [pattern_similarity(mine[i], crop_means[top[i]], centre) for i in range(len(units))]
    )


def layer_below(model: LoadedModel, layer: str) -> str | None:
    """The nearest earlier feature map with the same op type as ``layer`` (the previous block's
    output for a ReLU or a HardSwish's Mul), else the nearest earlier feature map; ``None`` at
    the first one.  Where the layer's inputs are made, the unit's top photographs and a render
    should look alike too."""
    here = model.graph[layer]
    earlier = [lay for lay in model.graph if lay.kind == "feature" and lay.index < here.index]
    same = [lay for lay in earlier if lay.op == here.op]
    pick = same or earlier
    return max(pick, key=lambda lay: lay.index).name if pick else None


# -- the photographs' range ------------------------------------------------------------------------
#: The image measures whose natural range ``natural_ranges`` gives.
IMAGE_MEASURES = ("clipped", "colourfulness", "saturation", "hf_share", "slope")


def image_measures(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image, every measure of ``IMAGE_MEASURES`` (the ones that need no model)."""
    return {
        "clipped": clipped_share(images),
        "colourfulness": colourfulness(images),
        "saturation": saturation(images),
        "hf_share": high_frequency_share(images),
        "slope": spectral_slope(images),
    }


def natural_ranges(
    photos: np.ndarray, low: float = 5.0, high: float = 95.0
) -> dict[str, tuple[float, float, float]]:
    """Per measure, the (``low``-th percentile, median, ``high``-th percentile) over natural
    photographs (e.g. ``photo_crops``): a render outside it looks unlike a photograph on that
    measure.  Flat crops (NaN slope) are left out."""
    out = {}
    for k, v in image_measures(photos).items():
        v = v[np.isfinite(v)]
        if not len(v):
            raise ValueError(f"natural_ranges: no photograph gives a finite {k}")
        lo, mid, hi = np.percentile(v, [low, 50.0, high])
        out[k] = (float(lo), float(mid), float(hi))
    return out


def in_range(value: float, bounds: tuple[float, float, float]) -> bool:
    """Whether ``value`` lies between the photographs' low and high percentiles."""
    return bool(bounds[0] <= value <= bounds[2])
