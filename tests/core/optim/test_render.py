"""The render generator's contract on small fixture models: events, results, seeds, cancel, NaN,
out-of-memory halving, dead units, batch splitting, unusual inputs and ``render_units``."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from fvdesk.core.errors import ConfigError, RenderError
from fvdesk.core.jobs.job import UnitJob
from fvdesk.core.jobs.run import render_units
from fvdesk.core.model.loader import load_model
from fvdesk.core.optim import objectives as O
from fvdesk.core.optim import quality as Q
from fvdesk.core.optim.events import (
    NoticeEvent,
    PreviewEvent,
    RenderResult,
    StepEvent,
    UnitDoneEvent,
    UnitResult,
)
from fvdesk.core.optim.render import (
    GATE_FLOOR,
    _TailAverage,
    image_seed,
    redirected_hardsigmoid,
    redirected_hardswish,
    redirected_relu,
    redirected_relu6,
    relu_override,
    render,
)
from fvdesk.core.optim.settings import RenderSettings, TransformSettings
from tests.models import dead_unit_onnx, hardswish_gate_onnx, small_onnx

FAST = dict(steps=6, size=32, batch=2, preview_every=0)


def drive(gen):
    """Run a render generator; return (events, result)."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


@pytest.fixture(scope="module")
def small(model_cache):
    return load_model(small_onnx(model_cache, "rgb"))


@pytest.fixture(scope="module")
def dead(model_cache):
    return load_model(dead_unit_onnx(model_cache))


@pytest.fixture(scope="module")
def gated(model_cache):
    return load_model(hardswish_gate_onnx(model_cache))


RELU = "/features/features.2/Relu"  # 8 channels at full resolution in small_onnx models


# -- settings ---------------------------------------------------------------------------------------
def test_settings_defaults_and_json_round_trip() -> None:
    s = RenderSettings()
    # the recipe chosen by benchmarks/bench_fidelity.py (issue 12): lr 0.08 annealed over the
    # second half to 5 %, spectrum 1/f**1.5, fvdesk's transform chain; early stop off
    assert (s.steps, s.size, s.lr, s.batch, s.param, s.decorrelate, s.decay) == (
        256,
        None,
        0.08,
        8,
        "fourier",
        True,
        1.5,
    )
    assert (s.lr_anneal, s.lr_final, s.early_stop, s.early_stop_window) == (0.5, 0.05, 0.0, 32)
    assert s.average == 0.0  # the saved image is the last one (averaging is an option)
    # issue 20 (benchmarks/bench_quality.py): structures above 16 px take no larger steps than
    # 16 px ones, the colour axes 0.6x the luminance's
    assert (s.spectrum_period, s.chroma) == (16.0, 0.6)
    assert (
        s.transforms == TransformSettings() and s.relu_override_steps == 32 and s.device == "auto"
    )
    custom = RenderSettings(
        steps=7,
        size=96,
        transforms=None,
        color_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        shared=[[1, 2]],
    )
    for obj_ in (s, custom):
        d = json.loads(json.dumps(obj_.to_dict()))
        assert RenderSettings.from_dict(d) == obj_
    assert RenderSettings.from_dict({"steps": 3, "added_in_v9": True}).steps == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": -1},
        {"batch": 0},
        {"lr": 0},
        {"param": "wavelet"},
        {"size": 3},
        {"color_matrix": [[1]]},
        {"transforms": {"pad": -2}},
        {"tv": float("nan")},
        {"average": 1.5},
        {"average": -0.25},
        {"average": "half"},
    ],
)
def test_bad_settings_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        RenderSettings.from_dict(bad)


