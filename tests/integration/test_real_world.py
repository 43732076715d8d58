"""Model families from the wild (issue 11): vision transformers, Swin, partial conversions,
exporter metadata, half precision, and the canonicalization fallback.

Architectures are torchvision's own classes (VisionTransformer is vit_b_16's, SwinTransformer is
swin_t's) in small configurations, exported once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from fvdesk.cli import main
from fvdesk.core.errors import RenderError
from fvdesk.core.jobs.job import UnitJob
from fvdesk.core.jobs.run import render_units
from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model.layers import token_target
from fvdesk.core.model.loader import load_model
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.events import StepEvent
from fvdesk.core.optim.render import render
from fvdesk.core.optim.settings import RenderSettings
from tests import models as test_models
from tests.core.optim.test_render import drive

FAST = RenderSettings(steps=10, size=32, batch=2, seed=0, lr=0.05)


@pytest.fixture(scope="module")
def vit_path(model_cache: Path) -> Path:
    return test_models.cached_export(model_cache, "tiny_vit", test_models.tiny_vit, size=32)


@pytest.fixture(scope="module")
def vit(vit_path: Path):
    return load_model(vit_path)


@pytest.fixture(scope="module")
def swin_path(model_cache: Path) -> Path:
    return test_models.cached_export(model_cache, "tiny_swin", test_models.tiny_swin, size=32)


def _original(path: Path, tensors: list[str], x: np.ndarray) -> list[np.ndarray]:
    model = onnx.load(str(path))
    for t in tensors:
        model.graph.output.append(helper.make_value_info(t, onnx.TypeProto()))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(tensors, {model.graph.input[0].name: x})


def _rises(events) -> tuple[float, float]:
    steps = [e for e in events if isinstance(e, StepEvent)]
    return float(np.mean(steps[0].values)), float(np.mean(steps[-1].values))


# -- vision transformers ---------------------------------------------------------------------------
def test_vit_token_layers_are_units_over_the_patch_grid(vit) -> None:
    layers = vit.graph.layers
    tokens = [x for x in layers if x.kind == "tokens"]
    mlp = vit.graph["/encoder/layers/encoder_layer_0/mlp/mlp.1/Mul_1"]  # GELU of the MLP hidden
    assert mlp.kind == "tokens" and mlp.layout == "NTC"
    assert mlp.shape == (None, 17, 48) and mlp.channels == 48
    assert mlp.grid == (4, 4) and mlp.extra_tokens == 1 and mlp.spatial == (4, 4)
    assert mlp.describe() == "48 channels × 17 tokens (class + 4×4 patches)"
    residual = [x for x in tokens if x.op == "Add" and x.channels == 24]
    assert len(residual) >= 4  # the residual stream after every attention and MLP block
    # Nothing 4-D passes for a feature map except the patch embedding.
    assert [x.name for x in layers if x.kind == "feature"] == ["/conv_proj/Conv"]
    attention = [x for x in layers if x.kind == "attention"]
    probs = [x for x in attention if x.op == "Softmax"]
    assert probs and all(x.axes == ("heads", "queries", "keys") for x in probs)
    assert probs[0].describe() == "2 heads × 17 queries × 17 keys" and probs[0].channels == 2
    heads = [x for x in attention if x.axes == ("heads", "tokens", "dims")]
    assert heads and all(x.shape[1:] == (2, 17, 12) for x in heads)
    # Sequence-first internals (17, N, 24) of torch's MultiheadAttention are not per-image layers.
    assert not any(x.shape[1] == 17 and x.kind == "feature" for x in layers)
    assert vit.parity is not None and vit.parity.ok


def test_token_layer_hand_out(vit) -> None:
    """Units are channels; positions are patches (row-major) and ``#0`` is the class token."""
    name = "/encoder/layers/encoder_layer_1/Add_1"
    x = torch.rand(2, 3, 32, 32)
    acts = vit.activations(x, [name, f"{name}#0"])
    raw = vit.extractor([name], raw=True)(vit.prepare_input(x))[name]
    assert raw.shape == (2, 17, 24)
    assert acts[name].shape == (2, 24, 4, 4) and acts[f"{name}#0"].shape == (2, 24)
    torch.testing.assert_close(acts[f"{name}#0"], raw[:, 0])
    torch.testing.assert_close(acts[name][:, 5, 2, 3], raw[:, 1 + 2 * 4 + 3, 5])
    with vit.capture([name]) as store:
        vit.forward(x)
    torch.testing.assert_close(store[name], acts[name])
    with pytest.raises(RenderError):
        vit.graph[f"{name}#1"]  # only one extra token


