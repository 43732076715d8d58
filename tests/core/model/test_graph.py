"""The layer list and the name tree the GUI shows."""

from __future__ import annotations

import pytest

from fvdesk.core.model.graph import (
    NodeOutputs,
    build_tree,
    classify,
    find_layers,
    find_logits,
    format_tree,
    name_parts,
)
from fvdesk.core.model.layers import Layer, TreeNode
from fvdesk.core.model.loader import load_model


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("inception_3a/1x1", ["inception_3a", "1x1"]),
        ("/layer1/layer1.0/conv1/Conv", ["layer1", "layer1.0", "conv1", "Conv"]),
        ("features.3.expand1x1", ["features", "3", "expand1x1"]),
        ("node_Conv_12", ["node_Conv_12"]),
        ("Conv_12", ["Conv_12"]),
        ("split:1", ["split:1"]),
        ("/stage2/Split:1", ["stage2", "Split:1"]),
        ("a//b/", ["a", "b"]),
    ],
)
def test_name_parts(name: str, parts: list[str]) -> None:
    assert name_parts(name) == parts


def _layer(name: str, c: int = 8, hw: int | None = 8, op: str = "Conv", i: int = 0) -> Layer:
    shape = (None, c, hw, hw) if hw else (None, c)
    return Layer(name, name + "_out", op, shape, "feature" if hw else "vector", i)


def _labels(node: TreeNode) -> list[str]:
    return [c.label for c in node.children]


def test_tree_groups_collapses_and_keeps_order() -> None:
    layers = [
        _layer("/conv1/Conv"),
        _layer("/layer1/layer1.0/conv1/Conv"),
        _layer("/layer1/layer1.0/relu/Relu", op="Relu"),
        _layer("/layer1/layer1.1/conv1/Conv"),
        _layer("/fc/Gemm", hw=None, op="Gemm"),
    ]
    tree = build_tree(layers, "net")
    assert _labels(tree) == ["conv1/Conv", "layer1", "fc/Gemm"]
    layer1 = tree.children[1]
    assert _labels(layer1) == ["layer1.0", "layer1.1/conv1/Conv"]
    assert _labels(layer1.children[0]) == ["conv1/Conv", "relu/Relu"]
    leaves = [n.layer.name for n in tree.walk() if n.layer is not None]
    assert leaves == [x.name for x in layers]
    assert all(n.path == n.layer.name for n in tree.walk() if n.layer is not None)


def test_a_name_can_be_layer_and_group() -> None:
    tree = build_tree([_layer("conv1/7x7_s2"), _layer("conv1"), _layer("conv1/relu", op="Relu")])
    (conv1,) = tree.children
    assert conv1.label == "conv1" and conv1.layer is not None and conv1.layer.name == "conv1"
    assert _labels(conv1) == ["7x7_s2", "relu"]


def test_flat_names_are_grouped_in_stages() -> None:
    sizes = [112, 112, 56, 56, 1, 56, 28, 28, 7, 1, None, None]
    ops = [
        "Conv",
        "Relu",
        "Conv",
        "Relu",
        "GlobalAveragePool",
        "Mul",
        "Conv",
        "Relu",
        "Conv",
        "GlobalAveragePool",
        "Gemm",
        "Softmax",
    ]
    layers = [
        _layer(f"n{i}", hw=hw, op=op, i=i)
        for i, (hw, op) in enumerate(zip(sizes, ops, strict=True))
    ]
    tree = build_tree(layers)
    assert _labels(tree) == [
        "stage 1 (112×112)",
        "stage 2 (56×56)",
        "stage 3 (28×28)",
        "stage 4 (7×7)/n8 (Conv)",
        "head",
    ]
    # The squeeze-excitation 1×1 map stays in its stage.
    assert _labels(tree.children[1]) == [
        "n2 (Conv)",
        "n3 (Relu)",
        "n4 (GlobalAveragePool)",
        "n5 (Mul)",
    ]
    assert _labels(tree.children[-1]) == ["n9 (GlobalAveragePool)", "n10 (Gemm)", "n11 (Softmax)"]
    # Names that already say the op are not repeated.
    tree = build_tree([_layer(f"Conv_{i}", hw=8, i=i) for i in range(10)])
    assert _labels(tree) == ["stage 1 (8×8)"] and _labels(tree.children[0])[0] == "Conv_0"


def test_classify_and_find_layers() -> None:
    assert classify((None, 64, 56, 56), is_output=False) == "feature"
    assert classify((None, 1000), is_output=False) == "vector"
    assert classify((None, 1000, 1, 1), is_output=True) == "vector"
    assert classify((None, 1000, 1, 1), is_output=False) == "feature"
    assert classify((None, 197, 768), is_output=False) is None
    assert classify(None, is_output=False) is None
    nodes = [NodeOutputs("split", "Split", ("a", "b")), NodeOutputs("shape", "Shape", ("s",))]
    shapes = {"a": (None, 4, 8, 8), "b": (None, 4, 8, 8), "s": (4,)}
    layers = find_layers(nodes, shapes, {"a", "b"}, ["b"])
    assert [(x.name, x.output, x.index) for x in layers] == [("split", "a", 0), ("split:1", "b", 1)]


def test_logits_walk_back_from_softmax() -> None:
    layers = [_layer("fc", c=10, hw=None, op="Gemm"), _layer("prob", c=10, hw=None, op="Softmax")]
    layers = [Layer(x.name, x.name, x.op, x.shape, x.kind, i) for i, x in enumerate(layers)]
    assert (
        find_logits(layers, ["prob"], {"prob": ("Softmax", "fc"), "fc": ("Gemm", "flat")}) == "fc"
    )
    assert find_logits(layers, ["fc"], {}) == "fc"
    assert find_logits(layers[:1], ["other"], {}) == "fc"  # no vector output: the last vector
    # PP-OCR's direction classifier renames its softmax with an Identity output
    out = [*layers, Layer("out", "out", "Identity", (None, 10), "vector", 2)]
    producers = {"out": ("Identity", "prob"), "prob": ("Softmax", "fc"), "fc": ("Gemm", "flat")}
    assert find_logits(out, ["out"], producers) == "fc"


def test_googlenet_tree(torchvision_onnx) -> None:
    m = load_model(torchvision_onnx("googlenet"), check_parity=False)
    text = format_tree(m.graph.tree, depth=2)
    print(text)
    top = _labels(m.graph.tree)
    assert top[:3] == ["conv1", "maxpool1/MaxPool", "conv2"]
    assert [t for t in top if t.startswith("inception")] == [
        "inception3a",
        "inception3b",
        "inception4a",
        "inception4b",
        "inception4c",
        "inception4d",
        "inception4e",
        "inception5a",
        "inception5b",
    ]
    assert top[-3:] == ["avgpool/GlobalAveragePool", "Flatten", "fc/Gemm"]
    i3a = next(c for c in m.graph.tree.children if c.label == "inception3a")
    assert _labels(i3a) == ["branch1", "branch2", "branch3", "branch4", "Concat"]
    assert i3a.children[-1].layer.shape == (None, 256, 28, 28)
    assert m.graph["/inception4a/Concat"].shape == (None, 512, 14, 14)
    assert m.graph["/inception5b/Concat"].shape == (None, 1024, 7, 7)
    assert m.graph["/fc/Gemm"].kind == "vector" and m.graph.logits_name == "/fc/Gemm"
    assert "inception3a  (14 layers)" in text and "fc/Gemm  [None, 1000]" in text
    # Suggestions for near misses (dots vs slashes).
    assert "/inception4a/Concat" in m.graph.suggest("inception4a.Concat")