# -- the generator ----------------------------------------------------------------------------------
def test_events_and_result(small) -> None:
    s = RenderSettings(steps=5, size=32, batch=3, preview_every=2)
    events, res = drive(render(small, O.channel(RELU, 1), s))
    steps = [e for e in events if isinstance(e, StepEvent)]
    previews = [e for e in events if isinstance(e, PreviewEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5]
    assert all(e.steps == 5 and e.values.shape == (3,) and np.isfinite(e.loss) for e in steps)
    assert [p.step for p in previews] == [2, 4, 5]
    assert previews[-1].images.shape == (3, 32, 32, 3) and previews[-1].images.dtype == np.uint8
    assert isinstance(res, RenderResult)
    assert res.images.shape == (3, 32, 32, 3) and res.images.dtype == np.uint8
    assert res.values.shape == (3,) and res.steps_done == 5 and not res.cancelled
    assert res.dead == [] and res.batch == 3 and res.device.startswith("cpu") and res.seconds > 0
    assert steps[-1].values.mean() > steps[0].values.mean()  # it optimizes


def test_weights_frozen_during_and_restored_after(small) -> None:
    before = [p.requires_grad for p in small.module.parameters()]
    drive(render(small, O.channel(RELU, 0), RenderSettings(**FAST)))
    assert [p.requires_grad for p in small.module.parameters()] == before
    assert all(p.grad is None for p in small.module.parameters())


def test_same_seed_same_images_on_cpu(small) -> None:
    s = RenderSettings(**FAST, seed=3)
    _, a = drive(render(small, O.channel(RELU, 2), s))
    _, b = drive(render(small, O.channel(RELU, 2), s))
    _, c = drive(render(small, O.channel(RELU, 2), RenderSettings(**{**FAST, "seed": 4})))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.values, b.values)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images[0], a.images[1])  # each image its own seed


@pytest.mark.parametrize("as_callable", [False, True])
def test_cancel_stops_within_one_step(small, as_callable: bool) -> None:
    flag = threading.Event()
    cancel = flag.is_set if as_callable else flag
    gen = render(
        small, O.channel(RELU, 0), RenderSettings(steps=50, size=32, batch=1), cancel=cancel
    )
    seen = []
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            res = stop.value
            break
        if isinstance(ev, StepEvent):
            seen.append(ev.step)
            if ev.step == 3:
                flag.set()
    assert seen == [1, 2, 3]
    assert res.cancelled and res.steps_done == 3 and res.images.shape == (1, 32, 32, 3)


class _NaNAt(O.Objective):
    def __init__(self, inner: O.Objective, step: int) -> None:
        self.inner, self.step, self.calls = inner, step, 0
        self.layers = inner.layers

    def __call__(self, acts):
        self.calls += 1
        v = self.inner(acts)
        return v * float("nan") if self.calls >= self.step else v


def test_nan_raises_a_render_error_naming_the_step(small) -> None:
    # relu_override_steps=0: no start probe, so call k is step k
    s = RenderSettings(steps=10, size=32, batch=1, relu_override_steps=0)
    with pytest.raises(RenderError, match="step 4"):
        drive(render(small, _NaNAt(O.channel(RELU, 0), 4), s))


def test_unknown_layer_is_a_render_error_with_suggestions(small) -> None:
    with pytest.raises(RenderError, match="did you mean"):
        drive(render(small, O.channel("/features/features.2/Relux", 0), RenderSettings(**FAST)))


class _OOMAbove(O.Objective):
    """Pretends the device runs out of memory for batches larger than ``limit``."""

    def __init__(self, inner: O.Objective, limit: int) -> None:
        self.inner, self.limit = inner, limit
        self.layers, self.coupled = inner.layers, inner.coupled

    def __call__(self, acts):
        if next(iter(acts.values())).shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(acts)

    def main(self):
        return self

    def subset(self, start, stop):
        return _OOMAbove(self.inner.subset(start, stop), self.limit)


def test_out_of_memory_halves_the_batch_and_keeps_each_image(small) -> None:
    s = RenderSettings(**{**FAST, "batch": 4})
    obj = O.channel(RELU, [0, 1, 2, 3])
    events, res = drive(render(small, _OOMAbove(obj, 2), s))
    notices = [e.message for e in events if isinstance(e, NoticeEvent)]
    assert any("memory" in n and "batches of 2" in n for n in notices)
    assert res.images.shape[0] == 4 and res.batch == 2
    offsets = {e.offset for e in events if isinstance(e, StepEvent)}
    assert offsets == {0, 2}
    _, whole = drive(render(small, obj, s))
    # per-image seeds: splitting the batch does not change what each image becomes
    assert np.abs(whole.images.astype(int) - res.images.astype(int)).max() <= 2
    with pytest.raises(RenderError, match="memory"):
        drive(render(small, _OOMAbove(obj + O.diversity(RELU), 2), s))


