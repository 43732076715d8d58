"""The engine judged on the embedded demo model, whose right answers are known.

Each class of the demo model has one visual cue (stripe orientation, checkerboard, dots, rings,
colour blobs), so a render that maximizes a class must be recognized as that class and a stripe
class must put its spectral energy in that orientation.  These tests also check the article's
central claim (decorrelated Fourier parameterization -> far less high-frequency energy than
pixels) with numbers, the pruned extractor, channel renders and the diversity term.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fvdesk.core.jobs.job import UnitJob
from fvdesk.core.jobs.run import render_units
from fvdesk.core.model.loader import load_model
from fvdesk.core.optim import objectives as O
from fvdesk.core.optim import quality as Q
from fvdesk.core.optim.render import render
from fvdesk.core.optim.settings import RenderSettings, TransformSettings
from fvdesk.core.patterns import CLASSES
from tests.core.optim.test_render import drive

SIZE = 64  # the demo model's training size (it accepts any size)
BLOCK3 = "/features/block3/relu/Relu"
# Stripe classes: direction of intensity variation (degrees, x right, y down) = spectral peak.
STRIPE_ANGLES = {0: 90, 1: 0, 2: 45, 3: 135}


@pytest.fixture(scope="module")
def demo(demo_model_path):
    return load_model(demo_model_path)


@pytest.fixture(scope="module")
def class_renders(demo):
    """One batch of 8 images, image k maximizing the logit of class k (default settings)."""
    logits = demo.graph.logits_name
    objective = sum(O.logit(logits, k, batch=k) for k in range(len(CLASSES)))
    _, res = drive(render(demo, objective, RenderSettings(steps=48, size=SIZE, batch=8)))
    return res


def probabilities(model, images: np.ndarray) -> np.ndarray:
    x = torch.tensor(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return torch.softmax(model.forward(x), 1).numpy()


def orientation_shares(images: np.ndarray, half_width: float = 15.0) -> dict[int, np.ndarray]:
    """Per image, the share of non-DC spectral power within +-half_width deg of 0/45/90/135."""
    x = images.astype(np.float64).mean(-1) / 255.0
    x = x - x.mean((1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(x)) ** 2
    h, w = x.shape[1:]
    fy = np.broadcast_to(np.fft.fftfreq(h)[:, None], (h, w))
    fx = np.broadcast_to(np.fft.fftfreq(w)[None, :], (h, w))
    angle = np.mod(np.degrees(np.arctan2(fy, fx)), 180.0)
    valid = (fx**2 + fy**2) > 0
    out = {}
    for target in (0, 45, 90, 135):
        near = (np.abs((angle - target + 90.0) % 180.0 - 90.0) <= half_width) & valid
        out[target] = power[:, near].sum(1) / power[:, valid].sum(1)
    return out


def high_frequency_share(images: np.ndarray, cut: float = 0.25) -> np.ndarray:
    """Per image, the share of non-DC spectral power above ``cut`` cycles/pixel (all channels)."""
    x = images.astype(np.float64) / 255.0
    x = x - x.mean((1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2).sum(-1)
    h, w = power.shape[1:]
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    return power[:, f > cut].sum(1) / power.sum((1, 2))


def test_every_class_render_is_recognized(demo, class_renders) -> None:
    p = probabilities(demo, class_renders.images)
    for k, name in enumerate(CLASSES):
        assert p[k, k] >= 0.9, f"{name}: p={p[k, k]:.3f} ({np.round(p[k], 3)})"
    assert class_renders.dead == []
    assert (class_renders.values > 5).all()  # logits, on the untransformed final images


def test_stripe_renders_have_their_energy_in_the_stripe_orientation(class_renders) -> None:
    shares = orientation_shares(class_renders.images)
    for k, expected in STRIPE_ANGLES.items():
        own = shares[expected][k]
        others = {a: round(float(shares[a][k]), 3) for a in shares if a != expected}
        assert own > 0.3, f"{CLASSES[k]}: {own:.3f} of the power near {expected} deg ({others})"
        assert all(own > 2.5 * v for v in others.values()), f"{CLASSES[k]}: {own:.3f} vs {others}"


def test_decorrelated_fourier_has_far_less_high_frequency_energy_than_pixels(demo) -> None:
    """The article's central claim, with the other regularizers off so only the basis differs.

    Measured (seed 0, 64 steps, 64 px, four class logits): Fourier ~0.31-0.37 of the power above
    0.25 cycles/px, pixels ~0.61-0.69 (white noise would be 0.80).
    """
    logits = demo.graph.logits_name
    objective = sum(O.logit(logits, k, batch=k) for k in range(4))
    common = dict(steps=64, size=SIZE, batch=4, seed=0, transforms=None)
    _, fourier = drive(
        render(demo, objective, RenderSettings(**common, param="fourier", decorrelate=True))
    )
    _, pixel = drive(
        render(demo, objective, RenderSettings(**common, param="pixel", decorrelate=False))
    )
    hf_f = high_frequency_share(fourier.images)
    hf_p = high_frequency_share(pixel.images)
    assert (hf_f < hf_p).all(), (hf_f, hf_p)
    assert hf_f.mean() < 0.45, hf_f
    assert hf_p.mean() > 0.55, hf_p
    assert hf_f.mean() < 0.65 * hf_p.mean(), (hf_f, hf_p)
    # both renders did optimize: the comparison is between two working images, not a failed one
    assert (fourier.values > 5).all() and (pixel.values > 5).all()


def test_pruned_extractor_matches_the_full_graph_and_stops_at_the_target(demo) -> None:
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad(), demo.capture([BLOCK3]) as store:
        demo.forward(x)
        pruned = demo.extractor([BLOCK3])(demo.prepare_input(x))[BLOCK3]
    assert torch.allclose(pruned, store[BLOCK3], atol=1e-6)
    targets = [str(n.target) for n in demo.extractor([BLOCK3]).graph.nodes if n.op == "call_module"]
    assert any("block3" in t for t in targets)
    assert not any(
        "block4" in t or "classifier" in t or "pool/GlobalAveragePool" in t for t in targets
    )


def test_channel_render_drives_its_channel_far_above_random_images(demo) -> None:
    units = [3, 10, 20, 40]
    _, res = drive(
        render(demo, O.channel(BLOCK3, units), RenderSettings(steps=48, size=SIZE, batch=4))
    )
    noise = torch.rand(32, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        random_acts = demo.activations(noise, [BLOCK3])[BLOCK3].mean((2, 3))[:, units]
    best_random = random_acts.max(0).values.numpy()
    assert (res.values > 5 * best_random).all(), (res.values, best_random)
    # and image k really is about unit k: its own channel beats the other rendered channels
    x = torch.tensor(res.images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        acts = demo.activations(x, [BLOCK3])[BLOCK3].mean((2, 3))[:, units]
    assert (acts.argmax(0) == torch.arange(4)).all(), acts


def test_diversity_makes_facets_less_alike_but_still_about_the_unit(demo) -> None:
    def gram_cosine(results) -> float:
        x = torch.tensor(np.stack([r.image for r in results])).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            a = demo.activations(x, [BLOCK3])[BLOCK3]
        n = len(results)
        return float(-O.diversity(BLOCK3)({BLOCK3: a}).mean() * n / (n - 1))  # mean pairwise cosine

    # 96 steps: with the current default settings 48 steps leave the facets close (mean
    # cosine 0.91 against 0.99 without the term, short of the margin); at 96 it is 0.67 against
    # 0.99, every facet still above half the plain value (measured 7 Dec 2026)
    s = RenderSettings(steps=96, size=SIZE, batch=4)
    _, plain = drive(render_units(demo, UnitJob(BLOCK3, [10], facets=4, diversity_weight=0.0), s))
    _, diverse = drive(render_units(demo, UnitJob(BLOCK3, [10], facets=4), s))
    cos_plain, cos_diverse = gram_cosine(plain), gram_cosine(diverse)
    assert cos_diverse < cos_plain - 0.1, (cos_plain, cos_diverse)
    plain_value = np.mean([r.value for r in plain])
    assert all(r.value > 0.5 * plain_value for r in diverse), [r.value for r in diverse]


def test_fidelity_recipe_has_less_fine_texture_and_more_robust_images(demo) -> None:
    """The fidelity recipe (issue 12's default, benchmarks/bench_fidelity.py; since issue 20 the
    default caps large structures' steps and slows colour, which costs robust / clean on this
    layer, benchmarks/README.md) against the previous default
    (the article's chain at lr 0.05, 1/f spectrum, constant rate) and raw pixels, at equal steps
    on the deep layer where the previous default left the most fine texture: less power above
    0.25 cycles/px than both, a steeper spectrum, and an objective that survives jitter / scale /
    rotation better than the previous default's (robust / clean), with a robust objective at
    least as high.
    """
    deep = "/features/block4/relu/Relu"
    units = [36, 87, 5, 13]  # live on the start image (the benchmark's first picks)
    previous = dict(lr=0.05, decay=1.0, lr_anneal=0.0, transforms=TransformSettings.article())
    pixel = dict(param="pixel", decorrelate=False, transforms=None)
    images = {}
    from fvdesk.core.optim.settings import recipe

    for name, kw in (("default", {}), ("previous", previous), ("pixel", pixel)):
        s = recipe("fidelity", steps=96, size=SIZE, batch=4, preview_every=0, **kw)
        _, res = drive(render_units(demo, UnitJob(deep, units), s))
        assert not any(r.dead for r in res)
        images[name] = np.stack([r.image for r in res])
    hf = {k: float(np.median(Q.high_frequency_share(v))) for k, v in images.items()}
    slope = {k: float(np.median(Q.spectral_slope(v))) for k, v in images.items()}
    assert hf["default"] < 0.75 * hf["previous"] < hf["pixel"], hf
    assert slope["default"] < slope["previous"] < slope["pixel"], slope
    objective = O.Unit(deep, "channel", units)
    clean = {k: Q.objective_values(demo, objective, v) for k, v in images.items()}
    robust = {k: Q.robust_values(demo, objective, v) for k, v in images.items()}
    ratio = {k: float(np.median(robust[k] / clean[k])) for k in images}
    assert ratio["default"] > ratio["previous"] + 0.03 > ratio["pixel"], ratio
    assert np.median(robust["default"]) >= np.median(robust["previous"]), robust


def test_averaged_iterate_has_less_fine_texture_at_equal_steps(demo) -> None:
    """``average`` (the saved image is the mean of the images after the last steps) against the
    last image of the same render, on the deep layer: less power above 0.25 cycles/px, a steeper
    spectrum, a robust / clean ratio at least as high (the per-step texture it cancels was what
    each step's transform alone asked for), for a few per cent of the objective
    (benchmarks/README.md, round 3)."""
    deep = "/features/block4/relu/Relu"
    units = [36, 87, 5, 13]
    images = {}
    from fvdesk.core.optim.settings import recipe

    for name, share in (("last", 0.0), ("mean", 0.75)):  # on the recipe round 3 measured
        s = recipe("fidelity", steps=96, size=SIZE, batch=4, preview_every=0, average=share)
        _, res = drive(render_units(demo, UnitJob(deep, units), s))
        assert not any(r.dead for r in res)
        images[name] = np.stack([r.image for r in res])
    hf = {k: float(np.median(Q.high_frequency_share(v))) for k, v in images.items()}
    slope = {k: float(np.median(Q.spectral_slope(v))) for k, v in images.items()}
    assert hf["mean"] < 0.95 * hf["last"], hf
    assert slope["mean"] < slope["last"] - 0.1, slope
    objective = O.Unit(deep, "channel", units)
    clean = {k: Q.objective_values(demo, objective, v) for k, v in images.items()}
    robust = {k: Q.robust_values(demo, objective, v) for k, v in images.items()}
    ratio = {k: float(np.median(robust[k] / clean[k])) for k in images}
    assert ratio["mean"] >= ratio["last"], ratio
    assert np.median(robust["mean"]) > 0.9 * np.median(robust["last"]), robust


def test_default_recipe_keeps_values_in_range_and_colours_natural(demo) -> None:
    """Issue 20: the former default (``recipe("fidelity")``) pushes large patches past the
    sigmoid's range (flat, clipped, garish colour); the default caps the steps of structures
    above 16 px and slows the colour axes, which keeps clipping under 2 % and colourfulness in
    photographs' range at about the same objective (benchmarks/README.md, bench_quality.py)."""
    from fvdesk.core.optim.settings import recipe

    units = [2, 11, 25]  # block2 units with large flat patches under the former default
    images, values = {}, {}
    for name in ("default", "fidelity"):
        s = recipe(name, steps=64, size=32, batch=3, preview_every=0)
        _, res = drive(render_units(demo, UnitJob("/features/block2/relu/Relu", units), s))
        images[name] = np.stack([r.image for r in res])
        values[name] = np.array([r.value for r in res])
    clipped = {k: Q.clipped_share(v).max() for k, v in images.items()}
    colour = {k: Q.colourfulness(v).max() for k, v in images.items()}
    assert clipped["default"] < 0.02 < 0.03 < clipped["fidelity"], clipped
    assert colour["default"] <= Q.NATURAL_COLOURFULNESS[1] < colour["fidelity"], colour
    assert values["default"].sum() > 0.9 * values["fidelity"].sum(), values
