"""Shapes: onnx's inference on a weight-free copy, the shapes it left unknown measured with
onnxruntime, and the shape tables the other repairs and the loader read."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import ModelProto, helper

from fvdesk.core.model.nodes import attr as _attr
from fvdesk.core.model.repairs.common import Report, short_error
from fvdesk.core.model.repairs.weights import weight_feeds, without_weights

# onnx2torch converters that read the rank of their first input from value_info.
_NEEDS_RANK = {
    "AveragePool",
    "MaxPool",
    "BatchNormalization",
    "GlobalAveragePool",
    "InstanceNormalization",
    "LayerNormalization",
}


# -- shapes ----------------------------------------------------------------------------------
def infer_shapes(model: ModelProto, report: Report | None = None) -> ModelProto:
    """onnx shape inference (with data propagation, so Reshape targets built from Shape resolve).

    Runs on a weight-free copy and copies the resulting ``value_info`` back.
    """
    from onnx import shape_inference

    light, stubbed = without_weights(model)
    inferred = None
    error: Exception | None = None
    for data_prop in (True, False):
        try:
            inferred = shape_inference.infer_shapes(
                light, check_type=False, strict_mode=False, data_prop=data_prop
            )
            break
        except Exception as e:  # noqa: BLE001 - partial shapes are still useful
            error = e
    if inferred is None:
        if report is not None and error is not None:
            report.warnings.append(f"onnx shape inference failed ({short_error(error)})")
        return model
    stub = set(stubbed)
    del model.graph.value_info[:]
    model.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in stub)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def known_shapes(model: ModelProto) -> dict[str, tuple[int | str | None, ...] | None]:
    """Tensor name -> shape (int, symbolic name or None per dim); None when the rank is unknown."""
    out: dict[str, tuple[int | str | None, ...] | None] = {}
    g = model.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        if not t.HasField("shape"):
            out.setdefault(vi.name, None)
            continue
        dims: list[int | str | None] = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out[vi.name] = tuple(dims)
    for t in g.initializer:
        out[t.name] = tuple(int(x) for x in t.dims)
    return out


def elem_types(model: ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX element type (``TensorProto.FLOAT`` ...), where known."""
    g = model.graph
    out = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(g.value_info) + list(g.input) + list(g.output)
    }
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def fill_shapes_with_ort(
    model: ModelProto, feeds: dict[str, np.ndarray], names: Iterable[str], report: Report
) -> None:
    """Give tensors whose shape inference failed a shape measured by one onnxruntime run.

    onnx2torch reads the rank of pooling/normalization inputs from value_info; legacy files often
    lack it.  The batch dim is kept symbolic when the graph input's is.
    """
    import onnxruntime as ort

    names = [n for n in dict.fromkeys(names)]
    if not names:
        return
    m, stubbed = without_weights(model)
    feeds = {**feeds, **weight_feeds(model, stubbed)}
    existing = {o.name for o in m.graph.output}
    for n in names:
        if n not in existing:
            m.graph.output.append(helper.make_value_info(n, onnx.TypeProto()))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = sess.run(names, feeds)
    vi_by_name = {vi.name: vi for vi in model.graph.value_info}
    for name, v in zip(names, values, strict=True):
        v = np.asarray(v)
        vi = vi_by_name.get(name)
        if vi is None:
            vi = model.graph.value_info.add()
            vi.name = name
        elem = helper.np_dtype_to_tensor_dtype(v.dtype)
        vi.type.CopyFrom(helper.make_tensor_type_proto(elem, list(v.shape)))
    report.add(
        f"measured {len(names)} tensor shapes with onnxruntime (shape inference left them unknown)"
    )


def tensors_needing_shapes(model: ModelProto) -> list[str]:
    """Tensors whose shape onnx2torch reads but inference left unknown: the input rank of
    pooling/normalization converters, and the normalized (trailing) dims of LayerNormalization,
    which becomes ``nn.LayerNorm(normalized_shape)`` from the declared dims (an unknown dim reads
    as 0 and the module fails at run time: torchvision's swin_t after constant folding)."""
    shapes = known_shapes(model)
    out: list[str] = []
    for n in model.graph.node:
        if n.op_type not in _NEEDS_RANK or not n.input:
            continue
        shape = shapes.get(n.input[0])
        if shape is None:
            out.append(n.input[0])
        elif n.op_type == "LayerNormalization":
            axis = int(_attr(n, "axis", -1) or -1)
            tail = shape[axis:] if -len(shape) <= axis < len(shape) else shape
            if not all(isinstance(d, int) and d > 0 for d in tail):
                out.append(n.input[0])
    return list(dict.fromkeys(out))
