"""ONNX graph repair so that real-world files convert with onnx2torch, without changing the layers.

Each step is a function ``step(model, report) -> None`` that edits the ``ModelProto`` in place and
appends a line to ``report`` when it changed something.  The steps lean on onnx's own tools
(``shape_inference``, ``version_converter``, ``numpy_helper``) and on onnxruntime for constant
folding, but unlike onnxruntime's optimizer they never fuse, drop or merge nodes that depend on the
image: only subgraphs computed from constants (weights made by ``Constant``/``ConstantOfShape``/
``Identity``/``Unsqueeze`` ...) are replaced by initializers, so every BatchNormalization, Relu and
Dropout the user sees stays targetable under its own (node, tensor) name.

The repairs live in ``fvdesk.core.model.repairs``, one module per family; this module keeps the
order they run in (``PASSES``), the driver and every name it had before (re-exported).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from onnx import ModelProto

from fvdesk.core.model.repairs.common import STANDARD_DOMAINS, Report
from fvdesk.core.model.repairs.constants import fold_constants
from fvdesk.core.model.repairs.ops import (
    convert_opset_if_needed,
    expand_function_ops,
    lower_opset,
    unsupported_ops,
)
from fvdesk.core.model.repairs.padding import fix_pad_values, fix_pooling_padding
from fvdesk.core.model.repairs.shapes import (
    elem_types,
    fill_shapes_with_ort,
    infer_shapes,
    known_shapes,
    tensors_needing_shapes,
)
from fvdesk.core.model.repairs.structure import (
    check_and_sort,
    drop_unused_optional_outputs,
    name_nodes,
    normalize_dims,
    prune_unused,
    strip_initializer_inputs,
    subgraph_inputs,
)
from fvdesk.core.model.repairs.weights import restore_weights, weight_feeds, without_weights

_subgraph_inputs = subgraph_inputs  # the names before the split
_restore_weights = restore_weights

__all__ = [
    "MEASURE_SHAPES", "PASSES", "PASS_NAMES", "STANDARD_DOMAINS", "Pass", "Progress", "Report",
    "canonicalize", "check_and_sort", "convert_opset_if_needed", "drop_unused_optional_outputs",
    "elem_types", "expand_function_ops", "fill_shapes_with_ort", "fix_pad_values",
    "fix_pooling_padding", "fold_constants", "infer_shapes", "known_shapes", "lower_opset",
    "name_nodes", "normalize_dims", "prune_unused", "strip_initializer_inputs", "subgraph_inputs",
    "tensors_needing_shapes", "unsupported_ops", "weight_feeds", "widen_half_precision",
    "without_weights",
]  # fmt: skip

# -- the pipeline ----------------------------------------------------------------------------
Progress = Callable[[float, str], None]


def widen_half_precision(model: ModelProto, report: Report) -> None:
    """float16/bfloat16 graphs compute in float32 (see ``precision``)."""
    from fvdesk.core.model import precision

    changed = precision.widen_half(model)
    if changed:
        report.add(
            f"widened {changed} float16/bfloat16 weights, inputs and casts to float32 "
            "(gradients through half precision underflow)"
        )


@dataclass(frozen=True)
class Pass:
    """One canonicalization step: ``run(model, report, where) -> model``."""

    name: str
    run: Callable[[ModelProto, Report, str], ModelProto]


def _in_place(
    fn: Callable[..., None], **kw: bool
) -> Callable[[ModelProto, Report, str], ModelProto]:
    def run(model: ModelProto, report: Report, where: str) -> ModelProto:
        if kw.get("where"):
            fn(model, report, where=where)
        else:
            fn(model, report)
        return model

    return run


def _fold(model: ModelProto, report: Report, where: str) -> ModelProto:
    fold_constants(model, report, where=where)
    prune_unused(model, report)
    return model


#: The steps, in order.  Names are what ``skip=`` takes and what the loader reports when a step
#: turned a convertible graph into an unconvertible one and had to be left out.
PASSES: tuple[Pass, ...] = (
    Pass("strip initializer inputs", _in_place(strip_initializer_inputs)),
    Pass("normalize dims", _in_place(normalize_dims)),
    Pass("drop unused optional outputs", _in_place(drop_unused_optional_outputs)),
    Pass("widen half precision", _in_place(widen_half_precision)),
    Pass("fold constants", _fold),
    Pass("lower opset", lambda m, r, w: lower_opset(m, r, where=w)),
    Pass("infer shapes", lambda m, r, w: infer_shapes(m, r)),
    Pass("fix pooling padding", _in_place(fix_pooling_padding)),
    Pass("fix pad values", _in_place(fix_pad_values)),
)
PASS_NAMES = tuple(p.name for p in PASSES)
#: Passes that change the model even when they report no step (so they are always suspects).
_SILENT = {"infer shapes"}


def canonicalize(
    model: ModelProto, *, where: str, report: Report, skip: Iterable[str] = ()
) -> ModelProto:
    """All repair steps in order, except those named in ``skip``; returns the canonical model
    (possibly a new object).  ``report.applied`` lists the steps that changed something.

    Node naming and the structure check must already have run on ``model`` (the loader records the
    user's node list in between).
    """
    skipped = set(skip)
    unknown = skipped - set(PASS_NAMES) - {MEASURE_SHAPES}
    if unknown:
        raise ValueError(f"unknown canonicalization steps {sorted(unknown)}")
    for p in PASSES:
        if p.name in skipped:
            continue
        before = len(report.steps)
        model = p.run(model, report, where)
        if len(report.steps) > before or p.name in _SILENT:
            report.applied.append(p.name)
    return model


#: The loader's own step after canonicalization (onnxruntime measures shapes inference left
#: unknown); skippable like the passes.
MEASURE_SHAPES = "measure shapes"
