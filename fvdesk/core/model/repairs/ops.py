"""Operator rewrites: ops without an onnx2torch converter lowered to opset 17 (``opset``), through
onnx's version converter, or expanded into the function bodies ONNX defines for them."""

from __future__ import annotations

import collections

import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper

from fvdesk.core.model.nodes import replace_all
from fvdesk.core.model.repairs.common import STANDARD_DOMAINS, Report
from fvdesk.core.model.repairs.constants import fold_constants
from fvdesk.core.model.repairs.shapes import infer_shapes, known_shapes
from fvdesk.core.model.repairs.structure import prune_unused
from fvdesk.core.model.repairs.weights import restore_weights, without_weights

# Opsets tried, in order, when some op has no onnx2torch converter at the model's opset.
_MAX_TORCH_OPSET = 17


# -- opsets ----------------------------------------------------------------------------------
def unsupported_ops(model: ModelProto) -> collections.Counter[str]:
    """Ops without an onnx2torch converter at the model's opset: ``{"Domain::Op (opset N)": count}``."""
    from fvdesk.core.model.onnx2torch_compat import import_onnx2torch

    import_onnx2torch()
    from onnx2torch.node_converters import get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    opsets.setdefault("ai.onnx", opsets.get("", 0))
    out: collections.Counter[str] = collections.Counter()
    for n in model.graph.node:
        domain = "" if n.domain in STANDARD_DOMAINS else n.domain
        version = opsets.get(n.domain, opsets.get(domain, 0))
        try:
            get_converter(domain=domain, operation_type=n.op_type, version=version)
        except NotImplementedError:
            label = n.op_type if domain == "" else f"{domain}::{n.op_type}"
            out[f"{label} (opset {version})"] += 1
    return out


def convert_opset_if_needed(model: ModelProto, report: Report) -> ModelProto:
    """When some op has no converter at this opset, try onnx's version converter (e.g. v18 -> v17)."""
    if not unsupported_ops(model):
        return model
    if any(n.domain not in STANDARD_DOMAINS for n in model.graph.node):
        return model  # custom ops: the version converter cannot help
    from onnx import version_converter

    current = next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)
    light, stubbed = without_weights(model)
    if current < 11:
        targets = [11, 13]
    elif current > _MAX_TORCH_OPSET:
        targets = [_MAX_TORCH_OPSET, 13]
    else:
        targets = [t for t in (13, _MAX_TORCH_OPSET, 11) if t != current]
    for target in targets:
        try:
            converted = version_converter.convert_version(light, target)
        except Exception:  # noqa: BLE001 - try the next target
            continue
        if not unsupported_ops(converted):
            report.add(f"converted opset {current} -> {target} with onnx.version_converter")
            return restore_weights(converted, model, stubbed)
    return model


# -- function ops -------------------------------------------------------------------------------
def expand_function_ops(model: ModelProto, report: Report) -> bool:
    """Replace ops onnx2torch lacks by the function body ONNX itself defines for them.

    New opsets add ops such as ``Gelu`` (v20, which torch 2.14's exporter emits by default) that
    the version converter cannot lower and onnx2torch cannot convert; their schemas carry an
    exact expansion into basic ops.  The last node of the expansion keeps the original node's
    name and output tensor, so the layer stays targetable; ``CastLike`` (no converter either)
    becomes ``Cast`` to the input's type.  Returns True when something was expanded.
    """
    from onnx import defs

    opset = next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)
    bad = {k.split(" (")[0] for k in unsupported_ops(model)}
    if not bad:
        return False
    types = {vi.name: vi.type for vi in list(model.graph.value_info) + list(model.graph.input)}
    for t in model.graph.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
    out_nodes: list[NodeProto] = []
    expanded: collections.Counter[str] = collections.Counter()
    for n in model.graph.node:
        body = None
        if n.op_type in bad and n.domain in STANDARD_DOMAINS:
            body = _function_body(defs, n, opset, types)
        if body is None:
            out_nodes.append(n)
            continue
        out_nodes.extend(_inline(n, body, types))
        expanded[n.op_type] += 1
    if not expanded:
        return False
    replace_all(model.graph.node, out_nodes, NodeProto)
    listed = ", ".join(f"{k} x{v}" for k, v in sorted(expanded.items()))
    report.add(f"expanded ops without a torch converter into their ONNX function bodies ({listed})")
    return True


