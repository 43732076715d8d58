"""Partial conversion: the part of a graph that onnx2torch can convert, when a later part cannot.

An OCR network (a convolutional trunk, then an LSTM) or a backbone followed by a custom-domain
operator cannot be converted whole, but the layers before the first unconvertible node are what a
researcher wants to look at.  The *convertible part* is every node that does not depend, directly
or through a subgraph, on an unconvertible node; its *boundary* is the tensors it hands to the
removed nodes.  The cut graph ends with the original outputs it still computes plus the boundary
tensors, so onnxruntime can check parity on exactly what the torch module computes.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import onnx
from onnx import ModelProto, NodeProto

from fvdesk.core.model import canonicalize as canon


@dataclass(frozen=True)
class Blocker:
    """A node that cannot be converted, and why."""

    node: str
    op: str  # "LSTM", "com.example::FancyPool"
    reason: str
    label: str = ""  # how a refusal lists it: "LSTM (opset 17)", "com.example::FancyPool"


def blockers(model: ModelProto) -> list[Blocker]:
    """Nodes without an onnx2torch converter (custom domains included), in graph order."""
    from fvdesk.core.model.onnx2torch_compat import import_onnx2torch

    import_onnx2torch()
    from onnx2torch.node_converters import get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    opsets.setdefault("ai.onnx", opsets.get("", 0))
    out: list[Blocker] = []
    for n in model.graph.node:
        if n.domain not in canon.STANDARD_DOMAINS:
            label = f"{n.domain}::{n.op_type}"
            out.append(Blocker(n.name, label, f"{label} is a custom-domain operator", label))
            continue
        version = opsets.get(n.domain, opsets.get("", 0))
        try:
            get_converter(domain="", operation_type=n.op_type, version=version)
        except NotImplementedError:
            out.append(
                Blocker(
                    n.name,
                    n.op_type,
                    f"onnx2torch has no converter for {n.op_type} (opset {version})",
                    f"{n.op_type} (opset {version})",
                )
            )
    return out


def downstream(model: ModelProto, names: Iterable[str]) -> set[str]:
    """The named nodes and every node that depends on them (data or subgraph inputs)."""
    removed = set(names)
    dead: set[str] = set()
    for n in model.graph.node:  # topological order
        uses = set(n.input) | canon.subgraph_inputs(n)
        if n.name in removed or uses & dead:
            removed.add(n.name)
            dead.update(o for o in n.output if o)
    return removed


@dataclass
class CutGraph:
    model: ModelProto
    boundary: list[str]  # tensors the kept part hands to removed nodes
    removed: list[NodeProto]  # the removed nodes, in graph order


def cut(model: ModelProto, remove: Iterable[str], protect: Sequence[str] = ()) -> CutGraph | None:
    """A copy of ``model`` without ``remove`` and what depends on them; None if nothing is left
    that computes anything from the graph's inputs."""
    gone = downstream(model, remove)
    g = model.graph
    kept = [n for n in g.node if n.name not in gone]
    removed = [n for n in g.node if n.name in gone]
    consumed = {x for n in removed for x in list(n.input) + sorted(canon.subgraph_inputs(n))}
    consumed |= {o.name for o in g.output}
    produced = [o for n in kept for o in n.output if o]
    boundary = [t for t in dict.fromkeys(produced) if t in consumed]
    if not kept or not boundary:
        return None
    out = sub_model(model, kept, boundary)
    canon.prune_unused(out, canon.Report(), protect=list(protect))
    return CutGraph(out, boundary, removed)


def sub_model(
    model: ModelProto,
    nodes: Sequence[NodeProto],
    outputs: Sequence[str],
    keep: set[str] | None = None,
) -> ModelProto:
    """A copy of ``model`` with only ``nodes``, whose graph outputs are ``outputs``; graph
    inputs and initializers limited to the names in ``keep`` when it is given."""
    g = model.graph
    out = ModelProto()
    out.ir_version = model.ir_version
    out.producer_name = model.producer_name
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    og = out.graph
    og.name = g.name
    og.node.extend(nodes)
    og.input.extend(vi for vi in g.input if keep is None or vi.name in keep)
    og.initializer.extend(t for t in g.initializer if keep is None or t.name in keep)
    og.sparse_initializer.extend(
        t for t in g.sparse_initializer if keep is None or t.values.name in keep
    )
    produced = {o for n in nodes for o in n.output if o}
    og.value_info.extend(v for v in g.value_info if v.name in produced)
    declared = {o.name: o for o in list(g.output) + list(g.value_info)}
    for t in outputs:
        og.output.append(declared.get(t) or onnx.helper.make_value_info(t, onnx.TypeProto()))
    return out


def op_counts(nodes: Iterable[NodeProto]) -> dict[str, int]:
    """``{"LSTM": 2, "Gemm": 1}`` for the removed nodes (custom domains as ``domain::Op``)."""
    c = collections.Counter(
        n.op_type if n.domain in canon.STANDARD_DOMAINS else f"{n.domain}::{n.op_type}"
        for n in nodes
    )
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
