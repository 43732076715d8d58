"""Layer discovery and the layer tree.

A *layer* is any output of a user-visible ONNX node that is a feature map (N, C, H, W) or a vector
(N, C); classifier outputs shaped N x K x 1 x 1 count as vectors.  Shapes come from onnx shape
inference; dims it leaves unknown (or symbolic, like a dynamic height) come from a probe forward
pass of the torch module at the default size.

The tree groups layers by their names: ``/layer1/layer1.0/conv1/Conv`` and ``inception_3a/1x1``
split on ``/``; ``features.3.expand1x1`` (no ``/``) splits on ``.``.  Flat names (``Conv_12``,
``node_Conv_12``, ``n12``) carry no structure, so when most layers are flat they are grouped into
consecutive stages of equal spatial resolution, e.g. ``stage 2 (56×56)``, and a ``head`` for the
vectors at the end.  Groups with a single child are collapsed into it (``conv1/Conv``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fvdesk.core.model.layers import Layer, LayerGraph, TreeNode

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class NodeOutputs:
    """A user-visible ONNX node: its name, op type and output tensor names (in order)."""

    name: str
    op: str
    outputs: tuple[str, ...]


def layer_name(node: str, k: int) -> str:
    """The user-facing id of output ``k`` of ``node``."""
    return node if k == 0 else f"{node}:{k}"


def classify(shape: Shape | None, *, is_output: bool) -> str | None:
    """'feature', 'vector' or None (not a layer) for a tensor shape, batch first."""
    if shape is None:
        return None
    if len(shape) == 2:
        return "vector"
    if len(shape) == 4:
        if is_output and shape[2] == 1 and shape[3] == 1:
            return "vector"
        return "feature"
    return None


# Ops that keep a channels-last tensor channels-last (they act elementwise or on the last axis).
_KEEPS_LAYOUT = {
    "Abs", "Add", "Cast", "Clip", "Div", "Dropout", "Elu", "Erf", "Exp", "Gelu", "HardSigmoid",
    "HardSwish", "Identity", "LayerNormalization", "LeakyRelu", "Log", "MatMul", "Max", "Min",
    "Mish", "Mul", "Neg", "Pow", "PRelu", "Reciprocal", "Relu", "Selu", "Sigmoid", "Softplus",
    "Sqrt", "Sub", "Sum", "Tanh", "Where",
}  # fmt: skip


def tensor_layouts(graph_nodes: Iterable[Any], image: str, image_layout: str) -> dict[str, str]:
    """Which rank-4 tensors are channels-last ("NHWC"): propagated from the image input through
    ``Transpose`` (perm 0,2,3,1 / 0,3,1,2) and layout-preserving ops.  Everything else is NCHW,
    the convention of Conv, pooling and BatchNormalization.  ``graph_nodes`` are ONNX NodeProtos.
    """
    layout = {image: image_layout}
    for n in graph_nodes:
        if n.op_type == "Transpose":
            perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), None)
            src = layout.get(n.input[0]) if n.input else None
            out = None
            if perm == [0, 1, 2, 3]:
                out = src
            elif perm == [0, 2, 3, 1] and src == "NCHW":
                out = "NHWC"
            elif perm == [0, 3, 1, 2] and src == "NHWC":
                out = "NCHW"
            if out is not None:
                layout[n.output[0]] = out
            continue
        if n.op_type in _KEEPS_LAYOUT:
            src = next((layout[x] for x in n.input if x in layout), None)
            if src is not None:
                for o in n.output:
                    layout[o] = src
            continue
        for o in n.output:
            layout[o] = "NCHW"
    return layout


def find_layers(
    nodes: Sequence[NodeOutputs],
    shapes: Mapping[str, Shape | None],
    float_tensors: set[str],
    graph_outputs: Sequence[str],
    layouts: Mapping[str, str] | None = None,
) -> list[Layer]:
    """Every float node output of rank 4 or 2 (plus N x K x 1 x 1 graph outputs), in graph order.

    Channels-last maps (``layouts[t] == "NHWC"``) are reported with their shape in NCHW order.
    """
    layers: list[Layer] = []
    outs = set(graph_outputs)
    layouts = layouts or {}
    for node in nodes:
        for k, t in enumerate(node.outputs):
            if not t or t not in float_tensors:
                continue
            shape = shapes.get(t)
            kind = classify(shape, is_output=t in outs)
            if kind is None or shape is None:
                continue
            if len(shape) == 4 and layouts.get(t) == "NHWC":
                n_, h, w, c = shape
                layers.append(
                    Layer(
                        layer_name(node.name, k),
                        t,
                        node.op,
                        (n_, c, h, w),
                        "feature",
                        len(layers),
                        "NHWC",
                    )
                )
                continue
            layers.append(
                Layer(layer_name(node.name, k), t, node.op, tuple(shape), kind, len(layers))
            )  # type: ignore[arg-type]
    return layers


def find_logits(
    layers: Sequence[Layer],
    graph_outputs: Sequence[str],
    producer_op: Mapping[str, tuple[str, str]],
) -> str | None:
    """The classifier layer: a graph output that is a vector, or the input of its final Softmax.

    ``producer_op`` maps a tensor to (op type, first input tensor) of the node producing it.
    """
    by_tensor = {x.output: x for x in layers}
    for out in graph_outputs:
        layer = by_tensor.get(out)
        if layer is None or layer.kind != "vector":
            continue
        # Walk back through Softmax / shape-only ops to the pre-softmax scores.
        t, seen = out, 0
        op, src = producer_op.get(t, ("", ""))
        if op in ("Softmax", "LogSoftmax", "Sigmoid"):
            t = src
            while seen < 4 and t not in by_tensor and t in producer_op:
                op, src = producer_op[t]
                if op not in ("Reshape", "Flatten", "Squeeze", "Identity", "Transpose"):
                    break
                t, seen = src, seen + 1
            pre = by_tensor.get(t)
            if pre is not None and pre.channels == layer.channels:
                return pre.name
        return layer.name
    vectors = [x for x in layers if x.kind == "vector"]
    return vectors[-1].name if vectors else None


# -- the tree --------------------------------------------------------------------------------
_SPLIT_SLASH = re.compile(r"/+")


def name_parts(name: str) -> list[str]:
    """``/layer1/layer1.0/conv1/Conv`` -> [layer1, layer1.0, conv1, Conv]; ``features.3.x`` -> [features, 3, x]."""
    base, colon, k = name.rpartition(":")
    if not (colon and k.isdigit() and base):
        base, k = name, ""
    stripped = base.strip("/")
    if "/" in stripped:
        parts = [p for p in _SPLIT_SLASH.split(stripped) if p]
    elif "." in stripped:
        parts = [p for p in stripped.split(".") if p]
    else:
        parts = [stripped or base]
    if k:
        parts[-1] = f"{parts[-1]}:{k}"
    return parts


def build_tree(layers: Sequence[Layer], title: str = "model") -> TreeNode:
    """The name tree (see module docstring); leaves hold the layers, in graph order.

    A name can be both a layer and a group (``conv1`` and ``conv1/relu``): that node holds the
    layer and has children.
    """
    root = TreeNode(title, "")
    split = [name_parts(x.name) for x in layers]
    flat = sum(1 for p in split if len(p) == 1)
    if layers and flat > len(layers) / 2 and len(layers) > 8:
        split = _stage_parts(layers, split)
    for layer, parts in zip(layers, split, strict=True):
        node = root
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, "/".join(parts[: depth + 1]))
        last = parts[-1]
        group = next((c for c in node.children if c.label == last and c.layer is None), None)
        if group is not None:
            group.layer, group.path = layer, layer.name
        else:
            node.children.append(TreeNode(last, layer.name, layer))
    root.children = [_collapse(c) for c in root.children]
    return root


def _child(node: TreeNode, label: str, path: str) -> TreeNode:
    for c in node.children:
        if c.label == label:
            return c
    c = TreeNode(label, path)
    node.children.append(c)
    return c


def _stage_parts(layers: Sequence[Layer], split: list[list[str]]) -> list[list[str]]:
    """Prefix flat names with a stage: consecutive feature maps of one spatial size.

    1×1 maps and vectors in the middle of the network (squeeze-excitation gates) stay in the
    current stage; those after the last real feature map form the ``head``.
    """

    def big(layer: Layer) -> bool:
        return layer.kind == "feature" and (layer.spatial or (0, 0)) not in ((1, 1), (0, 0))

    last_big = max((i for i, x in enumerate(layers) if big(x)), default=-1)
    out: list[list[str]] = []
    stage, current, label = 0, None, "head"
    for i, (layer, parts) in enumerate(zip(layers, split, strict=True)):
        if len(parts) > 1:
            out.append(parts)
            continue
        if i > last_big:
            label = "head"
        elif big(layer) and layer.spatial != current:
            current = layer.spatial
            stage += 1
            h, w = layer.spatial or (0, 0)
            label = f"stage {stage} ({h}×{w})"
        elif current is None:
            stage, current = 1, layer.spatial
            label = "stage 1"
        leaf = parts[0] if layer.op.lower() in parts[0].lower() else f"{parts[0]} ({layer.op})"
        out.append([label, leaf])
    return out


def _collapse(node: TreeNode) -> TreeNode:
    """Merge a group that has exactly one child into that child (``conv1`` > ``Conv`` -> ``conv1/Conv``)."""
    node.children = [_collapse(c) for c in node.children]
    if node.layer is None and len(node.children) == 1:
        child = node.children[0]
        return TreeNode(f"{node.label}/{child.label}", child.path, child.layer, child.children)
    return node


def build_layer_graph(layers: list[Layer], logits: str | None, title: str = "model") -> LayerGraph:
    """The ``LayerGraph`` the GUI, CLI and engine use."""
    return LayerGraph(layers, build_tree(layers, title), logits)


def format_tree(node: TreeNode, depth: int = 2, indent: str = "") -> str:
    """A text rendering of the top ``depth`` levels (for tests, the CLI and debugging)."""
    lines: list[str] = []

    def walk(n: TreeNode, level: int, pad: str) -> None:
        shape = f"  {list(n.layer.shape)}" if n.layer is not None else ""
        extra = (
            f"  ({sum(1 for x in n.walk() if x.layer is not None)} layers)" if n.children else ""
        )
        lines.append(f"{pad}{n.label}{shape}{extra}")
        if level < depth:
            for c in n.children:
                walk(c, level + 1, pad + "  ")

    walk(node, 0, indent)
    return "\n".join(lines)
