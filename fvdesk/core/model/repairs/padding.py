"""Padding rewrites: what onnx2torch refuses in pooling and Pad nodes, rewritten exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, helper, numpy_helper

from fvdesk.core.model.nodes import attr as _attr
from fvdesk.core.model.nodes import replace_all
from fvdesk.core.model.nodes import set_attr as _set_attr
from fvdesk.core.model.repairs.common import Report
from fvdesk.core.model.repairs.shapes import known_shapes


# -- pooling / padding rewrites ---------------------------------------------------------------
def fix_pooling_padding(model: ModelProto, report: Report) -> None:
    """Rewrite what onnx2torch refuses: asymmetric AveragePool pads and ``SAME_*`` auto padding.

    * ``auto_pad=SAME_UPPER/LOWER`` (tf2onnx) on Conv/MaxPool/AveragePool becomes explicit pads,
      computed from the inferred input size (needs a static spatial shape).
    * AveragePool with asymmetric pads becomes ``Pad`` + ``AveragePool`` (+ a constant ``Mul``
      that restores the ``count_include_pad=0`` divisor), exactly like onnxruntime computes it.
      The last node keeps the original name and output tensor, so the layer stays targetable.
    """
    g = model.graph
    shapes = known_shapes(model)
    new_nodes: list[NodeProto] = []
    same = asym = 0
    for n in g.node:
        if n.op_type in ("Conv", "MaxPool", "AveragePool") and _attr(n, "auto_pad", b"NOTSET") in (
            b"SAME_UPPER",
            b"SAME_LOWER",
        ):
            pads = _same_pads(n, shapes)
            if pads is not None:
                _set_attr(n, "auto_pad", None)
                _set_attr(n, "pads", pads)
                same += 1
        if n.op_type == "AveragePool" and _attr(n, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"):
            pads = list(_attr(n, "pads", []) or [])
            half = len(pads) // 2
            if pads and pads[:half] != pads[half:]:
                rewritten = _rewrite_avgpool(n, pads, shapes, g)
                if rewritten is not None:
                    new_nodes.extend(rewritten)
                    asym += 1
                    continue
        new_nodes.append(n)
    if same:
        report.add(f"made {same} SAME auto-paddings explicit")
    if asym:
        replace_all(g.node, new_nodes, NodeProto)
        report.add(f"rewrote {asym} asymmetric AveragePool paddings as Pad + AveragePool")


def fix_pad_values(model: ModelProto, report: Report) -> None:
    """``Pad`` with a ``constant_value`` input: onnx2torch hands the tensor to ``F.pad``, which
    wants a Python number, and fails at run time.  A zero value is dropped (it is the default);
    another value ``c`` becomes ``Pad(x, 0) + C`` where the constant ``C`` holds ``c`` on the
    padded border and 0 inside, which is exact (x + 0 = x, 0 + c = c); it needs a static shape.
    """
    g = model.graph
    consts = {t.name: t for t in g.initializer}
    shapes = known_shapes(model)
    out: list[NodeProto] = []
    dropped = rewritten = 0
    for n in g.node:
        value = consts.get(n.input[2]) if n.op_type == "Pad" and len(n.input) > 2 else None
        if (
            value is None
            or len(n.input) > 3
            or _attr(n, "mode", b"constant") not in (b"constant", "constant")
        ):
            out.append(n)
            continue
        c = numpy_helper.to_array(value).reshape(-1)
        pads = consts.get(n.input[1])
        if c.size == 0 or float(c[0]) == 0.0:
            del n.input[2:]
            dropped += 1
            out.append(n)
            continue
        shape = shapes.get(n.input[0])
        if pads is None or not shape or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            out.append(n)
            continue
        p = numpy_helper.to_array(pads).astype(np.int64).reshape(-1)
        rank = len(shape)
        if p.size != 2 * rank or p[0] or p[rank] or (p < 0).any():
            out.append(n)  # the batch padded, or cropping: leave it to the converter
            continue
        dims = [1] + [int(d) + int(p[i]) + int(p[i + rank]) for i, d in enumerate(shape) if i]  # type: ignore[arg-type]  # shape[1:] checked ints above
        border = np.full(dims, c[0], dtype=numpy_helper.to_array(value).dtype)
        inner = (slice(None),) + tuple(
            slice(int(p[i]), int(p[i]) + int(shape[i]))  # type: ignore[arg-type]  # shape[1:] checked ints above
            for i in range(1, rank)
        )
        border[inner] = 0
        padded, const = f"{n.output[0]}__fvdesk_zero_pad", f"{n.output[0]}__fvdesk_pad_border"
        g.initializer.append(numpy_helper.from_array(border, const))
        pad = NodeProto()
        pad.CopyFrom(n)
        del pad.input[2:]
        pad.output[0] = padded
        pad.name = f"{n.name}/fvdesk_zero_pad"
        out.extend([pad, helper.make_node("Add", [padded, const], [n.output[0]], name=n.name)])
        rewritten += 1
    if rewritten:
        replace_all(g.node, out, NodeProto)
    if dropped or rewritten:
        report.add(
            f"rewrote {dropped + rewritten} Pad constant values onnx2torch cannot pass to torch "
            f"({dropped} zero, {rewritten} as zero padding plus a constant border)"
        )


def _same_pads(n: NodeProto, shapes: dict) -> list[int] | None:
    shape = shapes.get(n.input[0])
    if not shape or len(shape) < 3 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return None
    spatial = list(shape[2:])
    if n.op_type == "Conv":
        w = shapes.get(n.input[1])
        kernel = list(_attr(n, "kernel_shape", None) or (w[2:] if w else []))
    else:
        kernel = list(_attr(n, "kernel_shape", []))
    if len(kernel) != len(spatial):
        return None
    strides = list(_attr(n, "strides", None) or [1] * len(spatial))
    dil = list(_attr(n, "dilations", None) or [1] * len(spatial))
    upper = _attr(n, "auto_pad") == b"SAME_UPPER"
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dil, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if upper else big)
        end.append(big if upper else small)
    return begin + end


def _rewrite_avgpool(
    n: NodeProto, pads: list[int], shapes: dict, g: onnx.GraphProto
) -> list[NodeProto] | None:
    """Pad (zeros) + AveragePool (floor mode, no pads) + Mul by a constant divisor correction.

    The output size follows onnxruntime (ceil mode drops a last window that would start in the
    end padding); the constant scale turns "sum / kernel area" into "sum / counted positions",
    where counted means inside the input (``count_include_pad=0``) or inside input + pads (=1).
    """
    shape = shapes.get(n.input[0])
    half = len(pads) // 2
    if not shape or len(shape) != half + 2:
        return None
    spatial = shape[2:]
    if not all(isinstance(d, int) and d > 0 for d in spatial):
        return None
    if _attr(n, "dilations") not in (None, [1] * half):
        return None
    kernel = list(_attr(n, "kernel_shape", []))
    strides = list(_attr(n, "strides", None) or [1] * half)
    ceil = int(_attr(n, "ceil_mode", 0) or 0)
    include = int(_attr(n, "count_include_pad", 0) or 0)
    ends, mask_slices = [], []
    for i, (size, k, st) in enumerate(zip(spatial, kernel, strides, strict=True)):
        begin, end = pads[i], pads[i + half]
        span = size + begin + end - k
        out = (-(-span // st) if ceil else span // st) + 1
        if ceil and (out - 1) * st >= size + begin:
            out -= 1
        extra = max(0, (out - 1) * st + k - (size + begin + end))
        ends.append(end + extra)
        mask_slices.append(slice(0, size + begin + end) if include else slice(begin, begin + size))
    padded = [size + pads[i] + ends[i] for i, size in enumerate(spatial)]
    mask = np.zeros(padded, np.float32)
    mask[tuple(mask_slices)] = 1.0
    counted = _window_sums(mask, kernel, strides)
    area = float(np.prod(kernel))
    scale = (area / np.maximum(counted, 1.0)).astype(np.float32)[None, None]

    out_name = n.output[0]
    pad_name, pads_init = f"{out_name}__fvdesk_padded", f"{out_name}__fvdesk_pads"
    full_pads = [0, 0, *pads[:half], 0, 0, *ends]
    g.initializer.append(numpy_helper.from_array(np.array(full_pads, np.int64), pads_init))
    pad = helper.make_node(
        "Pad", [n.input[0], pads_init], [pad_name], name=f"{n.name}/fvdesk_pad", mode="constant"
    )
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "count_include_pad": 1}
    if np.all(scale == 1.0):
        return [pad, helper.make_node("AveragePool", [pad_name], [out_name], name=n.name, **attrs)]
    pooled, scale_name = f"{out_name}__fvdesk_pooled", f"{out_name}__fvdesk_count_scale"
    g.initializer.append(numpy_helper.from_array(scale, scale_name))
    pool = helper.make_node(
        "AveragePool", [pad_name], [pooled], name=f"{n.name}/fvdesk_pool", **attrs
    )
    mul = helper.make_node("Mul", [pooled, scale_name], [out_name], name=n.name)
    return [pad, pool, mul]


def _window_sums(x: np.ndarray, kernel: list[int], strides: list[int]) -> np.ndarray:
    """Sum of ``x`` over each pooling window (floor mode, no padding)."""
    outs = [(size - k) // s + 1 for size, k, s in zip(x.shape, kernel, strides, strict=True)]
    out = np.zeros(outs, np.float32)
    for idx in np.ndindex(*outs):
        out[idx] = x[
            tuple(slice(i * s, i * s + k) for i, s, k in zip(idx, strides, kernel, strict=True))
        ].sum()
    return out