def test_out_of_memory_in_render_units_continues_with_smaller_batches(small) -> None:
    import fvdesk.core.optim.objectives as objectives_module

    real = objectives_module.Unit.__call__

    def limited(self, acts):
        if next(iter(acts.values())).shape[0] > 2:
            raise torch.OutOfMemoryError("out of memory")
        return real(self, acts)

    objectives_module.Unit.__call__ = limited  # type: ignore[method-assign]
    try:
        events, results = drive(
            render_units(
                small, UnitJob(RELU, [0, 1, 2, 3, 4]), RenderSettings(**{**FAST, "batch": 4})
            )
        )
    finally:
        objectives_module.Unit.__call__ = real  # type: ignore[method-assign]
    assert [r.unit for r in results] == [0, 1, 2, 3, 4]
    assert any("batches of 2" in e.message for e in events if isinstance(e, NoticeEvent))


# -- dead units -------------------------------------------------------------------------------------
def test_dead_units_are_revived_or_reported(dead) -> None:
    # decay 1: the article's start image, grey enough that unit 1 is dead on it (the default
    # 1/f**1.5 start has more low-frequency contrast and already wakes unit 1)
    s = RenderSettings(steps=40, size=24, batch=3, decay=1.0)
    events, results = drive(render_units(dead, UnitJob("relu", [0, 1, 2]), s))
    notices = " | ".join(e.message for e in events if isinstance(e, NoticeEvent))
    assert "unit 1, unit 2: zero gradient on the start image" in notices
    assert "unit 1: revived" in notices
    assert "unit 2: dead" in notices
    by_unit = {r.unit: r for r in results}
    assert not by_unit[0].dead and not by_unit[1].dead and by_unit[2].dead
    assert by_unit[1].value > 0.5 and by_unit[2].value == 0.0


def test_without_the_remedy_the_dead_unit_stays_grey(dead) -> None:
    s = RenderSettings(steps=40, size=24, batch=1, relu_override_steps=0, decay=1.0)
    _, results = drive(render_units(dead, UnitJob("relu", [1]), s))
    assert results[0].dead and results[0].value == 0.0
    assert results[0].image.std() < 8  # never moved from the near-grey start


def test_closed_gates_and_dead_hardswish_units_are_revived(gated) -> None:
    """MobileNetV3's blocks: a squeeze-excitation gate (HardSigmoid) closed on the grey start,
    and a Hardswish exported as Add/Clip/Mul/Div whose input is below -3.  Redirecting the
    ReLU6 inside the Hardswish is not enough (below -3 the product turns its gradient down);
    the engine redirects the Hardswish and the gate themselves."""
    s = RenderSettings(steps=40, size=24, batch=3, decay=1.0)
    events, results = drive(render_units(gated, UnitJob("gated", [0, 1, 2]), s))
    notices = " | ".join(e.message for e in events if isinstance(e, NoticeEvent))
    assert "unit 0, unit 1: zero gradient on the start image" in notices
    assert "unit 0, unit 1: revived" in notices
    assert not any(r.dead for r in results), notices
    assert all(r.value > 0 for r in results)


def test_redirected_hardswish_and_hardsigmoid_gradients() -> None:
    x = torch.tensor([[-5.0, -4.0], [-5.0, 1.0], [-5.0, -4.0]], requires_grad=True)
    g = torch.tensor([[-1.0, 1.0], [-1.0, -1.0], [-1.0, 1.0]])  # descent moves x by -g
    redirected_hardswish(x, torch.tensor([True, True, False])).backward(g)
    # row 0 blocked and chosen: passes where descent raises x; row 1 live, row 2 not chosen
    want = torch.ops.aten.hardswish_backward(g, x.detach())
    assert x.grad[0].tolist() == [-1.0, 0.0]
    assert torch.equal(x.grad[1:], want[1:])
    z = torch.tensor([[-10.0, 10.0]], requires_grad=True)  # 0.2 z + 0.5: below 0, above 1
    plain = redirected_hardsigmoid(z, torch.tensor([False]), 0.2, 0.5)
    assert plain.tolist() == [[0.0, 1.0]]
    out = redirected_hardsigmoid(z, torch.tensor([True]), 0.2, 0.5)
    assert out.tolist() == [[pytest.approx(GATE_FLOOR), 1.0]]  # a closed gate reads ajar
    out.backward(torch.tensor([[-1.0, -1.0]]))
    assert z.grad.tolist() == [[pytest.approx(-0.2), 0.0]]  # it opens; the open one stays


