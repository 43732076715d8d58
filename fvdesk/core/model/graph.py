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

import collections
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
    # rank-preserving data movement: Swin's patch merging slices and concatenates NHWC maps
    "Slice", "Pad", "Concat", "Split",
}  # fmt: skip


# Ops whose rank-4 outputs are NCHW by definition.
_NCHW_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "InstanceNormalization", "LRN", "DepthToSpace", "SpaceToDepth",
    "Upsample", "Resize", "LpPool", "GlobalLpPool", "MaxUnpool", "DeformConv",
}  # fmt: skip


def _aspect(h: object, w: object, hw: tuple[int, int]) -> bool:
    """Whether (h, w) has the image's aspect ratio (within 10%): a spatial grid of the input."""
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        return False
    H, W = hw
    return abs(h * W - w * H) <= 0.1 * w * H


def layout_from_shape(shape: Shape | None, hw: tuple[int, int] | None) -> str:
    """ "NHWC" when only the channels-last reading of a rank-4 shape is a spatial grid of the
    input (Swin's ``(N, 56, 56, 96)`` after a Reshape), else "NCHW"."""
    if hw is None or shape is None or len(shape) != 4:
        return "NCHW"
    _, a, b, c = shape
    return "NHWC" if _aspect(a, b, hw) and not _aspect(b, c, hw) else "NCHW"


def tensor_layouts(
    graph_nodes: Iterable[Any],
    image: str,
    image_layout: str,
    shapes: Mapping[str, Shape | None] | None = None,
    image_hw: tuple[int, int] | None = None,
) -> dict[str, str]:
    """Which rank-4 tensors are channels-last ("NHWC"): propagated from the image input through
    ``Transpose`` (perm 0,2,3,1 / 0,3,1,2) and layout-preserving ops.  Conv, pooling and
    normalization outputs are NCHW; other ops (Reshape, Slice, Concat ...) are judged by their
    shape when ``shapes`` and the image size are given, else NCHW.  ``graph_nodes`` are ONNX
    NodeProtos.
    """
    shapes = shapes or {}
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
            if n.op_type in _NCHW_OPS:
                layout[o] = "NCHW"
            else:
                layout[o] = layout_from_shape(shapes.get(o), image_hw)
    return layout


#: Extra (non-patch) tokens a token sequence may start with: class, distillation, registers.
MAX_EXTRA_TOKENS = 8


