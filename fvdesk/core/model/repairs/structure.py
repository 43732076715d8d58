"""Structure repairs: node names, the topological order, graph inputs, unused outputs and dims."""

from __future__ import annotations

import collections
import heapq
from collections.abc import Iterable

import onnx
from onnx import ModelProto, NodeProto

from fvdesk.core.errors import ModelLoadError
from fvdesk.core.model.nodes import replace_all
from fvdesk.core.model.repairs.common import STANDARD_DOMAINS, Report


# -- node names -------------------------------------------------------------------------------
def name_nodes(model: ModelProto, report: Report) -> None:
    """Give unnamed nodes stable names (``Conv_12``: op type + node index) and make names unique.

    onnx2torch turns node names into module names with ``.`` replaced by ``/``, so uniqueness is
    checked on that form too.  Names torch cannot use for a submodule (``initializers``, its
    weight container, and attributes of ``nn.Module`` such as ``eval`` or ``training``) get a
    suffix like duplicates do.  The first holder of a duplicated name keeps it.
    """
    from torch import nn

    reserved = {"initializers"} | set(dir(nn.Module))
    nodes = model.graph.node

    def key(name: str) -> str:
        return name.replace(".", "/")

    counts = collections.Counter(key(n.name) for n in nodes if n.name)
    # Unique, usable given names are never taken by generated ones.
    taken = {key(n.name) for n in nodes if n.name and counts[key(n.name)] == 1} - reserved
    taken |= reserved
    kept: set[str] = set()
    unnamed = renamed = 0
    for i, n in enumerate(nodes):
        k = key(n.name)
        if n.name and k not in reserved:
            if counts[k] == 1:
                continue
            if k not in kept:  # first holder of a duplicated name
                kept.add(k)
                taken.add(k)
                continue
        base = n.name or f"{n.op_type}_{i}"
        candidate, j = base, 1
        while key(candidate) in taken:
            candidate = f"{base}_{j}"
            j += 1
        if n.name:
            renamed += 1
        else:
            unnamed += 1
        n.name = candidate
        taken.add(key(candidate))
    if unnamed:
        report.add(f"named {unnamed} unnamed nodes (op type + index)")
    if renamed:
        report.add(f"renamed {renamed} nodes whose names were duplicated or reserved by torch")


# -- structure checks ---------------------------------------------------------------------------
def check_and_sort(model: ModelProto, where: str, report: Report) -> None:
    """Refuse graphs that use undefined tensors (truncated/corrupt files); sort nodes topologically."""
    g = model.graph
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    for t in g.sparse_initializer:
        defined.add(t.values.name)
    producers: dict[str, int] = {}
    for i, n in enumerate(g.node):
        for o in n.output:
            if o:
                producers[o] = i
    missing = [x for n in g.node for x in n.input if x not in defined and x not in producers]
    missing += [o.name for o in g.output if o.name not in defined and o.name not in producers]
    if missing:
        shown = ", ".join(repr(m) for m in list(dict.fromkeys(missing))[:3])
        raise ModelLoadError(
            f"{where} is corrupt or truncated: its graph uses tensors that nothing defines ({shown})."
        )
    # Kahn's algorithm, stable w.r.t. the file's order.
    indeg = [0] * len(g.node)
    users: dict[int, list[int]] = collections.defaultdict(list)
    for i, n in enumerate(g.node):
        deps = {producers[x] for x in n.input if x in producers and x not in defined}
        deps |= {producers[x] for x in subgraph_inputs(n) if x in producers}
        deps.discard(i)
        indeg[i] = len(deps)
        for d in deps:
            users[d].append(i)
    ready = [i for i, d in enumerate(indeg) if d == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(g.node):
        raise ModelLoadError(f"{where} has a cycle in its graph, so it is not a valid ONNX model.")
    if order != sorted(order):
        sorted_nodes = [NodeProto() for _ in order]
        for dst, src in zip(sorted_nodes, order, strict=True):
            dst.CopyFrom(g.node[src])
        del g.node[:]
        g.node.extend(sorted_nodes)
        report.add("sorted nodes topologically")


def subgraph_inputs(node: NodeProto) -> set[str]:
    """Outer-scope tensors used inside If/Loop/Scan bodies (so sorting respects them)."""
    names: set[str] = set()
    for a in node.attribute:
        graphs = list(a.graphs) + ([a.g] if a.HasField("g") else [])
        for sub in graphs:
            for n in sub.node:
                names.update(n.input)
                for inner in n.attribute:
                    if inner.HasField("g") or inner.graphs:
                        names |= subgraph_inputs(n)
    return names


def strip_initializer_inputs(model: ModelProto, report: Report) -> None:
    """Old IR (< 4) lists every initializer among the graph inputs; keep only the real inputs."""
    g = model.graph
    if model.ir_version < 4:
        # IR 4 is the first that lets initializers live outside the inputs; nothing else differs.
        model.ir_version = 4
    inits = {t.name for t in g.initializer}
    keep = [i for i in g.input if i.name not in inits]
    if len(keep) != len(g.input):
        n = len(g.input) - len(keep)
        kept = [onnx.ValueInfoProto() for _ in keep]
        for dst, src in zip(kept, keep, strict=True):
            dst.CopyFrom(src)
        del g.input[:]
        g.input.extend(kept)
        report.add(f"removed {n} initializers listed as graph inputs")


def prune_unused(model: ModelProto, report: Report, protect: Iterable[str] = ()) -> None:
    """Drop graph inputs and initializers that nothing uses (leftovers of exporters and folding)."""
    g = model.graph
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output} | set(protect)
    for n in g.node:
        used |= subgraph_inputs(n)
    keep_inputs = [i for i in g.input if i.name in used]
    if len(keep_inputs) != len(g.input):
        dropped = [i.name for i in g.input if i.name not in used]
        replace_all(g.input, keep_inputs, onnx.ValueInfoProto)
        report.add(f"removed {len(dropped)} unused graph inputs ({', '.join(dropped[:4])})")
    unused_init = [i for i, t in enumerate(g.initializer) if t.name not in used]
    for i in reversed(unused_init):
        del g.initializer[i]


_OPTIONAL_OUTPUT_OPS = {"Dropout", "BatchNormalization", "MaxPool"}


def drop_unused_optional_outputs(model: ModelProto, report: Report) -> None:
    """Remove unused trailing optional outputs (Dropout's mask, MaxPool's indices, BN's stats).

    onnx2torch indexes such nodes as tuples although its modules return one tensor in eval mode.
    The node and its main output stay.
    """
    g = model.graph
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    count = 0
    for n in g.node:
        if n.op_type not in _OPTIONAL_OUTPUT_OPS or n.domain not in STANDARD_DOMAINS:
            continue
        while len(n.output) > 1 and (not n.output[-1] or n.output[-1] not in used):
            del n.output[-1]
            count += 1
    if count:
        report.add(f"removed {count} unused optional outputs (Dropout masks, pooling indices)")


def normalize_dims(model: ModelProto, report: Report) -> None:
    """Negative or zero dims on inputs/outputs (``-1`` for a dynamic batch) become symbolic names."""
    changed = 0
    for vi in list(model.graph.input) + list(model.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        for k, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.dim_param = "N" if k == 0 else f"{vi.name}_d{k}"
                changed += 1
    if changed:
        report.add(f"made {changed} negative/zero input or output dims symbolic")