def test_redirected_relu_gradient() -> None:
    x = torch.tensor([[-1.0, -2.0], [1.0, -1.0], [-1.0, -2.0]], requires_grad=True)
    g = torch.tensor([[-1.0, 1.0], [-1.0, -1.0], [-1.0, 1.0]])
    redirected_relu(x, torch.tensor([True, True, False])).backward(g)
    # row 0 is blocked entirely by a plain ReLU and chosen: the gradient passes except where it
    # pushes a negative input lower; row 1 is not blocked and row 2 not chosen: plain gradient
    assert x.grad.tolist() == [[-1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]
    assert torch.equal(redirected_relu(x, torch.tensor([True] * 3)), torch.relu(x))


def test_redirected_relu6_never_pushes_a_saturated_input_higher() -> None:
    # one image, every input outside ReLU6's active range (0, 6): the plain gradient is zero
    x = torch.tensor([[-1.0, -1.0, 7.0, 7.0]], requires_grad=True)
    g = torch.tensor([[1.0, -1.0, -1.0, 1.0]])  # descent moves x by -g
    redirected_relu6(x, torch.tensor([True])).backward(g)
    # blocked: -1 pushed lower (g > 0) and 7 pushed higher (g < 0); passed: the other two
    assert x.grad.tolist() == [[0.0, -1.0, 0.0, 1.0]]
    assert torch.equal(redirected_relu6(x, torch.tensor([True])), x.clamp(0, 6))


def test_relu_override_rewrites_only_relus(small) -> None:
    ext = small.extractor([RELU])
    over = relu_override(ext)
    assert over is not None and relu_override(ext) is over
    x = small.prepare_input(torch.rand(2, 3, 32, 32))
    assert torch.allclose(over(x, torch.ones(2, dtype=torch.bool))[RELU], ext(x)[RELU])
    assert not any(n.op == "call_module" and "Relu" in str(n.target) for n in over.graph.nodes)


@pytest.mark.parametrize("kind", ["rgb", "gray", "nhwc", "flatten"])
@pytest.mark.parametrize("preset", ["imagenet", "caffe", "symmetric"])
@pytest.mark.parametrize(
    "tsettings",
    [
        TransformSettings(pad_mode="constant"),
        TransformSettings(pad_mode="reflect"),
        TransformSettings(pad=0),
        None,
    ],
    ids=["constant", "reflect", "nopad", "off"],
)
def test_fused_input_pipeline_equals_transform_then_prepare_input(
    model_cache, kind, preset, tsettings
) -> None:
    """The renderer folds preprocessing into the transform; it must equal the plain composition."""
    from fvdesk.core.model.preprocessing import PRESETS
    from fvdesk.core.optim.render import _InputPipeline
    from fvdesk.core.optim.transforms import RobustnessTransform

    m = load_model(small_onnx(model_cache, kind), preprocessing=preset, check_parity=False)
    c = m.input.channels
    canvas = (40, 40)  # the fixed-size model (native 32) is fitted by resize
    out = (m.input.height, m.input.width) if m.input.fixed_size else None
    tf = RobustnessTransform(tsettings, canvas, out=out, seeds=[1, 2])
    pipe = _InputPipeline(m, tf, c, torch.device("cpu"))
    assert pipe.affine and m.preprocessing.bgr == PRESETS[preset].bgr
    x = torch.rand(2, c, *canvas)
    params = None if tf.identity else tf.draw()
    want = m.prepare_input(tf.fit_only(x) if params is None else tf.apply(x, params))
    got = pipe(x, params)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4 * (1 + float(want.abs().max())))
    assert torch.allclose(
        pipe(x, None), m.prepare_input(tf.fit_only(x)), atol=1e-4 * (1 + float(want.abs().max()))
    )


# Hand-computed model inputs for the canvas colour RGB (0.2, 0.5, 0.9), or grey 0.5 for 1-channel
# models, in the model's own channel order: what a wrong preset or a lost BGR flip would change.
PINNED = {
    "imagenet": ([-1.2445415, 0.1964286, 2.1955556], 0.2256637),  # (x - mean) / std, RGB
    "unit": ([0.2, 0.5, 0.9], 0.5),
    "symmetric": ([-0.6, 0.0, 0.8], 0.0),  # 2x - 1
    "byte": ([51.0, 127.5, 229.5], 127.5),  # 255 x
    "caffe": (
        [125.561, 10.721, -72.68],
        12.7006667,
    ),  # BGR: 255 (b, g, r) - (103.939, 116.779, 123.68)
}


