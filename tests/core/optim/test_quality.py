"""The colour and range measures of ``quality`` on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from fvdesk.core.optim import quality as Q


def _grey(v: int = 128, size: int = 32) -> np.ndarray:
    return np.full((1, size, size, 3), v, np.uint8)


def _noise(seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, size, size, 3), dtype=np.uint8)


def _natural(seed: int = 0, size: int = 64) -> np.ndarray:
    """A photograph-like image: 1/f^2 power, channels correlated as in natural images (most of
    the variance in luminance, little in the opponent colours), mid-grey mean, no clipping."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    field = []
    for _ in range(3):
        spec = amp * np.exp(2j * np.pi * rng.random((size, size)))
        f = np.fft.ifft2(spec).real
        field.append((f - f.mean()) / f.std())
    lum, rg, yb = field
    r = lum + 0.25 * rg + 0.1 * yb
    g = lum - 0.25 * rg + 0.1 * yb
    b = lum - 0.3 * yb
    img = 0.5 + 0.12 * np.stack([r, g, b], -1)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)[None]


def _patches() -> np.ndarray:
    """Flat patches of pure colours: the garish render the measures exist to catch."""
    colours = [(0, 0, 255), (255, 0, 255), (255, 255, 255), (0, 0, 0)]
    img = np.zeros((32, 32, 3), np.uint8)
    for k, c in enumerate(colours):
        img[(k // 2) * 16 : (k // 2 + 1) * 16, (k % 2) * 16 : (k % 2 + 1) * 16] = c
    return img[None]


def test_flat_grey_has_no_clipping_colour_or_saturation():
    g = _grey()
    assert Q.clipped_share(g)[0] == 0.0
    assert Q.colourfulness(g)[0] == pytest.approx(0.0)
    assert Q.saturation(g)[0] == pytest.approx(0.0)


def test_black_and_white_are_all_clipped_but_not_colourful():
    both = np.concatenate([_grey(0), _grey(255)])
    np.testing.assert_array_equal(Q.clipped_share(both), [1.0, 1.0])
    np.testing.assert_allclose(Q.colourfulness(both), [0.0, 0.0], atol=1e-9)


def test_orderings_natural_below_noise_and_pure_patches():
    natural, noise, patches = _natural(), _noise(), _patches()
    c_nat, c_noise, c_patch = (Q.colourfulness(x)[0] for x in (natural, noise, patches))
    lo, hi = Q.NATURAL_COLOURFULNESS
    assert lo <= c_nat <= hi
    assert c_noise > hi and c_patch > hi
    assert Q.clipped_share(natural)[0] < 0.02
    assert Q.clipped_share(patches)[0] > 0.5
    assert Q.saturation(natural)[0] < min(Q.saturation(noise)[0], Q.saturation(patches)[0])


def test_float_images_are_measured_as_saved():
    x = _natural(seed=3)
    f = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(Q.clipped_share(f), Q.clipped_share(x))
    np.testing.assert_allclose(Q.colourfulness(f), Q.colourfulness(x), rtol=1e-9)
    np.testing.assert_allclose(Q.saturation(f), Q.saturation(x), rtol=1e-9)
    # a float value that rounds to 255 counts as clipped, as it will in the PNG
    almost = np.full((1, 4, 4, 3), 254.6 / 255.0)
    assert Q.clipped_share(almost)[0] == 1.0


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="RGB"):
        Q.colourfulness(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="images"):
        Q.clipped_share(np.zeros((8, 8), np.uint8))


# -- plausibility ---------------------------------------------------------------------------------
def test_pattern_similarity_is_the_centred_cosine():
    centre = np.array([1.0, 1.0, 1.0])
    tops = np.array([[3.0, 1.0, 1.0], [2.0, 1.0, 1.0]])  # mean departs from the centre along x
    assert Q.pattern_similarity(np.array([5.0, 1.0, 1.0]), tops, centre) == pytest.approx(1.0)
    assert Q.pattern_similarity(np.array([1.0, 4.0, 1.0]), tops, centre) == pytest.approx(0.0)
    assert Q.pattern_similarity(np.array([0.0, 1.0, 1.0]), tops, centre) == pytest.approx(-1.0)
    # an average image (no departure at all) is not similar to anything
    assert Q.pattern_similarity(centre, tops, centre) == 0.0


def test_photo_crops_are_canvas_sized_varied_and_reproducible():
    photos = [_natural(seed=1, size=96)[0], _natural(seed=2, size=80)[0]]
    a = Q.photo_crops(photos, 16, 24, per_photo=8, seed=5)
    assert a.shape == (16, 16, 24, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, Q.photo_crops(photos, 16, 24, per_photo=8, seed=5))
    assert len({c.tobytes() for c in a}) == 16  # no two crops alike
    with pytest.raises(ValueError, match="photograph"):
        Q.photo_crops([], 16, 16)


def test_plausibility_ranks_an_image_of_the_units_class_above_others(demo_model):
    """On the demo model's logits (one unit per pattern class), an unseen image of the unit's
    class resembles the unit's top examples more than an image of another class, and both more
    than flat grey or noise, which resemble an average image."""
    from fvdesk.core.patterns import CLASSES, generate

    x, y = generate(96, size=32, seed=0)
    crops = np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    logits = demo_model.graph.logits_name
    means = Q.channel_means(demo_model, logits, crops)
    vertical, horizontal = CLASSES.index("vertical stripes"), CLASSES.index("horizontal stripes")
    top = Q.top_examples(means, [vertical], k=6)[0]
    assert (y[top] == vertical).mean() >= 5 / 6  # the top examples are that class's images
    xt, yt = generate(16, size=32, seed=1)
    test = np.rint(xt.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    same, other = test[yt == vertical][:1], test[yt == horizontal][:1]
    grey = np.full_like(same, 128)
    renders = np.concatenate([same, other, grey, _noise(size=32)])
    p = Q.plausibility(demo_model, logits, [vertical] * 4, renders, means, k=6)
    assert p[0] > 0.5 and p[0] > p[1] + 0.3, p
    assert p[0] > max(p[2], p[3]) + 0.3, p


def test_layer_below_is_the_previous_block_of_the_same_kind(demo_model):
    assert Q.layer_below(demo_model, "/features/block4/relu/Relu") == "/features/block3/relu/Relu"
    assert Q.layer_below(demo_model, "/features/block2/relu/Relu") == "/features/block1/relu/Relu"
    first = min((lay for lay in demo_model.graph if lay.kind == "feature"), key=lambda x: x.index)
    assert Q.layer_below(demo_model, first.name) is None


def test_plausibility_below_uses_the_units_own_top_examples(demo_model):
    """One layer below the logits, with the top examples still chosen by the logit: an image of
    the unit's class is closer to them than another class's, grey and noise closer to nothing."""
    from fvdesk.core.patterns import CLASSES, generate

    x, y = generate(96, size=32, seed=0)
    crops = np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    logits = demo_model.graph.logits_name
    below = Q.layer_below(demo_model, logits)
    assert below is not None and below != logits
    checker = CLASSES.index("checkerboard")
    top = Q.top_examples(Q.channel_means(demo_model, logits, crops), [checker], k=6)
    means = Q.channel_means(demo_model, below, crops)
    xt, yt = generate(32, size=32, seed=1)
    test = np.rint(xt.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    same, other = test[yt == checker][:1], test[yt != checker][:1]
    renders = np.concatenate([same, other, np.full_like(same, 128), _noise(size=32)])
    p = Q.plausibility(demo_model, below, [checker] * 4, renders, means, tops=top * 4)
    assert p[0] > p[1] + 0.2 and p[0] > max(p[2], p[3]) + 0.2, p
    # without tops, the unit index would pick channel `checker` of the layer below instead
    q = Q.plausibility(demo_model, below, [checker] * 4, renders, means)
    assert not np.allclose(p, q)


def test_natural_ranges_hold_photographs_and_exclude_noise_and_patches():
    photos = np.concatenate([_natural(seed=s) for s in range(12)])
    crops = Q.photo_crops(list(photos), 32, 32, per_photo=4, seed=0)
    r = Q.natural_ranges(crops)
    assert set(r) == set(Q.IMAGE_MEASURES)
    for lo, mid, hi in r.values():
        assert lo <= mid <= hi
    unseen = Q.image_measures(_natural(seed=99, size=32))
    assert Q.in_range(float(unseen["slope"][0]), r["slope"])
    assert Q.in_range(float(unseen["clipped"][0]), r["clipped"])
    noise = Q.image_measures(_noise(size=32))
    assert not Q.in_range(float(noise["hf_share"][0]), r["hf_share"])
    assert not Q.in_range(float(noise["slope"][0]), r["slope"])
    patches = Q.image_measures(_patches())
    assert not Q.in_range(float(patches["colourfulness"][0]), r["colourfulness"])
    assert not Q.in_range(float(patches["clipped"][0]), r["clipped"])
    with pytest.raises(ValueError, match="finite"):
        Q.natural_ranges(_grey())
