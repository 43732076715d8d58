"""Receptive fields from the ONNX graph: which input pixels a unit at a grid position can see.

For every tensor on a path from the image input, each spatial axis carries three numbers (the
receptive-field arithmetic of Dumoulin & Visin / Araujo et al.): ``size``, the extent in input
pixels a unit sees; ``jump``, the input distance between neighbouring units; ``start``, the
input coordinate of the centre of unit 0.  A Conv or pool with kernel ``k``, stride ``s``,
dilation ``d`` and leading pad ``p`` (explicit, or derived from ``auto_pad``) maps them to::

    k' = d (k - 1) + 1;  size += (k' - 1) jump;  start += ((k' - 1) / 2 - p) jump;  jump *= s

Elementwise and concatenating ops take the union of their inputs' fields.  Inputs that are
spatially 1x1 and broadcast (squeeze-excitation gates, biases) modulate channels without
localizing anything, so they do not widen the field: a crop shows where the unit looked, not
the global context that scaled it.  Global pooling, flattening, matrix products and any op not
understood here make the field the whole image (``full``), so a crop is never too small.
Torch-free; the graph is the canonical ``ModelProto`` a ``LoadedModel`` keeps.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_WINDOW_OPS = {"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"}
_GLOBAL_OPS = {
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Reshape", "Gemm", "MatMul",
    "Squeeze", "Unsqueeze", "MatMulInteger", "QLinearMatMul", "Einsum", "ConvTranspose",
    "SpaceToDepth", "DepthToSpace", "If", "Loop", "Scan",
}  # fmt: skip
_REDUCE_OPS = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceL1",
               "ReduceProd", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"}  # fmt: skip
#: Ops that never mix spatial positions (elementwise, per-position normalization, channel ops).
_POINTWISE = {
    "Abs", "Add", "And", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Cos",
    "DequantizeLinear", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu",
    "Greater", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "IsNaN",
    "LayerNormalization", "LeakyRelu", "Less", "Log", "LogSoftmax", "LRN", "Max", "Mean", "Min",
    "Mish", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "QuantizeLinear", "Reciprocal",
    "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Softmax", "Softplus",
    "Softsign", "Split", "Sqrt", "Sub", "Sum", "Tanh", "ThresholdedRelu", "Transpose", "Where",
    "Xor", "GroupNormalization", "Swish", "BiasGelu", "FastGelu",
}  # fmt: skip


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a tensor's field: extent, spacing and first centre in input pixels,
    and the tensor's length along the axis (``n``, None when unknown)."""

    size: float
    jump: float
    start: float
    n: int | None


@dataclass(frozen=True)
class ReceptiveField:
    """The field of a layer's units: per axis (y, x), or ``full`` (the whole image)."""

    y: Axis
    x: Axis
    full: bool = False
    input_size: tuple[int, int] = (0, 0)  # (height, width) of the model input it refers to

    @property
    def size(self) -> tuple[float, float]:
        return (self.y.size, self.x.size)

    @property
    def jump(self) -> tuple[float, float]:
        return (self.y.jump, self.x.jump)

    def box(self, gy: int, gx: int) -> tuple[float, float, float, float]:
        """Input pixels ``(x0, y0, x1, y1)`` (edges, clamped to the input) seen by unit
        ``(gy, gx)`` of the layer's grid; the whole input when the field is ``full``."""
        h, w = self.input_size
        if self.full:
            return (0.0, 0.0, float(w), float(h))
        cy = self.y.start + gy * self.y.jump
        cx = self.x.start + gx * self.x.jump
        y0, y1 = cy - (self.y.size - 1) / 2, cy + (self.y.size - 1) / 2 + 1
        x0, x1 = cx - (self.x.size - 1) / 2, cx + (self.x.size - 1) / 2 + 1
        return (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))

    def describe(self) -> str:
        if self.full:
            return "the whole image"
        return (
            f"{self.y.size:g}x{self.x.size:g} px, stride {self.y.jump:g}x{self.x.jump:g}"
            if self.size[0] != self.size[1] or self.jump[0] != self.jump[1]
            else f"{self.y.size:g} px, stride {self.y.jump:g}"
        )


_FULL = Axis(math.inf, 1.0, 0.0, None)


def _full(input_size: tuple[int, int]) -> ReceptiveField:
    return ReceptiveField(_FULL, _FULL, True, input_size)


# ------------------------------------------------------------------------------------------------
# Propagation
# ------------------------------------------------------------------------------------------------
def receptive_fields(
    onnx_model: Any, image_input: str, input_size: tuple[int, int]
) -> dict[str, ReceptiveField]:
    """The field of every tensor reachable from ``image_input`` (an input of ``input_size`` =
    (height, width) pixels), by tensor name."""
    from onnx import helper

    g = onnx_model.graph
    inits = {t.name: t for t in g.initializer}
    h, w = input_size
    fields: dict[str, ReceptiveField] = {
        image_input: ReceptiveField(Axis(1, 1, 0, h), Axis(1, 1, 0, w), False, (h, w))
    }
    for node in g.node:
        src = [fields[t] for t in node.input if t in fields]
        if not src:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out = _propagate(node.op_type, node, attrs, src, inits, (h, w))
        for t in node.output:
            if t:
                fields[t] = out
    return fields


