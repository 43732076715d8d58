"""The targetable layers: float outputs of the user's nodes whose dim 0 is the batch, shaped from
shape inference and the probe, each mapped to the fx node that computes it; and the nodes a partial
conversion left out, greyed with the reason."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from torch import fx

from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model.graph import NodeOutputs, classify, find_layers, tensor_layouts
from fvdesk.core.model.layers import Layer
from fvdesk.core.model.loading.context import LoadContext
from fvdesk.core.model.loading.probe import per_image, probed

if TYPE_CHECKING:
    from fvdesk.core.model.loading.build import Built

Shapes = dict[str, tuple[int | None, ...] | None]


def list_layers(
    ctx: LoadContext,
    model: Any,
    module: fx.GraphModule,
    user_nodes: list[NodeOutputs],
    report: canon.Report,
    built: Built,
    spec: dict,
) -> tuple[list, dict[str, str]]:
    """The targetable layers and, per layer, the fx node whose value it is (checked by comparing
    the probes at batch 1 and 2)."""
    produced = tensor_sources(module)  # tensor -> (fx node, k, n_outputs)
    inferred = canon.known_shapes(model)
    removed = {n.name for n in built.removed}
    visible = [n for n in user_nodes if n.name not in report.folded_nodes and n.name not in removed]
    shapes, floats = _layer_shapes(visible, produced, inferred, built, spec)
    graph_outputs = [o.name for o in model.graph.output]
    hw = (spec["height"], spec["width"])
    layouts = tensor_layouts(model.graph.node, spec["name"], spec["layout"], shapes, hw)
    layers = find_layers(visible, shapes, floats, graph_outputs, layouts, image_hw=hw)
    node_of_layer = _fx_nodes(module, layers, produced, built.probe)
    lost = [
        n.name
        for n in visible
        if n.outputs and n.outputs[0] not in produced and n.outputs[0] in inferred
    ]
    if lost:
        ctx.warnings.append(
            f"{ctx.path.name}: {len(lost)} nodes were merged away during repair and cannot be targeted "
            f"({', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''})."
        )
    return layers, node_of_layer


def _layer_shapes(
    visible: list[NodeOutputs],
    produced: dict[str, tuple[fx.Node, int, int]],
    inferred: dict,
    built: Built,
    spec: dict,
) -> tuple[Shapes, set[str]]:
    """Per-image float tensors of the visible nodes: their shapes (inferred dims where known,
    else probed; dim 0 the batch) and the set of their names."""
    batch_dynamic = not isinstance(spec["batch"], int)
    shapes: Shapes = {}
    floats: set[str] = set()
    for n in visible:
        for t in n.outputs:
            src = produced.get(t)
            if src is None:
                continue
            value = probed(built.probe, src)
            if value is None or not value.dtype.is_floating_point:
                continue
            shape = value.shape
            if not per_image(shape, probed(built.probe1, src), built.max_batch):
                continue
            floats.add(t)
            inf = inferred.get(t)
            if inf is not None and len(inf) == len(shape):
                merged: list[int | None] = [
                    d if isinstance(d, int) and d > 0 else s
                    for d, s in zip(inf, shape, strict=True)
                ]
            else:
                merged = list(shape)
            if merged:
                merged[0] = None if batch_dynamic else spec["batch"]
            shapes[t] = tuple(merged)
    return shapes, floats


def _fx_nodes(
    module: fx.GraphModule,
    layers: list[Layer],
    produced: dict[str, tuple[fx.Node, int, int]],
    probe: dict[str, Any],
) -> dict[str, str]:
    """Layer name -> fx node name; an output of a multi-output node gets a ``getitem`` node
    (added to the graph when there is none, and the module recompiled)."""
    node_of_layer: dict[str, str] = {}
    graph = module.graph
    changed = False
    for layer in layers:
        fx_node, k, _n = produced[layer.output]
        value = probe.get(fx_node.name)
        if isinstance(value, tuple):
            getter = next(
                (
                    u
                    for u in fx_node.users
                    if u.op == "call_function" and u.target is operator.getitem and u.args[1] == k
                ),
                None,
            )
            if getter is None:
                with graph.inserting_after(fx_node):
                    getter = graph.call_function(operator.getitem, (fx_node, k))
                changed = True
            node_of_layer[layer.name] = getter.name
        else:
            node_of_layer[layer.name] = fx_node.name
    if changed:
        module.recompile()
    return node_of_layer


def unavailable_layers(
    built: Built, user_nodes: list[NodeOutputs], first_index: int
) -> list[Layer]:
    """The user's nodes a partial conversion left out, greyed in the tree with the reason."""
    if built.cut is None:
        return []
    removed = {n.name for n in built.removed}
    why = {b.node: b.reason for b in built.blockers}
    cut = built.cut
    out: list[Layer] = []
    for n in user_nodes:
        if n.name not in removed or not n.outputs or not n.outputs[0]:
            continue
        t = n.outputs[0]
        shape = built.full_shapes.get(t)
        kind = classify(shape, is_output=False) if shape is not None else None
        reason = why.get(n.name) or (
            f"it depends on {cut.stopped_at!r}, where the conversion stopped"
        )
        out.append(
            Layer(
                n.name,
                t,
                n.op,
                tuple(d if isinstance(d, int) else None for d in shape)
                if kind and shape is not None
                else (),
                kind or "unknown",  # type: ignore[arg-type]  # classify returns one of Layer's kinds
                first_index + len(out),
                available=False,
                reason=reason,
            )
        )
    return out


def tensor_sources(module: fx.GraphModule) -> dict[str, tuple[fx.Node, int, int]]:
    """ONNX tensor name -> (call_module fx node, output index, number of outputs), via onnx_mapping."""
    out: dict[str, tuple[fx.Node, int, int]] = {}
    for node in module.graph.nodes:
        if node.op != "call_module":
            continue
        mod = module.get_submodule(node.target)
        mapping = getattr(mod, "onnx_mapping", None)
        if mapping is None:
            continue
        outputs = tuple(mapping.outputs)
        for k, t in enumerate(outputs):
            if t:
                out[t] = (node, k, len(outputs))
    return out
