"""Half-precision graphs computed in float32.

Feature visualization optimizes an image through the network for hundreds of steps; float16
gradients underflow and CPU kernels for half precision are slow or missing, and a float16 graph
converted as it is mixes dtypes (a float32 image against float16 weights).  So a graph whose
inputs, weights or casts use float16 or bfloat16 is widened to float32 throughout: weights are
converted once, every declared half type becomes float32, and casts to half precision become
casts to float32.  Nothing else changes, so every node and tensor keeps its name.  What the file
computes in half precision is still the reference for parity (``Parity.reference``), with a
tolerance that fits half precision's rounding.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto, numpy_helper

HALF = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
#: Relative parity tolerance against a half-precision reference (float16 keeps ~3 digits; a few
#: layers of rounding stay well inside 1e-2 on a sensible model).
HALF_TOLERANCE = 1e-2


def uses_half(model: ModelProto) -> bool:
    """Whether any declared tensor, weight or cast of the graph is float16/bfloat16."""
    return _walk(model.graph, widen=False) > 0


def widen_half(model: ModelProto) -> int:
    """Rewrite the graph (in place) to compute in float32; returns how many items changed."""
    return _walk(model.graph, widen=True)


def _widen_tensor(t: TensorProto) -> None:
    arr = numpy_helper.to_array(t).astype(np.float32)
    wide = numpy_helper.from_array(arr, t.name)
    t.CopyFrom(wide)


def _walk(g: GraphProto, *, widen: bool) -> int:
    count = 0
    for t in g.initializer:
        if t.data_type in HALF:
            count += 1
            if widen:
                _widen_tensor(t)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.elem_type in HALF:
            count += 1
            if widen:
                tt.elem_type = TensorProto.FLOAT
    for n in g.node:
        for a in n.attribute:
            count += _attribute(a, n.op_type, widen=widen)
    return count


def _attribute(a: AttributeProto, op: str, *, widen: bool) -> int:
    count = 0
    if a.type == AttributeProto.INT and a.name in ("to", "dtype") and a.i in HALF:
        count += 1
        if widen:
            a.i = TensorProto.FLOAT
    if a.type == AttributeProto.TENSOR and a.t.data_type in HALF:
        count += 1
        if widen:
            _widen_tensor(a.t)
    for t in a.tensors:
        if t.data_type in HALF:
            count += 1
            if widen:
                _widen_tensor(t)
    if a.type == AttributeProto.GRAPH:
        count += _walk(a.g, widen=widen)
    for sub in a.graphs:
        count += _walk(sub, widen=widen)
    return count
