"""Weight-free copies of a graph: onnx's tools and onnxruntime serialize the whole model, so the
big float weights are handed over as inputs instead."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from fvdesk.core.model.nodes import replace_all

_STUB_MIN_BYTES = 4096
_FLOAT_ELEM = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def _is_weight(t: TensorProto) -> bool:
    if t.data_type not in _FLOAT_ELEM:
        return False
    n = int(np.prod(t.dims)) if t.dims else 1
    return n * 4 >= _STUB_MIN_BYTES


def without_weights(model: ModelProto) -> tuple[ModelProto, list[str]]:
    """A copy whose big float initializers are typed graph inputs instead (names returned).

    onnx's shape inference and version converter, and onnxruntime, serialize the whole model;
    for a 100 MB file that costs seconds.  Weights are never needed to infer shapes or convert
    opsets (small int tensors such as Reshape targets stay initializers), and onnxruntime can be
    fed them as inputs (``weight_feeds``).
    """
    light = ModelProto()
    light.ir_version = model.ir_version
    light.producer_name = model.producer_name
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g, lg = model.graph, light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    stubbed: list[str] = []
    for t in g.initializer:
        if _is_weight(t):
            lg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            stubbed.append(t.name)
        else:
            lg.initializer.append(t)
    return light, stubbed


def weight_feeds(model: ModelProto, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The stubbed weights as numpy arrays, to feed a weight-free copy in onnxruntime."""
    wanted = set(names)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in wanted}


def restore_weights(light: ModelProto, full: ModelProto, stubbed: list[str]) -> ModelProto:
    """Put the stubbed weights of ``full`` back into a (converted) weight-free copy ``light``."""
    names = set(stubbed)
    inputs = [i for i in light.graph.input if i.name not in names]
    replace_all(light.graph.input, inputs, onnx.ValueInfoProto)
    light.graph.initializer.extend(t for t in full.graph.initializer if t.name in names)
    return light