@pytest.mark.parametrize("kind", ["rgb", "nhwc", "gray"])
@pytest.mark.parametrize("preset", sorted(PINNED))
@pytest.mark.parametrize("transforms", [None, TransformSettings()], ids=["identity", "robust"])
def test_every_preset_gives_the_model_exactly_these_values(
    model_cache, kind: str, preset: str, transforms
) -> None:
    """End to end through the renderer's fused input pipeline (what the model really gets)."""
    from fvdesk.core.model.preprocessing import PRESETS
    from fvdesk.core.optim.render import _InputPipeline
    from fvdesk.core.optim.transforms import RobustnessTransform

    m = load_model(small_onnx(model_cache, kind), check_parity=False)
    c = m.input.channels
    rgb, grey = PINNED[preset]
    colour = [0.2, 0.5, 0.9] if c == 3 else [0.5]
    x = torch.tensor(colour).view(1, c, 1, 1).expand(1, c, 32, 32).contiguous()
    tf = RobustnessTransform(transforms, (32, 32), seeds=[3])
    pipe = _InputPipeline(m, tf, c, torch.device("cpu"), PRESETS[preset])
    y = pipe(x, None if tf.identity else tf.draw())
    if kind == "nhwc":
        assert y.shape == (1, 32, 32, 3)
        centre = y[0, 16, 16, :]
    else:
        assert y.shape == (1, c, 32, 32)
        centre = y[0, :, 16, 16]
    want = torch.tensor(rgb if c == 3 else [grey])
    assert torch.allclose(centre, want, rtol=1e-5, atol=1e-4), (centre.tolist(), want.tolist())


# -- unusual inputs ---------------------------------------------------------------------------------
def test_grayscale_model_gets_grayscale_images(model_cache) -> None:
    m = load_model(small_onnx(model_cache, "gray"))
    _, res = drive(render(m, O.channel(RELU, 0), RenderSettings(**FAST)))
    assert res.images.shape == (2, 32, 32, 1)


def test_fixed_size_model_renders_any_canvas(model_cache) -> None:
    m = load_model(small_onnx(model_cache, "flatten"))
    assert m.input.fixed_size
    logits = m.graph.logits_name
    for fit in ("resize", "crop"):
        s = RenderSettings(**{**FAST, "size": 48, "fit": fit})
        _, res = drive(render(m, O.logit(logits, 1), s))
        assert res.images.shape == (2, 48, 48, 3) and np.isfinite(res.values).all()


def test_batch_one_model_renders_a_batch_one_image_at_a_time(model_cache) -> None:
    m = load_model(small_onnx(model_cache, "view1"))
    assert m.input.max_batch == 1
    events, res = drive(
        render(m, O.logit(m.graph.logits_name, 2), RenderSettings(**{**FAST, "batch": 3}))
    )
    assert res.images.shape == (3, 32, 32, 3) and res.batch == 1
    assert {e.offset for e in events if isinstance(e, StepEvent)} == {0, 1, 2}
    with pytest.raises(RenderError, match="batch 1"):
        drive(
            render(
                m,
                O.logit(m.graph.logits_name, 2) + O.diversity(RELU),
                RenderSettings(**{**FAST, "batch": 3}),
            )
        )


def test_nhwc_model(model_cache) -> None:
    m = load_model(small_onnx(model_cache, "nhwc"))
    layer = next(x.name for x in m.graph if x.op == "Relu")
    _, res = drive(render(m, O.channel(layer, 0), RenderSettings(**FAST)))
    assert res.images.shape == (2, 32, 32, 3)


def test_regularizers_and_blur_run_and_smooth(small) -> None:
    base = dict(
        steps=12,
        size=32,
        batch=1,
        param="pixel",
        decorrelate=False,
        transforms=None,
        preview_every=0,
    )

    def tv(img: np.ndarray) -> float:
        x = img.astype(float)
        return float(np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean())

    _, plain = drive(render(small, O.channel(RELU, 3), RenderSettings(**base)))
    _, with_tv = drive(render(small, O.channel(RELU, 3), RenderSettings(**base, tv=5.0)))
    _, blurred = drive(
        render(small, O.channel(RELU, 3), RenderSettings(**base, blur_every=4, blur_sigma=1.0))
    )
    _, l12 = drive(render(small, O.channel(RELU, 3), RenderSettings(**base, l1=1.0, l2=1.0)))
    assert tv(with_tv.images) < tv(plain.images)
    assert tv(blurred.images) < tv(plain.images)
    assert (
        np.abs(l12.images.astype(float) - 127.5).mean()
        < np.abs(plain.images.astype(float) - 127.5).mean()
    )