def token_grid(
    count: int | None, grids: set[tuple[int, int]], hw: tuple[int, int] | None
) -> tuple[int, int, int] | None:
    """(extra tokens, rows, cols) when ``count`` tokens are a few extra tokens plus a patch grid.

    The grid must be the spatial size of one of the model's feature maps (the patch embedding's
    output); a model without feature maps needs a grid with the input's aspect ratio.
    """
    if not isinstance(count, int) or count < 4:
        return None
    for extra in range(MAX_EXTRA_TOKENS + 1):
        p = count - extra
        if p < 4:
            break
        if grids:
            for gh, gw in sorted(grids):
                if gh * gw == p and gh > 1 and gw > 1:
                    return extra, gh, gw
        elif hw is not None:
            for gh in range(2, p // 2 + 1):
                if p % gh == 0 and gh * hw[1] == (p // gh) * hw[0]:
                    return extra, gh, p // gh
    return None


def find_layers(
    nodes: Sequence[NodeOutputs],
    shapes: Mapping[str, Shape | None],
    float_tensors: set[str],
    graph_outputs: Sequence[str],
    layouts: Mapping[str, str] | None = None,
    *,
    image_hw: tuple[int, int] | None = None,
) -> list[Layer]:
    """Every float node output of rank 4 or 2 (plus N x K x 1 x 1 graph outputs), in graph order,
    and, given the image size, the token sequences and attention tensors of transformers.

    ``float_tensors`` holds the tensors that are float and per image (dim 0 is the batch).
    Channels-last maps (``layouts[t] == "NHWC"``) are reported with their shape in NCHW order.
    """
    outs = set(graph_outputs)
    layouts = layouts or {}
    found: list[tuple[str, str, str, Shape]] = []  # (layer name, tensor, op, shape)
    for node in nodes:
        for k, t in enumerate(node.outputs):
            shape = shapes.get(t)
            if t and t in float_tensors and shape is not None:
                found.append((layer_name(node.name, k), t, node.op, tuple(shape)))
    # Spatial grids of the model: the sizes of maps that convolutions and pooling produce (the
    # patch embedding of a vision transformer among them), or that are channels-last.
    grids: set[tuple[int, int]] = set()
    for _, t, op, shape in found:
        nhwc = layouts.get(t) == "NHWC"
        if len(shape) == 4 and (op in _NCHW_OPS or nhwc):
            h, w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
            if isinstance(h, int) and isinstance(w, int):
                grids.add((h, w))
    tokens: dict[str, tuple[str, tuple[int, int, int]]] = {}
    for _, t, _, shape in found:
        if len(shape) == 3 and image_hw is not None:
            geo = token_grid(shape[1], grids, image_hw)
            if geo is not None:
                tokens[t] = ("NTC", geo)
            elif (geo := token_grid(shape[2], grids, image_hw)) is not None:
                tokens[t] = ("NCT", geo)
    # Token counts, the residual stream's (the most frequent) first.
    counts = [
        n
        for n, _ in collections.Counter(
            g[0] + g[1] * g[2] for _, g in tokens.values()
        ).most_common()
    ]
    layers: list[Layer] = []
    for name, t, op, shape in found:
        i = len(layers)
        if t in tokens:
            lay, (extra, gh, gw) = tokens[t]
            layers.append(Layer(name, t, op, shape, "tokens", i, lay, (gh, gw), extra))  # type: ignore[arg-type]  # shape holds ints here
            continue
        if len(shape) == 4 and counts:
            axes = _attention_axes(shape, counts, grids)
            if axes == ():
                continue  # token-major internals (N, T, heads, dims): not per-unit tensors
            if axes is not None:
                layers.append(Layer(name, t, op, shape, "attention", i, axes=axes))
                continue
        kind = classify(shape, is_output=t in outs)
        if kind is None:
            continue
        if len(shape) == 4 and layouts.get(t) == "NHWC":
            n_, h, w, c = shape
            layers.append(Layer(name, t, op, (n_, c, h, w), "feature", i, "NHWC"))
            continue
        layers.append(Layer(name, t, op, shape, kind, i))  # type: ignore[arg-type]  # shape holds ints here
    return layers


def _attention_axes(
    shape: Shape, counts: list[int], grids: set[tuple[int, int]]
) -> tuple[str, ...] | None:
    """Axis names of a per-head attention tensor, () for token-major internals, None otherwise.

    ``counts`` are the model's token counts, the residual stream's first: it decides when a head
    dimension happens to equal another count (a small model's 16 dims and 4×4 patches)."""
    _, a, b, c = shape
    if (b, c) in grids or (a, b) in grids:  # a feature map, channels first or last
        return None
    if a in counts[:1] and a not in (b, c):
        return ()  # (N, tokens, heads, dims) on the way into or out of the heads
    if b == c and b in counts:
        return ("heads", "queries", "keys")
    for group in (counts[:1], counts):
        if b in group:
            return ("heads", "tokens", "dims")
        if c in group:
            return ("heads", "dims", "tokens")
    if a in counts:
        return ()
    return None


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
        while op == "Identity" and seen < 4 and src:  # an output renamed after its softmax
            t, seen = src, seen + 1
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


def short_name(name: str) -> str:
    """``/features/block3/relu/Relu`` -> ``block3/relu``: the last two parts of a layer's path,
    without a trailing part that is an ONNX op type (exporters end node names in it), and
    ``:k`` kept.  For texts with little room; captions and files keep the full name."""
    import onnx.defs

    base, sep, out = name.partition(":") if name.rsplit(":", 1)[-1].isdigit() else (name, "", "")
    parts = [p for p in base.split("/") if p]
    if len(parts) > 1 and onnx.defs.has(parts[-1].split("_")[0]):
        parts = parts[:-1]
    short = "/".join(parts[-2:]) or name
    return short + (sep + out if sep else "")


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


def build_layer_graph(
    layers: list[Layer],
    logits: str | None,
    title: str = "model",
    *,
    unavailable: list[Layer] | None = None,
) -> LayerGraph:
    """The ``LayerGraph`` the GUI, CLI and engine use (the tree also holds ``unavailable``)."""
    everything = sorted([*layers, *(unavailable or [])], key=lambda x: x.index)
    return LayerGraph(layers, build_tree(everything, title), logits, unavailable)


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