def test_vit_objectives_channel_patch_and_class_token(vit) -> None:
    name = "/encoder/layers/encoder_layer_0/mlp/mlp.1/Mul_1"
    x = torch.rand(2, 3, 32, 32)
    raw = vit.extractor([name], raw=True)(vit.prepare_input(x))[name]
    acts = vit.activations(x, [name, f"{name}#0"])
    channel = obj.channel(name, 7)(acts)
    torch.testing.assert_close(channel, raw[:, 1:, 7].mean(1))  # patches only, not the class token
    at_patch = obj.neuron(name, 7, x=1, y=3)(acts)
    torch.testing.assert_close(at_patch, raw[:, 1 + 3 * 4 + 1, 7])
    cls = obj.neuron(name, 7, token=0)
    assert cls.layers == (f"{name}#0",)
    torch.testing.assert_close(cls(acts), raw[:, 0, 7])


def test_render_a_vit_mlp_unit_end_to_end(vit) -> None:
    name = "/encoder/layers/encoder_layer_1/mlp/mlp.1/Mul_1"
    events, results = drive(render_units(vit, UnitJob(layer=name, units=[3, 11]), FAST))
    assert [r.unit for r in results] == [3, 11]
    assert all(r.image.shape == (32, 32, 3) and r.image.dtype == np.uint8 for r in results)
    first, last = _rises(events)
    assert last > first, (first, last)
    _, result = drive(render(vit, obj.neuron(name, 3, token=0), FAST, batch=1))
    assert result.images.shape == (1, 32, 32, 3)
    # the class token's neuron, on the image itself (the steps' values are of jittered, scaled
    # and rotated copies, which move it more than ten steps do on this random-weight network)

    def neuron(img: np.ndarray) -> float:
        x01 = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
        cls = token_target(name, 0)  # the class token, read as ``layer#0``
        with torch.no_grad():
            return float(vit.extractor([cls])(vit.prepare_input(x01))[cls].flatten()[3])

    grey = np.full((32, 32, 3), 128, np.uint8)
    assert neuron(result.images[0]) > neuron(grey) + 0.003


def test_deepdream_on_a_token_layer_but_not_on_attention(vit) -> None:
    """DeepDream reads a token layer as its patch map; attention weights and scores are not
    images of anything, so the app does not offer it there."""
    by_kind: dict[str, set[bool]] = {}
    for x in vit.graph.layers:
        by_kind.setdefault(x.kind, set()).add(x.dreamable)
    assert by_kind["tokens"] == {True}
    assert by_kind["attention"] == {False} and by_kind["vector"] == {False}
    name = "/encoder/layers/encoder_layer_1/mlp/mlp.1/Mul_1"
    events, results = drive(render_units(vit, UnitJob(layer=name, kind="deepdream"), FAST))
    assert [r.unit for r in results] == [-1] and results[0].image.shape == (32, 32, 3)
    first, last = _rises(events)
    assert last > first, (first, last)


