"""Opset 18+ graphs: hand-made nodes in their new forms, and torch's dynamo exporter.

The canonical graph is rewritten, so its own parity check cannot catch a wrong rewrite; every
test here compares the torch module with onnxruntime running the ORIGINAL file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.loader import load_model
from tests import builders as B
from tests import models as test_models

RNG = np.random.default_rng(18)


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return B.weight(RNG, name, *shape, scale=0.4)


_i64, _f32 = B.ints, B.floats


def _save(tmp_path: Path, nodes, out_shape, inits, *, opset: int = 18, size=(12, 16)) -> Path:
    """x (N, 3, H, W) -> conv -> relu -> ``nodes`` (reading "r", writing "y") -> output y."""
    head = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ]
    inputs, outputs = [B.tensor("x", ["N", 3, *size])], [B.tensor("y", out_shape)]
    model = B.onnx_model(
        head + nodes, inputs, outputs, [_w("w", 6, 3, 3, 3), *inits], opset=opset, ir=9
    )
    return B.save_onnx(model, tmp_path / "m.onnx")


def _original(path: Path, tensors: list[str], x: np.ndarray) -> list[np.ndarray]:
    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in have:
            model.graph.output.append(helper.make_value_info(t, onnx.TypeProto()))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(tensors, {model.graph.input[0].name: x})


def _matches_original(m: LoadedModel, layers: list[str], rtol: float = 1e-4) -> None:
    """The torch module's raw tensors equal onnxruntime's on the original file."""
    h, w = m.input.height, m.input.width
    b = 2 if m.input.batch_ok else 1
    x = np.random.default_rng(5).random((b, 3, h, w), dtype=np.float32)
    got = m.extractor(layers, raw=True)(torch.from_numpy(x))
    refs = _original(m.path, [m.graph[n].output for n in layers], x)
    for name, ref in zip(layers, refs, strict=True):
        have = got[name].numpy()
        assert have.shape == ref.shape, (name, have.shape, ref.shape)
        scale = float(np.abs(ref).max()) or 1.0
        assert float(np.abs(have - ref).max()) / scale < rtol, name


def _lowered(m: LoadedModel, opset: int = 18) -> None:
    assert m.conversion is None, m.conversion
    assert m.parity is not None and m.parity.ok, m.parity
    assert any(f"opset {opset} -> 17" in s for s in m.canonicalization), m.canonicalization


def test_pad_with_axes_input(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Pad", ["r", "pads", "", "axes"], ["p"], name="pad", mode="reflect"),
        helper.make_node("Pad", ["p", "pads2", "cval"], ["y"], name="pad2"),
    ]
    inits = [_i64("pads", 1, 2, 0, 3), _i64("axes", -2, 3), _i64("pads2", 0, 0, 1, 1, 0, 0, 1, 1)]
    inits.append(_f32("cval", 0.5))
    p = _save(tmp_path, nodes, ["N", 6, 15, 23], inits)
    m = load_model(p)
    _lowered(m)
    _matches_original(m, ["pad", "pad2"])


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_ops_with_axes_inputs(tmp_path: Path, keepdims: int) -> None:
    nodes = [
        helper.make_node("ReduceMax", ["r", "ax"], ["mx"], name="max", keepdims=1),
        helper.make_node("ReduceMean", ["mx", "ax2"], ["y"], name="mean", keepdims=keepdims),
        helper.make_node("ReduceMin", ["r", "none"], ["mn"], name="noop", noop_with_empty_axes=1),
        helper.make_node("ReduceL2", ["mn"], ["l2"], name="all"),
    ]
    out = ["N", 6, 1, 1] if keepdims else ["N", 6]
    inits = [
        _i64("ax", 2),
        _i64("ax2", 2, 3),
        numpy_helper.from_array(np.zeros(0, np.int64), "none"),
    ]
    p = _save(tmp_path, nodes, out, inits)
    model = onnx.load(str(p))
    model.graph.output.append(helper.make_tensor_value_info("l2", TensorProto.FLOAT, None))
    onnx.save(model, str(p))
    m = load_model(p)
    _lowered(m)
    assert m.graph["noop"].shape[1:] == (6, 12, 16)  # noop_with_empty_axes: the input itself
    _matches_original(m, ["max", "mean", "noop", "all"])


def test_split_with_num_outputs(tmp_path: Path) -> None:
    """Split v18 with 3 outputs of 7 channels: 3, 3, 1 (the last one is the smaller)."""
    nodes = [
        helper.make_node("Conv", ["r", "w7"], ["c7"], name="conv7"),
        helper.make_node("Split", ["c7"], ["s0", "s1", "s2"], name="split", axis=1, num_outputs=3),
        helper.make_node("Concat", ["s2", "s0"], ["y"], name="cat", axis=1),
    ]
    p = _save(tmp_path, nodes, ["N", 4, 12, 16], [_w("w7", 7, 6, 1, 1)])
    m = load_model(p)
    _lowered(m)
    assert [m.graph[n].channels for n in ("split", "split:1", "split:2")] == [3, 3, 1]
    _matches_original(m, ["split", "split:1", "split:2", "cat"])


_NEAREST = {
    "mode": "nearest",
    "coordinate_transformation_mode": "asymmetric",
    "nearest_mode": "floor",
}


@pytest.mark.parametrize(
    ("inputs", "attrs", "out"),
    [
        (["", "sc2"], {"axes": [2, 3], **_NEAREST}, [24, 32]),
        (["", "sc2"], {"axes": [3, 2], "mode": "linear"}, [24, 32]),
        (
            ["", "", "sz2"],
            {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger", "mode": "linear"},
            [15, 20],
        ),
        (
            ["", "", "sz2"],
            {"axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller", "mode": "linear"},
            [18, 24],
        ),
        (
            ["", "", "sz4"],
            {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
            [20, 24],
        ),
    ],
    ids=["scales-axes-nearest", "scales-axes-linear", "not-larger", "not-smaller", "sizes"],
)
def test_resize_variants(tmp_path: Path, inputs, attrs, out) -> None:
    nodes = [helper.make_node("Resize", ["r", *inputs], ["y"], name="resize", **attrs)]
    inits = [_f32("sc2", 2.0, 2.0), _i64("sz2", 18, 20), _i64("sz4", 1, 6, 20, 24)]
    p = _save(tmp_path, nodes, ["N", 6, *out], inits)
    m = load_model(p)
    _lowered(m)
    assert m.graph["resize"].shape[2:] == tuple(out)
    _matches_original(m, ["resize"])


def test_what_opset_17_cannot_say_stops_the_conversion_there(tmp_path: Path) -> None:
    """Resize v19's half_pixel_symmetric has no opset-17 form: the conv and relu before it stay
    usable and the status names the Resize."""
    nodes = [
        helper.make_node(
            "Resize", ["r", "", "sc"], ["y"], name="resize",
            coordinate_transformation_mode="half_pixel_symmetric", mode="linear",
        )
    ]  # fmt: skip
    p = _save(tmp_path, nodes, ["N", 6, 24, 32], [_f32("sc", 1, 1, 2, 2)], opset=19)
    m = load_model(p)
    assert m.conversion is not None and m.conversion.stopped_at == "resize"
    assert [x.name for x in m.graph.layers] == ["conv", "relu"]
    assert m.parity is not None and m.parity.ok
    _matches_original(m, ["relu"])


@pytest.mark.parametrize("arch", ["resnet18", "convnext_tiny"])
def test_dynamo_exports_at_their_default_opset(model_cache: Path, arch: str) -> None:
    """torch's dynamo exporter (opset 20 in torch 2.14: Reshape allowzero, ReduceMean with axes
    input, Gelu v20) -- small input sizes, the full torchvision architectures."""
    path = test_models.cached_export(
        model_cache, arch, lambda: test_models.build_torchvision(arch), size=64, dynamo=True
    )
    opset = next(o.version for o in onnx.load(str(path)).opset_import if o.domain == "")
    assert opset >= 18
    m = load_model(path)
    _lowered(m, opset)
    feature = m.parity.feature_layer
    assert feature is not None
    _matches_original(m, [m.graph.logits_name, feature])


def test_dynamo_export_of_a_vision_transformer(model_cache: Path) -> None:
    path = test_models.cached_export(
        model_cache, "tiny_vit", test_models.tiny_vit, size=32, dynamo=True
    )
    m = load_model(path)
    assert m.conversion is None and m.parity is not None and m.parity.ok, m.parity
    tokens = [x for x in m.graph.layers if x.kind == "tokens"]
    assert tokens and all(x.grid == (4, 4) for x in tokens)
    _matches_original(m, [m.graph.logits_name, tokens[len(tokens) // 2].name])