def _propagate(op: str, node: Any, attrs: dict[str, Any], src: list[ReceptiveField],
               inits: dict[str, Any], size: tuple[int, int]) -> ReceptiveField:  # fmt: skip
    if any(f.full for f in src) and op not in _POINTWISE:
        return _full(size)
    if op in _WINDOW_OPS:
        return _window(op, node, attrs, src[0], inits, size)
    if op == "Pad":
        return _pad(node, attrs, src[0], inits, size)
    if op in ("Resize", "Upsample"):
        return _full(size)
    if op in _REDUCE_OPS:
        axes = attrs.get("axes")
        if axes is None and op.startswith("Reduce") and len(node.input) > 1:
            axes = _int_list(inits.get(node.input[1]))
        if axes is not None and all(
            a in (1, -3) for a in ([axes] if isinstance(axes, int) else axes)
        ):
            return src[0]  # a reduction over channels keeps the grid
        return _full(size)
    if op in _POINTWISE:
        return _union(src, size)
    return _full(size)  # unknown or global: the whole image, never too small


def _union(src: list[ReceptiveField], size: tuple[int, int]) -> ReceptiveField:
    spatial = [f for f in src if not f.full and not (f.y.n == 1 and f.x.n == 1)]
    if not spatial:  # only global or 1x1 inputs
        full = [f for f in src if f.full]
        return full[0] if full else src[0]
    if len(spatial) == 1:
        return spatial[0]
    return ReceptiveField(
        _union_axis([f.y for f in spatial]), _union_axis([f.x for f in spatial]), False, size
    )


def _union_axis(axes: Iterable[Axis]) -> Axis:
    axes = list(axes)
    lo = min(a.start - (a.size - 1) / 2 for a in axes)
    hi = max(a.start + (a.size - 1) / 2 for a in axes)
    ns = [a.n for a in axes if a.n is not None]
    return Axis(hi - lo + 1, max(a.jump for a in axes), (lo + hi) / 2, max(ns) if ns else None)


def _window(op: str, node: Any, attrs: dict[str, Any], f: ReceptiveField,
            inits: dict[str, Any], size: tuple[int, int]) -> ReceptiveField:  # fmt: skip
    kernel = attrs.get("kernel_shape")
    if kernel is None and op in ("Conv", "ConvInteger", "QLinearConv"):
        wi = node.input[3] if op == "QLinearConv" else node.input[1]
        t = inits.get(wi)
        kernel = list(t.dims[2:]) if t is not None else None
    if kernel is None or len(kernel) != 2:
        return _full(size)
    strides = list(attrs.get("strides") or [1, 1])
    dil = list(attrs.get("dilations") or [1, 1])
    pads = list(attrs.get("pads") or [0, 0, 0, 0])
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    ceil = bool(attrs.get("ceil_mode", 0))
    axes = []
    for i, a in enumerate((f.y, f.x)):
        k, s, d = int(kernel[i]), int(strides[i]), int(dil[i])
        ke = d * (k - 1) + 1
        pb, pe = int(pads[i]), int(pads[i + 2])
        if auto in ("SAME_UPPER", "SAME_LOWER") and a.n is not None:
            total = max((math.ceil(a.n / s) - 1) * s + ke - a.n, 0)
            pb = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pe = total - pb
        elif auto == "VALID":
            pb = pe = 0
        n = None
        if a.n is not None:
            span = a.n + pb + pe - ke
            n = (math.ceil(span / s) if ceil else span // s) + 1
        axes.append(
            Axis(a.size + (ke - 1) * a.jump, a.jump * s, a.start + ((ke - 1) / 2 - pb) * a.jump, n)
        )
    return ReceptiveField(axes[0], axes[1], False, size)


def _pad(node: Any, attrs: dict[str, Any], f: ReceptiveField, inits: dict[str, Any],
         size: tuple[int, int]) -> ReceptiveField:  # fmt: skip
    pads = attrs.get("pads")
    if pads is None and len(node.input) > 1:
        pads = _int_list(inits.get(node.input[1]))
    if pads is None or len(pads) != 8 or len(node.input) > 3 and node.input[3]:
        return _full(size)  # not a constant 4-D pad, or one restricted to some axes
    axes = []
    for a, before, after in ((f.y, pads[2], pads[6]), (f.x, pads[3], pads[7])):
        n = None if a.n is None else a.n + before + after
        axes.append(Axis(a.size, a.jump, a.start - before * a.jump, n))
    return ReceptiveField(axes[0], axes[1], False, size)


def _int_list(t: Any) -> list[int] | None:
    if t is None:
        return None
    from onnx import numpy_helper

    return [int(v) for v in numpy_helper.to_array(t).reshape(-1)]


# ------------------------------------------------------------------------------------------------
# Per model
# ------------------------------------------------------------------------------------------------
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], dict[str, ReceptiveField]]] = (
    weakref.WeakKeyDictionary()
)


def layer_field(
    model: Any, layer: str, input_size: tuple[int, int] | None = None
) -> ReceptiveField:
    """The field of ``layer``'s units on ``model`` (a ``LoadedModel``) at ``input_size``
    (default: the model's input size); the whole image for layers it cannot follow."""
    size = input_size or (int(model.input.height), int(model.input.width))
    per_model = _CACHE.setdefault(model, {})
    fields = per_model.get(size)
    if fields is None:
        fields = receptive_fields(model.onnx_model, model.input.name, size)
        per_model[size] = fields
    lay = model.graph[layer]
    if lay.kind != "feature":
        return _full(size)
    return fields.get(lay.output) or _full(size)