def test_cli_lists_and_describes_token_layers(vit_path: Path, capsys) -> None:
    assert main(["layers", str(vit_path), "--no-parity", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "(48 channels × 17 tokens (class + 4×4 patches))" in out
    assert "(2 heads × 17 queries × 17 keys)" in out
    assert "token layers" in out and "attention tensors" in out
    assert main(["layers", str(vit_path), "--json", "--no-parity", "--quiet"]) == 0
    rows = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    mlp = rows["/encoder/layers/encoder_layer_0/mlp/mlp.1/Mul_1"]
    assert mlp["kind"] == "tokens" and mlp["grid"] == [4, 4] and mlp["extra_tokens"] == 1
    softmax = rows["/encoder/layers/encoder_layer_0/self_attention/Softmax"]
    assert softmax["kind"] == "attention" and softmax["axes"] == ["heads", "queries", "keys"]


# -- Swin: windowed tokens, NHWC inside ---------------------------------------------------------------
def test_swin_loads_with_its_channels_last_maps(swin_path: Path) -> None:
    m = load_model(swin_path)
    assert m.parity is not None and m.parity.ok, m.parity
    assert not any("left out the step" in s for s in m.canonicalization)
    merged = m.graph["/features/features.2/norm/LayerNormalization"]  # patch merging's norm
    assert merged.layout == "NHWC" and merged.shape == (None, 96, 4, 4) and merged.channels == 96
    mlp = m.graph["/features/features.1/features.1.0/mlp/mlp.0/MatMul"]
    assert mlp.layout == "NHWC" and mlp.shape == (None, 96, 8, 8)
    for layer in m.graph.layers:  # windows of a batch are never mistaken for images
        if layer.kind == "feature":
            assert layer.shape[0] is None and layer.channels in (24, 48, 96, 192, 10), layer
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    got = m.extractor([merged.name], raw=True)(torch.from_numpy(x))[merged.name]
    (ref,) = _original(swin_path, [merged.output], x)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_fallback_finds_the_pass_that_broke_swin(
    swin_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the LayerNormalization shape measurement, folding the Identity weights makes
    onnx2torch build ``nn.LayerNorm([0])`` (the swin_t report): the loader must find that
    'fold constants' did it, leave that step out and load the model."""
    monkeypatch.setattr(canon, "tensors_needing_shapes", lambda model: [])
    m = load_model(swin_path)
    assert m.parity is not None and m.parity.ok
    assert any("left out the step 'fold constants'" in s for s in m.canonicalization)
    assert any("'fold constants'" in w and "unconvertible" in w for w in m.warnings)


def _breaking_pass(kind: str):
    def run(model: onnx.ModelProto, report: canon.Report, where: str) -> onnx.ModelProto:
        for n in model.graph.node:
            if n.op_type == "Relu" and kind == "unconvertible":
                n.op_type = "Hardmax"  # no onnx2torch converter
            if n.op_type == "Flatten" and kind == "fails to run":
                n.op_type = "Reshape"
                del n.attribute[:]
                model.graph.initializer.append(
                    onnx.numpy_helper.from_array(np.array([1, 7], np.int64), "bad_shape")
                )
                n.input.append("bad_shape")
        report.add(f"broke the graph ({kind})")
        return model

    return run


@pytest.mark.parametrize("kind", ["unconvertible", "fails to run"])
def test_fallback_leaves_out_a_breaking_pass(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = test_models.small_onnx(model_cache, "rgb")
    passes = (*canon.PASSES[:4], canon.Pass("evil", _breaking_pass(kind)), *canon.PASSES[4:])
    monkeypatch.setattr(canon, "PASSES", passes)
    monkeypatch.setattr(canon, "PASS_NAMES", tuple(p.name for p in passes))
    m = load_model(path)
    assert m.conversion is None and m.parity is not None and m.parity.ok
    assert any("left out the step 'evil'" in s for s in m.canonicalization)
    assert any("repair step 'evil'" in w for w in m.warnings)
    assert not any(s.startswith("broke the graph") for s in m.canonicalization)


# -- partial conversion ---------------------------------------------------------------------------
def test_conv_lstm_opens_up_to_the_lstm(model_cache: Path, capsys) -> None:
    path = test_models.conv_lstm_onnx(model_cache)
    m = load_model(path)
    cut = m.conversion
    assert cut is not None and cut.op == "LSTM" and "LSTM" in cut.reason
    assert cut.stopped_at == next(x.name for x in m.graph.unavailable if x.op == "LSTM")
    assert [x.op for x in m.graph.layers if x.kind == "feature"][:3] == ["Conv", "Relu", "MaxPool"]
    assert all(not x.available and x.reason for x in m.graph.unavailable)
    assert m.parity is not None and m.parity.ok and m.parity.feature_layer is not None
    # Parity covers the boundary: the cut graph ends where torch ends.
    assert {o.name for o in m.onnx_model.graph.output} == set(cut.boundary)
    with pytest.raises(RenderError, match="conversion to torch stopped"):
        m.graph[cut.stopped_at]
    relu = next(x.name for x in m.graph.layers if x.op == "Relu")
    _events, results = drive(render_units(m, UnitJob(layer=relu, units=[0]), FAST))
    assert results[0].image.shape == (32, 32, 3)
    assert main(["info", str(path), "--json", "--quiet"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["conversion"]["complete"] is False
    assert info["conversion"]["stopped_at"] == cut.stopped_at
    assert info["conversion"]["ops_left_out"]["LSTM"] == 1
    assert main(["info", str(path), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"Converted up to node {cut.stopped_at!r} (LSTM)" in text


def test_custom_domain_op_after_the_backbone(model_cache: Path, capsys) -> None:
    path = test_models.conv_custom_op_onnx(model_cache)
    m = load_model(path)
    assert m.conversion is not None and m.conversion.stopped_at == "vendor/head"
    assert m.conversion.op == "com.vendor::FusedPoolHead"
    assert [x.name for x in m.graph.layers] == [
        "stem/conv",
        "stem/relu",
        "block/conv",
        "block/relu",
    ]
    assert [x.name for x in m.graph.unavailable] == ["vendor/head", "fc"]
    assert m.parity is not None and m.parity.ok  # onnxruntime cannot run the custom op, the cut can
    assert "vendor/head" in (m.status_text or "")
    assert main(["layers", str(path), "--quiet", "--no-parity"]) == 0
    out = capsys.readouterr().out
    assert "vendor/head" in out and "(not converted)" in out


# -- metadata and precision -----------------------------------------------------------------------
def test_ultralytics_metadata(model_cache: Path, tmp_path: Path) -> None:
    src = test_models.small_onnx(model_cache, "dynamic")
    props = {
        "author": "Ultralytics",
        "task": "classify",
        "stride": "32",
        "imgsz": "[48, 40]",
        "names": "{0: 'cat', 1: 'dog', 2: 'bird', 3: 'fish', 4: 'frog', 5: 'ant', 6: 'bee', "
        "7: 'cow', 8: 'elk', 9: 'yak'}",
    }
    m = load_model(test_models.with_metadata(src, tmp_path / "yolo-cls.onnx", props))
    assert (m.input.height, m.input.width) == (48, 40)
    assert m.labels is not None and m.labels[:2] == ["cat", "dog"] and m.labels_source == "metadata"
    assert m.preprocessing.preset == "unit" and m.preprocessing.source == "metadata"
    fixed = test_models.small_onnx(model_cache, "rgb")  # 32 px, fixed
    m = load_model(test_models.with_metadata(fixed, tmp_path / "fixed.onnx", {"imgsz": "[64, 64]"}))
    assert (m.input.height, m.input.width) == (32, 32)
    assert any("64×64" in w for w in m.warnings)


def test_float16_model_renders_in_float32(model_cache: Path, tmp_path: Path) -> None:
    src = test_models.small_onnx(model_cache, "rgb")
    m = load_model(test_models.to_float16(src, tmp_path / "half.onnx"))
    assert m.input.dtype == "float16"
    assert all(p.dtype == torch.float32 for p in m.module.buffers())
    par = m.parity
    assert par is not None and par.ok and par.reference == "float16 graph", par
    assert 0 < par.rel_diff < 1e-2  # half-precision rounding, measured, and small
    assert any("float16" in s for s in m.canonicalization)
    layer = m.graph.layers[1].name
    events, results = drive(render_units(m, UnitJob(layer=layer, units=[0]), FAST))
    first, last = _rises(events)
    assert last > first and np.isfinite(results[0].value)
