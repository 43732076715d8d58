"""The pieces tests hand-build small ONNX graphs from (one copy, imported by every test file
that builds a graph node by node; exported torch models are in tests/models.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weight(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.3) -> TensorProto:
    """A float32 initializer of normal random values (``rng`` keeps each file's own seed)."""
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def ints(name: str, *values: int) -> TensorProto:
    """An int64 initializer (shapes, axes, pads)."""
    return numpy_helper.from_array(np.array(values, np.int64), name)


def floats(name: str, *values: float) -> TensorProto:
    """A float32 initializer of these values."""
    return numpy_helper.from_array(np.array(values, np.float32), name)


def tensor(
    name: str, shape: Sequence[Any] | None, elem: int = TensorProto.FLOAT
) -> onnx.ValueInfoProto:
    """A graph input's or output's declaration (``None`` entries and names are free dims)."""
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def onnx_model(
    nodes: Iterable[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    inits: Iterable[TensorProto] = (),
    *,
    opset: int | None = 17,
    ir: int | None = 8,
    domains: Iterable[str] = (),
    name: str = "g",
) -> onnx.ModelProto:
    """A model of these nodes; ``opset``/``ir`` ``None`` leave onnx's defaults; each of
    ``domains`` is imported at version 1 (custom ops)."""
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(inits))
    opsets = [] if opset is None else [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets) if opsets else helper.make_model(graph)
    if ir is not None:
        model.ir_version = ir
    return model


def save_onnx(model: onnx.ModelProto, path: str | Path, *, atomic: bool = False) -> Path:
    """Write ``model`` to ``path``; ``atomic`` for session-cached fixtures another test may be
    reading (written beside, then renamed)."""
    path = Path(path)
    if not atomic:
        onnx.save(model, str(path))
        return path
    tmp = path.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return path