def test_interpolation_with_shared_parameterization_and_alignment(small) -> None:
    """The article's interpolation: blend two channels across the batch, align neighbours, and
    share low-resolution components between images so objects line up."""
    a, b = O.channel(RELU, 1), O.channel(RELU, 5)
    objective = O.interpolate(a, b, 4) + 0.1 * O.alignment(RELU)
    s = RenderSettings(**{**FAST, "batch": 4, "shared": [[1, 2], [2, 4]]})
    _, res = drive(render(small, objective, s))
    assert res.images.shape == (4, 32, 32, 3) and np.isfinite(res.values).all()
    x = torch.tensor(res.images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        acts = small.activations(x, [RELU])[RELU].mean((2, 3))
    ratio = acts[:, 1] / (acts[:, 1] + acts[:, 5])
    assert ratio[0] > ratio[3]  # the first image favours channel 1, the last channel 5


# -- many units -------------------------------------------------------------------------------------
def test_render_units_chunks_a_layer(small) -> None:
    job = UnitJob(RELU, [0, 1, 2, 3, 4])
    events, results = drive(render_units(small, job, RenderSettings(**{**FAST, "batch": 2})))
    done = [e.result for e in events if isinstance(e, UnitDoneEvent)]
    assert done == results and [r.unit for r in results] == [0, 1, 2, 3, 4]
    assert {e.units for e in events if isinstance(e, StepEvent)} == {(0, 1), (2, 3), (4,)}
    r = results[0]
    assert isinstance(r, UnitResult) and r.layer == RELU and r.kind == "channel" and r.facet == 0
    assert r.image.shape == (32, 32, 3) and r.label is None and r.seed == 0 and r.steps == 6
    # a unit renders the same alone as inside a chunk (per-unit seeds)
    _, alone = drive(
        render_units(small, UnitJob(RELU, [3]), RenderSettings(**{**FAST, "batch": 1}))
    )
    assert np.abs(alone[0].image.astype(int) - results[3].image.astype(int)).max() <= 2


def test_render_units_logits_labels_negative_facets_deepdream(small) -> None:
    small.labels = [f"class {i}" for i in range(10)]
    logits = small.graph.logits_name
    _, pos = drive(render_units(small, UnitJob(logits, [7], kind="logit"), RenderSettings(**FAST)))
    _, neg = drive(
        render_units(
            small, UnitJob(logits, [7], kind="logit", negative=True), RenderSettings(**FAST)
        )
    )
    assert pos[0].label == "class 7" and neg[0].negative
    assert neg[0].value < pos[0].value  # value is the logit itself, not negated
    _, prob = drive(render_units(small, UnitJob(logits, [7], kind="prob"), RenderSettings(**FAST)))
    assert 0 < prob[0].value < 1
    _, facets = drive(
        render_units(small, UnitJob(RELU, [1, 2], facets=3), RenderSettings(**{**FAST, "batch": 4}))
    )
    assert [(r.unit, r.facet) for r in facets] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    _, dd = drive(
        render_units(small, UnitJob(RELU, [], kind="deepdream", facets=2), RenderSettings(**FAST))
    )
    assert [(r.unit, r.facet, r.kind) for r in dd] == [(-1, 0, "deepdream"), (-1, 1, "deepdream")]
    with pytest.raises(RenderError, match="does not exist"):
        drive(render_units(small, UnitJob(RELU, [8]), RenderSettings(**FAST)))


def test_image_seed_is_stable_and_mixes_its_keys() -> None:
    assert image_seed(0, 1, 0) == image_seed(0, 1, 0)
    assert len({image_seed(0, u, f) for u in range(20) for f in range(3)}) == 60
    assert image_seed(1, 1, 0) != image_seed(0, 1, 0)
    assert 0 <= image_seed(2**40, 5) < 2**63


def test_pruned_extractor_matches_the_full_graph(small) -> None:
    x = torch.rand(2, 3, 32, 32)
    ext = small.extractor([RELU])
    with torch.no_grad(), small.capture([RELU]) as store:
        small.forward(x)
        pruned = ext(small.prepare_input(x))[RELU]
    assert torch.equal(pruned, store[RELU])
    targets = {str(n.target) for n in ext.graph.nodes if n.op == "call_module"}
    assert not any("fc" in t or "Gemm" in t or "pool" in t.lower() for t in targets)


def test_unit_labels_follow_the_apps_rule(demo_model_path) -> None:
    """Class layers get labels (as in the app's tree); feature maps never do."""
    from fvdesk.core.model.loader import load_model

    m = load_model(demo_model_path, check_parity=False)
    assert m.graph.unit_label("/classifier/Gemm", 4, m.labels) == "checkerboard"
    assert m.graph.unit_label("/features/block1/conv/Conv", 4, m.labels) is None
    assert (
        m.graph.unit_label("/flatten/Flatten", 4, m.labels) is None
    )  # a vector, but 96 wide, not 8
    assert m.graph.unit_label("/classifier/Gemm", -1, m.labels) is None


def test_batch_events_name_each_images_unit_and_facet(small) -> None:
    """Without the diversity term batches need not start at a unit, so events carry facets."""
    job = UnitJob(RELU, [1, 2, 3], facets=3, diversity_weight=0.0)
    events, results = drive(render_units(small, job, RenderSettings(**{**FAST, "batch": 4})))
    # The last preview of each batch is followed by that batch's finished units, in order.
    batches, done, pending = [], [], None
    for ev in events:
        if isinstance(ev, PreviewEvent):
            pending = list(zip(ev.units, ev.facets, strict=True))
        elif isinstance(ev, UnitDoneEvent):
            if pending is not None:
                batches.append(pending)
                pending = None
            done.append((ev.result.unit, ev.result.facet))
    assert [p for b in batches for p in b] == done == [(u, f) for u in (1, 2, 3) for f in range(3)]
    assert any(b[0][1] != 0 for b in batches)  # a batch that starts mid-unit (the old failure)
    assert [(r.unit, r.facet) for r in results] == done


# -- learning-rate anneal and early stop ------------------------------------------------------------
def test_early_stop_stops_once_converged_and_says_so(small) -> None:
    """A plateaued objective ends the render early: after the anneal, with a notice, and the result
    records the steps actually done."""
    s = RenderSettings(
        steps=400, size=32, batch=2, preview_every=0, early_stop=0.02, early_stop_window=8
    )
    s.lr_anneal = 0.05  # 20 steps of anneal after convergence
    events, res = drive(render(small, O.channel(RELU, 0), s))
    notes = [e.message for e in events if isinstance(e, NoticeEvent) and "Converged" in e.message]
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert len(notes) == 1, notes
    converged = int(notes[0].split("step ")[1].split(" ")[0])
    assert res.steps_done == converged + 20 == steps[-1] < 400
    assert not res.cancelled
    assert (res.values > 0).all()  # it stopped because it had converged, not failed
    # without early stop the same render runs every step
    s.early_stop = 0.0
    s.steps = converged + 21
    _, full = drive(render(small, O.channel(RELU, 0), s))
    assert full.steps_done == converged + 21


def test_learning_rate_anneal_settles_the_image(small) -> None:
    """With the rate annealed to zero the last steps barely move the image; at a constant rate
    they keep changing it (the transform-specific jitter the anneal removes)."""

    def last_change(**kw) -> float:
        s = RenderSettings(steps=64, size=32, batch=2, preview_every=8, **kw)
        events, _ = drive(render(small, O.channel(RELU, 0), s))
        previews = [e.images.astype(float) for e in events if isinstance(e, PreviewEvent)]
        return float(np.abs(previews[-1] - previews[-2]).mean())

    constant = last_change(lr_anneal=0.0)
    annealed = last_change(lr_anneal=0.5, lr_final=0.0)
    assert annealed < 0.25 * constant, (annealed, constant)


# -- the averaged iterate ---------------------------------------------------------------------------
def test_average_saves_the_mean_of_the_last_images_and_its_value(small) -> None:
    """``average`` leaves the optimization alone (the live previews are the same images) and saves
    the mean of the images after the last steps, whose objective is the value reported."""
    kw = dict(steps=32, size=32, batch=2, preview_every=1, lr_anneal=0.0)
    objective = O.channel(RELU, 0)
    ev_last, last = drive(render(small, objective, RenderSettings(**kw)))
    ev_mean, mean = drive(render(small, objective, RenderSettings(average=0.25, **kw)))
    live = [e.images for e in ev_last if isinstance(e, PreviewEvent)]  # steps 1-31, then 32
    live_mean = [e.images for e in ev_mean if isinstance(e, PreviewEvent)]
    assert len(live) == len(live_mean) == 32
    assert all(np.array_equal(a, b) for a, b in zip(live[:-1], live_mean[:-1], strict=True))
    assert np.array_equal(live[-1], last.images) and np.array_equal(live_mean[-1], mean.images)
    # 8 of 32 steps: the images after steps 25-32 (uint8 previews: within one level)
    expected = np.stack(live[-8:]).astype(float).mean(0)
    assert np.abs(mean.images - expected).max() <= 1.0
    assert np.abs(mean.images.astype(float) - last.images).max() > 4  # it is not the last image
    for res in (last, mean):
        np.testing.assert_allclose(
            res.values, Q.objective_values(small, objective, res.images), rtol=0.02
        )
    assert not np.allclose(mean.values, last.values)


def test_average_of_a_cancelled_render_covers_the_steps_done(small) -> None:
    """Cancelled inside the averaged tail, a render returns the mean of the images it has."""
    kw = dict(steps=32, size=32, batch=2, preview_every=1, lr_anneal=0.0)
    events, _ = drive(render(small, O.channel(RELU, 0), RenderSettings(**kw)))
    live = [e.images for e in events if isinstance(e, PreviewEvent)]
    stop = threading.Event()
    gen = render(small, O.channel(RELU, 0), RenderSettings(average=0.25, **kw), cancel=stop)
    while True:
        try:
            ev = next(gen)
        except StopIteration as done:
            res = done.value
            break
        if isinstance(ev, StepEvent) and ev.step == 28:
            stop.set()
    assert res.cancelled and res.steps_done == 28
    expected = np.stack(live[24:28]).astype(float).mean(0)  # after steps 25-28
    assert np.abs(res.images - expected).max() <= 1.0


def test_tail_average_window_follows_the_end_restarts_and_octaves() -> None:
    """The mean covers the images after the last n steps before the (possibly moved) end; a
    restarted image forgets its old iterates; a new canvas size starts the mean afresh."""

    def img(v: float, n: int = 2, size: int = 1) -> torch.Tensor:
        return torch.full((n, 1, size, size), float(v))

    tail = _TailAverage(4)
    for step in range(1, 11):  # step k starts from the image after step k - 1 (value k - 1)
        tail.add(step, 10, img(step - 1))
    assert tail.mean(img(10)).flatten().tolist() == [8.5, 8.5]  # after steps 7-10
    tail = _TailAverage(4)
    for step in range(1, 8):  # converged at step 4: the render now ends at step 7
        tail.add(step, 10 if step <= 4 else 7, img(step - 1))
    assert tail.mean(img(7)).flatten().tolist() == [5.5, 5.5]  # after steps 4-7
    tail = _TailAverage(4)
    for step in range(1, 10):  # converged at step 8, ends at 9: the window's image after
        # step 6 was not yet known to be in it, those after 7-9 are
        tail.add(step, 10 if step <= 8 else 9, img(step - 1))
    assert tail.mean(img(9)).flatten().tolist() == [8.0, 8.0]  # after steps 7-9
    tail = _TailAverage(4)
    for step in range(1, 11):
        tail.add(step, 10, img(step - 1))
        if step == 9:
            tail.forget([1])
    assert tail.mean(img(10)).flatten().tolist() == [8.5, 9.5]
    tail = _TailAverage(4)
    for step in range(1, 11):
        tail.add(step, 10, img(step - 1, size=1 if step < 9 else 2))
    assert tail.mean(img(10, size=2)).flatten().tolist() == [9.0] * 8  # after steps 8-10
    assert tail.mean(img(3, size=3)).flatten().tolist() == [3.0] * 18  # no mean of that size
    off = _TailAverage(0)
    off.add(10, 10, img(1))
    assert off.sum is None