def _function_body(
    defs: object, n: NodeProto, opset: int, types: dict
) -> onnx.FunctionProto | None:
    try:
        schema = defs.get_schema(n.op_type, opset, "")  # type: ignore[attr-defined]  # onnx.defs has no stub for get_schema
    except Exception:  # noqa: BLE001 - unknown op: nothing to expand
        return None
    try:
        if schema.has_context_dependent_function:
            if any(x and x not in types for x in n.input):
                return None
            raw = schema.get_context_dependent_function(
                n.SerializeToString(), [types[x].SerializeToString() for x in n.input if x]
            )
            f = onnx.FunctionProto()
            f.ParseFromString(raw)
            return f if f.node else None
        if schema.has_function:
            return schema.function_body if schema.function_body.node else None
    except Exception:  # noqa: BLE001 - no usable body
        return None
    return None


def _inline(n: NodeProto, body: onnx.FunctionProto, types: dict) -> list[NodeProto]:
    """The body's nodes with formal names mapped to the node's tensors and attributes resolved."""
    rename: dict[str, str] = {}
    for formal, actual in zip(body.input, n.input, strict=False):
        rename[formal] = actual
    for formal in body.input[len(n.input) :]:
        rename[formal] = ""
    for formal, actual in zip(body.output, n.output, strict=False):
        rename[formal] = actual
    attrs = {a.name: a for a in n.attribute}
    x_type = types.get(n.input[0]) if n.input else None
    elem = x_type.tensor_type.elem_type if x_type is not None else TensorProto.FLOAT
    producers_of_outputs = {o for o in n.output}
    nodes: list[NodeProto] = []
    for i, fn in enumerate(body.node):
        c = NodeProto()
        c.CopyFrom(fn)
        for k, x in enumerate(c.input):
            c.input[k] = rename.get(x, f"{n.name}/{x}" if x else "")
        for k, x in enumerate(c.output):
            c.output[k] = rename.setdefault(x, f"{n.name}/{x}")
        resolved = []
        for a in c.attribute:
            if a.ref_attr_name:
                if a.ref_attr_name in attrs:
                    b = onnx.AttributeProto()
                    b.CopyFrom(attrs[a.ref_attr_name])
                    b.name = a.name
                    resolved.append(b)
            else:
                resolved.append(a)
        del c.attribute[:]
        c.attribute.extend(resolved)
        if c.op_type == "CastLike":
            c.op_type = "Cast"
            del c.input[1:]
            c.attribute.append(helper.make_attribute("to", elem))
        final = any(o in producers_of_outputs for o in c.output)
        c.name = n.name if final else f"{n.name}/fvdesk_{i}_{c.op_type}"
        c.domain = ""
        nodes.append(c)
    return nodes


def lower_opset(model: ModelProto, report: Report, *, where: str = "the model") -> ModelProto:
    """Make every op convertible where that is exact: opset-17 rewrites (``opset``), onnx's
    version converter, then function bodies for ops opset 17 does not have (Gelu ...)."""
    from fvdesk.core.model import opset as ops

    dropped = ops.drop_needless_allowzero(model)
    if dropped:
        report.add(f"dropped allowzero=1 from {dropped} Reshapes whose targets have no zero")

    def rewrite(model: ModelProto) -> ModelProto:
        if ops.default_opset(model) > ops.TARGET and unsupported_ops(model):
            if _op_types(model) & _LOWER_NEEDS_SHAPES:
                model = infer_shapes(model)
            before = ops.default_opset(model)
            counts, why = ops.lower_to_17(model, known_shapes(model))
            if why is not None:
                report.warnings.append(f"opset {before} stays: {why}")
            else:
                listed = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
                report.add(
                    f"lowered opset {before} -> {ops.TARGET} by rewriting nodes to their "
                    f"opset-{ops.TARGET} forms ({listed or 'no node needed a change'})"
                )
        return convert_opset_if_needed(model, report)

    model = rewrite(model)
    if unsupported_ops(model):
        model = infer_shapes(model, report)  # context-dependent function bodies need input types
        if expand_function_ops(model, report):
            fold_constants(model, report, where=where)
            prune_unused(model, report)
            model = rewrite(model)
    return model


_LOWER_NEEDS_SHAPES = {"Pad", "Split", "Resize", "GridSample"}


def _op_types(model: ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}
