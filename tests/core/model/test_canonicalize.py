"""Graph repair on small hand-built ONNX graphs: each known real-world problem, one test.

Every case checks that the model loads, that the torch module matches onnxruntime (parity on the
outputs and a feature map), and that the user's nodes are still targetable layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.loader import load_model
from tests import builders as B
from tests import models as test_models

RNG = np.random.default_rng(0)


def _w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return B.weight(RNG, name, *shape, scale=scale)


_vi = B.tensor


def _save(tmp_path: Path, nodes, inputs, outputs, inits, *, opset=17, ir=8, name="m.onnx") -> Path:
    return B.save_onnx(
        B.onnx_model(nodes, inputs, outputs, inits, opset=opset, ir=ir), tmp_path / name
    )


def _classifier(tmp_path: Path, nodes, src: str, channels: int, **weights: tuple) -> Path:
    """``nodes`` (reading "x", 1x3x15x15, writing ``src``) then ``_head``; ``weights``: the
    shapes of their random initializers (drawn after the head's, as the tests always did)."""
    head, head_w = _head(src, channels)
    inits = [_w(name, *shape) for name, shape in weights.items()]
    return _save(
        tmp_path,
        nodes + head,
        [_vi("x", [1, 3, 15, 15])],
        [_vi("logits", [1, 5])],
        [*inits, *head_w],
    )


def _head(src: str, channels: int, classes: int = 5) -> tuple[list, list]:
    """GlobalAveragePool -> Flatten -> Gemm (logits) after tensor ``src``."""
    nodes = [
        helper.make_node("GlobalAveragePool", [src], ["gap"], name="head/pool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="head/flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="head/fc", transB=1),
    ]
    return nodes, [_w("fc_w", classes, channels), _w("fc_b", classes)]


def _ok(m: LoadedModel) -> LoadedModel:
    assert m.parity is not None and m.parity.ok, m.parity
    assert m.parity.feature_rel_diff is not None
    x = torch.rand(1, m.input.channels, m.input.height, m.input.width, requires_grad=True)
    feats = [x_.name for x_ in m.graph.layers if x_.kind == "feature"]
    m.extractor([feats[0]])(m.prepare_input(x))[feats[0]].mean().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    return m


# -- weights made by nodes ------------------------------------------------------------------
def test_identity_and_constant_weights(tmp_path: Path) -> None:
    """torch's exporter dedups equal weights through Identity; old exporters emit Constant nodes."""
    w = _w("w", 8, 3, 3, 3)
    const_w = helper.make_node(
        "Constant",
        [],
        ["w2"],
        name="",
        value=numpy_helper.from_array(np.ones((8, 8, 3, 3), np.float32) * 0.05),
    )
    nodes = [
        helper.make_node("Identity", ["w"], ["w_dup"], name="dedup"),
        helper.make_node("Conv", ["x", "w_dup"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        const_w,
        helper.make_node("Identity", ["w2"], ["w2_dup"], name="dedup2"),
        helper.make_node("Conv", ["r1", "w2_dup"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    head, head_w = _head("r2", 8)
    p = _save(
        tmp_path,
        nodes + head,
        [_vi("x", ["N", 3, 16, 16])],
        [_vi("logits", ["N", 5])],
        [w, *head_w],
    )
    m = _ok(load_model(p))
    assert any("Identity x2" in s and "Constant x1" in s for s in m.canonicalization), (
        m.canonicalization
    )
    assert [x.name for x in m.graph.layers][:4] == ["conv1", "relu1", "conv2", "relu2"]
    assert "dedup" not in m.graph and m.graph.logits_name == "head/fc"


def test_constant_of_shape_weights_and_old_ir_inputs(tmp_path: Path) -> None:
    """Legacy zoo style: IR 3, every initializer listed as an input, the image at position 23,
    weights made by ConstantOfShape, no shape information at all."""
    inits, inputs, nodes = [], [], []
    for i in range(30):  # leftover initializers listed as inputs, most unused
        t = numpy_helper.from_array(np.full((2,), i, np.float32), f"unused_{i}")
        inits.append(t)
        inputs.append(_vi(t.name, [2]))
    shape = numpy_helper.from_array(np.array([8, 3, 3, 3], np.int64), "w_shape")
    inits.append(shape)
    inputs.append(_vi("w_shape", [4], TensorProto.INT64))
    inputs.insert(23, _vi("data_0", [1, 3, 16, 16]))
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["w_shape"],
            ["w"],
            value=numpy_helper.from_array(np.array([0.02], np.float32)),
        ),
        helper.make_node("Conv", ["data_0", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("Softmax", ["g"], ["prob"]),
    ]
    p = _save(tmp_path, nodes, inputs, [_vi("prob", [1, 8, 1, 1])], inits, opset=9, ir=3)
    m = _ok(load_model(p))
    assert (m.input.name, m.input.index) == ("data_0", 0)
    assert not m.extra_inputs  # the 30 leftovers were pruned
    steps = " | ".join(m.canonicalization)
    assert (
        "named 6 unnamed nodes" in steps
        and "removed 31 initializers listed as graph inputs" in steps
    )
    assert "ConstantOfShape x1" in steps
    assert [x.name for x in m.graph.layers] == [
        "Conv_1",
        "Relu_2",
        "AveragePool_3",
        "GlobalAveragePool_4",
        "Softmax_5",
    ]
    # N x K x 1 x 1 outputs are vectors; the logits are the pre-softmax scores.
    assert m.graph["Softmax_5"].kind == "vector" and m.graph.logits_name == "GlobalAveragePool_4"


def test_names_are_made_unique_and_stable(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="block"),
        helper.make_node("Relu", ["a"], ["b"], name="block"),
        helper.make_node("Relu", ["b"], ["c"], name="block.1"),
        helper.make_node("Relu", ["c"], ["d"], name="block/1"),  # same module name as block.1
        helper.make_node("Relu", ["d"], ["e"], name=""),
        helper.make_node("Relu", ["e"], ["f"], name="initializers"),  # onnx2torch's container
        helper.make_node("Relu", ["f"], ["g"], name="eval"),  # an nn.Module attribute
        helper.make_node("Relu", ["g"], ["h"], name="Relu_4"),  # what the unnamed one would get
    ]
    p = _save(tmp_path, nodes, [_vi("x", [1, 3, 8, 8])], [_vi("h", [1, 3, 8, 8])], [])
    names = [x.name for x in load_model(p).graph.layers]
    expected = ["block", "block_1", "block.1", "block/1_1", "Relu_4_1", "initializers_1"]
    assert names == [*expected, "eval_1", "Relu_4"]
    assert len({n.replace(".", "/") for n in names}) == len(names)
    assert names == [x.name for x in load_model(p).graph.layers]  # stable


# -- opsets --------------------------------------------------------------------------------
def test_reduce_mean_v18_is_converted(tmp_path: Path) -> None:
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r", "axes"], ["m"], name="mean", keepdims=0),
        helper.make_node("Gemm", ["m", "fc_w"], ["logits"], name="fc", transB=1),
    ]
    inits = [_w("w", 6, 3, 3, 3), axes, _w("fc_w", 4, 6)]
    p = _save(
        tmp_path, nodes, [_vi("x", ["N", 3, 16, 16])], [_vi("logits", ["N", 4])], inits, opset=18
    )
    m = _ok(load_model(p))
    assert any("opset 18 -> 17" in s for s in m.canonicalization)
    assert [x.name for x in m.graph.layers] == ["conv", "relu", "mean", "fc"]


@pytest.mark.parametrize("opset", [19, 20])
def test_identity_on_activations_at_new_opsets(tmp_path: Path, opset: int) -> None:
    """onnx2torch has no Identity converter past v16; the node stays and the opset is lowered."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["c"], ["i"], name="ident"),
        helper.make_node("Relu", ["i"], ["r"], name="relu"),
    ]
    head, head_w = _head("r", 6)
    p = _save(
        tmp_path,
        nodes + head,
        [_vi("x", [1, 3, 16, 16])],
        [_vi("logits", [1, 5])],
        [_w("w", 6, 3, 3, 3), *head_w],
        opset=opset,
    )
    m = _ok(load_model(p))
    assert "ident" in m.graph and any(f"opset {opset} -> 17" in s for s in m.canonicalization)


@pytest.mark.parametrize("opset", [18, 20])
def test_torch_exports_at_newer_opsets(model_cache: Path, tmp_path: Path, opset: int) -> None:
    """torch 2.14's classic exporter defaults to opset 20."""
    path = tmp_path / f"small_op{opset}.onnx"
    torch.manual_seed(0)
    test_models.export_onnx(test_models._SmallNet().eval(), path, size=32, opset=opset)
    m = _ok(load_model(path))
    assert m.graph.logits_name == "/fc/Gemm"


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_v20_is_expanded_from_its_onnx_function(tmp_path: Path, approximate: str) -> None:
    """Gelu (opset 20, torch 2.14's default export of ConvNeXt/ViT) has no converter and no
    down-conversion; ONNX's own function body replaces it and the node stays a layer."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Gelu", ["c"], ["g"], name="gelu", approximate=approximate),
    ]
    head, head_w = _head("g", 6)
    inits = [_w("w", 6, 3, 3, 3, scale=1.0), *head_w]
    p = _save(
        tmp_path,
        nodes + head,
        [_vi("x", ["N", 3, 16, 16])],
        [_vi("logits", ["N", 5])],
        inits,
        opset=20,
    )
    m = _ok(load_model(p))
    assert any("Gelu x1" in s for s in m.canonicalization), m.canonicalization
    assert m.graph["gelu"].op == "Gelu" and m.graph["gelu"].output == "g"
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = _ort_tensor(m, "g", x)
    got = m.extractor(["gelu"])(torch.from_numpy(x))["gelu"].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_channels_last_maps_are_reported_nchw(tmp_path: Path) -> None:
    """ConvNeXt-style blocks: Transpose to NHWC, LayerNorm + MatMul on channels, back to NCHW."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t", "ln_s", "ln_b"], ["ln"], name="norm", axis=-1),
        helper.make_node("MatMul", ["ln", "mm"], ["lin"], name="linear"),
        helper.make_node("Relu", ["lin"], ["act"], name="act"),
        helper.make_node("Transpose", ["act"], ["back"], name="to_nchw", perm=[0, 3, 1, 2]),
    ]
    head, head_w = _head("back", 10)
    inits = [_w("w", 6, 3, 3, 3), _w("ln_s", 6), _w("ln_b", 6), _w("mm", 6, 10), *head_w]
    p = _save(
        tmp_path, nodes + head, [_vi("x", ["N", 3, 12, 16])], [_vi("logits", ["N", 5])], inits
    )
    m = _ok(load_model(p))
    layouts = {x.name: (x.layout, x.shape) for x in m.graph.layers if x.kind == "feature"}
    assert layouts["conv"] == ("NCHW", (None, 6, 12, 16))
    assert layouts["to_nhwc"] == ("NHWC", (None, 6, 12, 16))
    assert layouts["act"] == ("NHWC", (None, 10, 12, 16))
    assert layouts["to_nchw"] == ("NCHW", (None, 10, 12, 16))
    x = torch.rand(2, 3, 12, 16)
    acts = m.activations(x, ["act", "to_nchw"])
    assert acts["act"].shape == (2, 10, 12, 16)
    torch.testing.assert_close(acts["act"], acts["to_nchw"])
    with m.capture(["act"]) as store:
        m.forward(x)
    torch.testing.assert_close(store["act"], acts["act"])
    assert m.parity is not None and m.parity.ok


def test_unsupported_ops_counter() -> None:
    nodes = [helper.make_node("Hardmax", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    graph = helper.make_graph(nodes, "g", [_vi("x", [1, 4])], [_vi("z", [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert canon.unsupported_ops(model) == {"Hardmax (opset 17)": 1}


# -- padding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("ceil", [0, 1])
def test_asymmetric_average_pool(tmp_path: Path, include: int, ceil: int) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node(
            "AveragePool",
            ["c"],
            ["p"],
            name="pool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[0, 1, 2, 1],
            count_include_pad=include,
            ceil_mode=ceil,
        ),
        helper.make_node("Relu", ["p"], ["r"], name="relu"),
    ]
    p = _classifier(tmp_path, nodes, "r", 4, w=(4, 3, 2, 2))
    m = _ok(load_model(p))
    assert any("asymmetric AveragePool" in s for s in m.canonicalization)
    pool = m.graph["pool"]
    assert pool.op == "AveragePool" and pool.output == "p"
    # The pooled map itself matches onnxruntime, not just what comes after it.
    from fvdesk.core.model.loader import compute_parity, pick_feature_layer

    assert pick_feature_layer(m) in m.graph
    ref = _ort_tensor(m, "p")
    x = torch.from_numpy(_PARITY_INPUT)
    got = m.extractor(["pool"])(x)["pool"].detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert compute_parity(m).ok


_PARITY_INPUT = np.random.default_rng(3).standard_normal((1, 3, 15, 15)).astype(np.float32)


def _ort_tensor(m: LoadedModel, tensor: str, x: np.ndarray = _PARITY_INPUT) -> np.ndarray:
    """A tensor of the ORIGINAL file, computed by onnxruntime on ``x``."""
    import onnxruntime as ort

    model = onnx.load(str(m.path))
    model.graph.output.append(helper.make_value_info(tensor, onnx.TypeProto()))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([tensor], {model.graph.input[0].name: x})[0]


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_same_auto_pad_becomes_explicit(tmp_path: Path, mode: str) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", auto_pad=mode, strides=[2, 2]),
        helper.make_node(
            "MaxPool", ["c"], ["p"], name="pool", auto_pad=mode, kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Relu", ["p"], ["r"], name="relu"),
    ]
    p = _classifier(tmp_path, nodes, "r", 4, w=(4, 3, 4, 4))
    m = _ok(load_model(p))
    assert any("SAME auto-paddings" in s for s in m.canonicalization)
    assert m.graph["conv"].shape[2:] == (8, 8) and m.graph["pool"].shape[2:] == (4, 4)


# -- dims, outputs, multi-output nodes --------------------------------------------------------
def test_negative_batch_dim_and_n_k_1_1_output(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["s"], name="classifier"),
        helper.make_node("GlobalAveragePool", ["s"], ["scores"], name="gap"),
    ]
    x = _vi("x", [-1, 3, 16, 16])
    p = _save(
        tmp_path,
        nodes,
        [x],
        [_vi("scores", [-1, 7, 1, 1])],
        [_w("w", 6, 3, 3, 3), _w("w2", 7, 6, 1, 1)],
    )
    m = _ok(load_model(p))
    assert m.input.max_batch is None and m.graph["conv"].shape == (None, 6, 16, 16)
    assert (
        m.graph.logits_name == "gap"
        and m.graph["gap"].kind == "vector"
        and m.graph["gap"].channels == 7
    )
    assert any("symbolic" in s for s in m.canonicalization)


def test_split_outputs_are_separate_layers(tmp_path: Path) -> None:
    sizes = numpy_helper.from_array(np.array([4, 4], np.int64), "sizes")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Split", ["c", "sizes"], ["s0", "s1"], name="split", axis=1),
        helper.make_node("Relu", ["s1"], ["r"], name="relu"),
    ]
    head, head_w = _head("r", 4)
    p = _save(
        tmp_path,
        nodes + head,
        [_vi("x", ["N", 3, 8, 8])],
        [_vi("logits", ["N", 5]), _vi("s0", ["N", 4, 8, 8])],
        [_w("w", 8, 3, 3, 3), sizes, *head_w],
        opset=13,
    )
    m = _ok(load_model(p))
    assert m.graph["split"].output == "s0" and m.graph["split:1"].output == "s1"
    acts = m.activations(torch.rand(2, 3, 8, 8), ["split", "split:1", "conv"])
    torch.testing.assert_close(torch.cat([acts["split"], acts["split:1"]], 1), acts["conv"])
    with m.capture(["split:1"]) as store:
        m.forward(torch.rand(1, 3, 8, 8))
    assert store["split:1"].shape == (1, 4, 8, 8)


def test_canonicalize_steps_on_a_torchvision_export(torchvision_onnx) -> None:
    """What the common path does (and does not do) to a modern export."""
    model = onnx.load(str(torchvision_onnx("resnet18")))
    before = [n.name for n in model.graph.node if n.op_type != "Identity"]
    report = canon.Report()
    canon.name_nodes(model, report)
    canon.check_and_sort(model, "resnet18", report)
    out = canon.canonicalize(model, where="resnet18", report=report)
    assert [n.name for n in out.graph.node] == before  # nothing fused, dropped or renamed
    assert report.steps == ["folded constant nodes into initializers (Identity x16)"]
    assert canon.known_shapes(out)["/layer1/layer1.0/relu/Relu_output_0"] == ("batch", 64, 56, 56)
