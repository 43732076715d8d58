"""Transformation robustness: exact geometry, removable elements, seeded per-image randomness."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.settings import (
    ARTICLE_ANGLES,
    ARTICLE_SCALES,
    FVDESK_ANGLES,
    FVDESK_SCALES,
    TransformSettings,
)
from fvdesk.core.optim.transforms import RobustnessTransform

NONE = TransformSettings(pad=0, jitter=0, scales=None, angles=None, jitter2=0)


def params(b: int, *, j1=(0, 0), s=1.0, a=0.0, j2=(0, 0)) -> torch.Tensor:
    return torch.tensor([[j1[0], j1[1], s, a, j2[0], j2[1]]] * b, dtype=torch.float64)


def test_article_chain_and_fvdesk_defaults() -> None:
    s = TransformSettings.article()
    assert (s.pad, s.jitter, s.jitter2, s.crop, s.pad_mode, s.subpixel) == (
        16,
        16,
        8,
        True,
        "constant",
        False,
    )
    assert s.scales == ARTICLE_SCALES == (1.0, 0.975, 1.025, 0.95, 1.05)
    assert s.angles == ARTICLE_ANGLES == tuple(float(a) for a in range(-5, 6))
    # fvdesk's chain (benchmarks/bench_fidelity.py): the article's pad and jitters, zoomed out
    # 0.8-1.04, +-10 degrees, real-valued jitters, mirrored padding
    d = TransformSettings()
    assert (d.pad, d.jitter, d.jitter2, d.crop, d.pad_mode, d.subpixel) == (
        16,
        16,
        8,
        True,
        "reflect",
        True,
    )
    assert d.scales == FVDESK_SCALES and min(d.scales) == 0.8 and max(d.scales) == 1.04
    assert d.angles == FVDESK_ANGLES == tuple(float(a) for a in range(-10, 11, 2))


def test_settings_round_trip_through_json() -> None:
    s = TransformSettings(
        pad=4, jitter=3, scales=(1.0, 1.1), angles=None, jitter2=0, crop=False, pad_mode="reflect"
    )
    back = TransformSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert TransformSettings.from_dict({"pad": 2, "future_option": 1}).pad == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"pad": -1},
        {"jitter": 1.5},
        {"scales": [0, 1]},
        {"angles": [math.inf]},
        {"pad_mode": "wrap"},
    ],
)
def test_invalid_settings_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        TransformSettings.from_dict(bad)


def test_everything_removed_is_the_identity() -> None:
    x = torch.rand(2, 3, 12, 12)
    tf = RobustnessTransform(NONE, (12, 12), seeds=[0, 1])
    assert tf.identity and tf(x) is x
    assert RobustnessTransform(None, (12, 12), seeds=[0]).identity


def test_centre_parameters_reproduce_the_image_exactly() -> None:
    x = torch.rand(2, 3, 20, 20)
    tf = RobustnessTransform(TransformSettings(), (20, 20), seeds=[0, 1])
    assert torch.allclose(tf.apply(x, params(2)), x, atol=1e-5)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_integer_jitter_is_an_exact_shift_with_padding(mode: str) -> None:
    x = torch.rand(1, 3, 16, 16)
    s = TransformSettings(pad=4, pad_mode=mode)  # type: ignore[arg-type]
    tf = RobustnessTransform(s, (16, 16), seeds=[0])
    y = tf.apply(x, params(1, j1=(3, -2)))
    # output pixel (i, j) samples source (i - 2, j + 3)
    assert torch.allclose(y[..., 2:, :13], x[..., :14, 3:], atol=1e-5)
    border = y[..., :2, :]
    if mode == "constant":
        assert torch.allclose(border, torch.full_like(border, 0.5), atol=1e-5)
    else:  # mirror about the border: rows -1, -2 show rows 0, 1
        assert torch.allclose(y[..., 1, :13], x[..., 0, 3:], atol=1e-5)
        assert torch.allclose(y[..., 0, :13], x[..., 1, 3:], atol=1e-5)


def test_jitters_compose_and_padding_extends_beyond_its_width() -> None:
    x = torch.ones(1, 1, 8, 8)
    grey = TransformSettings(pad=1, pad_value=0.5, pad_mode="constant")
    tf = RobustnessTransform(grey, (8, 8), seeds=[0])
    y = tf.apply(x, params(1, j1=(-2, 0), j2=(-1, 0)))  # source column = j - 3
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.5, 0.5, 0.5, 1, 1, 1, 1, 1.0]), atol=1e-5)
    no_pad = RobustnessTransform(TransformSettings(pad=0), (8, 8), seeds=[0])
    y0 = no_pad.apply(x, params(1, j1=(-2, 0), j2=(-1, 0)))
    assert torch.allclose(y0[0, 0, 0], torch.tensor([0, 0, 0, 1, 1, 1, 1, 1.0]), atol=1e-5)


def test_rotation_and_scale_about_the_centre() -> None:
    yy, xx = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    x = torch.stack([xx, yy])[None] / 32.0  # the image stores its own coordinates
    s = TransformSettings(pad=0)
    tf = RobustnessTransform(s, (33, 33), seeds=[0])
    centre = x[0, :, 16, 16]
    y = tf.apply(x, params(1, s=1.05, a=5.0))
    assert torch.allclose(y[0, :, 16, 16], centre, atol=1e-5)  # the centre is fixed
    # a point 10 px right of the centre maps back to R(-5 deg) * 10 / 1.05
    src = x.new_tensor([math.cos(math.radians(5)), -math.sin(math.radians(5))]) * 10 / 1.05 + 16
    assert torch.allclose(y[0, :, 16, 26] * 32, src, atol=1e-3)


def test_draws_are_seeded_per_image_and_within_range() -> None:
    s = TransformSettings.article()
    a = RobustnessTransform(s, (32, 32), seeds=[1, 2, 3])
    b = RobustnessTransform(s, (32, 32), seeds=[3, 1])
    pa = torch.stack([a.draw() for _ in range(50)])
    pb = torch.stack([b.draw() for _ in range(50)])
    assert torch.equal(pa[:, 0], pb[:, 1]) and torch.equal(pa[:, 2], pb[:, 0])
    assert not torch.equal(pa[:, 0], pa[:, 1])
    j1, sc, an, j2 = pa[..., :2], pa[..., 2], pa[..., 3], pa[..., 4:]
    assert j1.min() >= -8 and j1.max() <= 8 and torch.equal(j1, j1.round())
    assert j2.min() >= -4 and j2.max() <= 4
    assert set(sc.flatten().tolist()) <= set(ARTICLE_SCALES)
    assert set(an.flatten().tolist()) <= set(ARTICLE_ANGLES)
    assert len(set(an.flatten().tolist())) > 5  # they really vary


def test_subpixel_jitters_are_real_valued_and_within_range() -> None:
    s = TransformSettings()
    assert s.subpixel
    tf = RobustnessTransform(s, (32, 32), seeds=[1, 2, 3])
    p = torch.stack([tf.draw() for _ in range(100)])
    j1, sc, an, j2 = p[..., :2], p[..., 2], p[..., 3], p[..., 4:]
    assert j1.min() >= -8 and j1.max() <= 8 and j2.min() >= -4 and j2.max() <= 4
    assert j1.abs().max() > 7 and j2.abs().max() > 3.5  # the whole range is used
    frac = (j1 - j1.round()).abs()
    assert (frac > 0.05).float().mean() > 0.8  # almost never on the pixel grid
    assert set(sc.flatten().tolist()) <= set(FVDESK_SCALES)
    assert set(an.flatten().tolist()) <= set(FVDESK_ANGLES)
    # a pure sub-pixel shift resamples between pixels: a one-pixel checkerboard loses its contrast
    x = torch.zeros(1, 1, 16, 16)
    x[..., ::2, ::2] = x[..., 1::2, 1::2] = 1.0
    half = RobustnessTransform(NONE, (16, 16), seeds=[0]).apply(x, params(1, j1=(0.5, 0.5)))
    inner = half[..., 2:-2, 2:-2]
    assert (inner - 0.5).abs().max() < 1e-5


def test_same_seed_same_transformed_images() -> None:
    x = torch.rand(2, 3, 24, 24)
    one = RobustnessTransform(TransformSettings(), (24, 24), seeds=[4, 5])
    two = RobustnessTransform(TransformSettings(), (24, 24), seeds=[4, 5])
    for _ in range(3):
        assert torch.equal(one(x), two(x))


def test_crop_false_keeps_the_padding_and_fit_resizes_or_crops() -> None:
    x = torch.rand(2, 3, 16, 16)
    keep = RobustnessTransform(TransformSettings(pad=4, crop=False), (16, 16), seeds=[0, 1])
    assert keep(x).shape == (2, 3, 24, 24)
    resize = RobustnessTransform(None, (32, 32), out=(16, 16), fit="resize", seeds=[0, 1])
    big = torch.rand(2, 3, 32, 32)
    down = resize(big)
    assert down.shape == (2, 3, 16, 16)
    # resizing by exactly 2 with bilinear sampling at the new pixel centres = 2x2 average
    assert torch.allclose(down, torch.nn.functional.avg_pool2d(big, 2), atol=1e-5)
    crop = RobustnessTransform(None, (32, 32), out=(16, 16), fit="crop", seeds=[0, 1])
    assert torch.allclose(crop(big), big[..., 8:24, 8:24], atol=1e-5)
    assert torch.allclose(crop.fit_only(big), big[..., 8:24, 8:24], atol=1e-5)


def test_gradient_flows_to_the_image() -> None:
    x = torch.rand(3, 3, 20, 20, requires_grad=True)
    tf = RobustnessTransform(TransformSettings(), (20, 20), seeds=[0, 1, 2])
    tf(x).sum().backward()
    assert x.grad is not None and (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_grid_equals_affine_grid() -> None:
    """The cheap broadcast grid is exactly what ``affine_grid`` would build (fit sizes too)."""
    for out in (None, (20, 24)):
        tf = RobustnessTransform(TransformSettings(), (31, 40), out=out, seeds=[0, 1, 2])
        p = tf.draw()
        ref = torch.nn.functional.affine_grid(
            tf.theta(p).float(), [3, 3, *tf.out], align_corners=False
        )
        assert torch.allclose(tf.grid(p, torch.device("cpu"), torch.float32), ref, atol=1e-6)
