"""ONNX graph repair so that real-world files convert with onnx2torch, without changing the layers.

Each step is a function ``step(model, report) -> None`` that edits the ``ModelProto`` in place and
appends a line to ``report`` when it changed something.  The steps lean on onnx's own tools
(``shape_inference``, ``version_converter``, ``numpy_helper``) and on onnxruntime for constant
folding, but unlike onnxruntime's optimizer they never fuse, drop or merge nodes that depend on the
image: only subgraphs computed from constants (weights made by ``Constant``/``ConstantOfShape``/
``Identity``/``Unsqueeze`` ...) are replaced by initializers, so every BatchNormalization, Relu and
Dropout the user sees stays targetable under its own (node, tensor) name.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from fvdesk.core.errors import FvdeskError, ModelLoadError
from fvdesk.core.model.nodes import attr as _attr
from fvdesk.core.model.nodes import replace_all
from fvdesk.core.model.nodes import set_attr as _set_attr

STANDARD_DOMAINS = ("", "ai.onnx")
# Ops whose value is not a function of their inputs, or that carry subgraphs: never folded.
_NO_FOLD = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Loop",
    "If",
    "Scan",
    "SequenceConstruct",
    "SequenceEmpty",
}
# onnx2torch converters that read the rank of their first input from value_info.
_NEEDS_RANK = {
    "AveragePool",
    "MaxPool",
    "BatchNormalization",
    "GlobalAveragePool",
    "InstanceNormalization",
    "LayerNormalization",
}
# Opsets tried, in order, when some op has no onnx2torch converter at the model's opset.
_MAX_TORCH_OPSET = 17


@dataclass
class Report:
    """What canonicalization did (shown in the model info and the benchmark)."""

    steps: list[str] = field(default_factory=list)
    folded_nodes: set[str] = field(default_factory=set)  # original node names now constants
    warnings: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # names of the passes that changed something

    def add(self, line: str) -> None:
        self.steps.append(line)


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
        deps |= {producers[x] for x in _subgraph_inputs(n) if x in producers}
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


def _subgraph_inputs(node: NodeProto) -> set[str]:
    """Outer-scope tensors used inside If/Loop/Scan bodies (so sorting respects them)."""
    names: set[str] = set()
    for a in node.attribute:
        graphs = list(a.graphs) + ([a.g] if a.HasField("g") else [])
        for sub in graphs:
            for n in sub.node:
                names.update(n.input)
                for inner in n.attribute:
                    if inner.HasField("g") or inner.graphs:
                        names |= _subgraph_inputs(n)
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
        used |= _subgraph_inputs(n)
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


# -- constant folding ------------------------------------------------------------------------
def fold_constants(model: ModelProto, report: Report, *, where: str = "the model") -> None:
    """Replace subgraphs computed only from constants by initializers.

    Identity and Constant are handled directly (no copies of big weights); anything else that is
    constant (ConstantOfShape, Unsqueeze/Reshape/Cast of weights ...) is evaluated with
    onnxruntime in one session.  Nodes reading the image are never touched.
    """
    g = model.graph
    const: set[str] = {t.name for t in g.initializer}
    graph_outputs = {o.name for o in g.output}
    foldable: list[int] = []
    for i, n in enumerate(g.node):
        if n.domain not in STANDARD_DOMAINS or n.op_type in _NO_FOLD:
            continue
        if any(a.HasField("g") or len(a.graphs) for a in n.attribute):
            continue
        if all(x == "" or x in const for x in n.input) and all(
            o not in graph_outputs for o in n.output
        ):
            foldable.append(i)
            const.update(o for o in n.output if o)
    if not foldable:
        return
    alias: dict[str, str] = {}
    new_inits: list[TensorProto] = []
    rest: list[int] = []
    for i in foldable:
        n = g.node[i]
        if n.op_type == "Identity":
            alias[n.output[0]] = alias.get(n.input[0], n.input[0])
        elif n.op_type == "Constant" and (t := _constant_tensor(n)) is not None:
            new_inits.append(t)
        else:
            rest.append(i)
    if rest:
        try:
            new_inits += _evaluate_with_ort(
                model, rest, alias, {t.name for t in new_inits}, new_inits, where=where
            )
        except FvdeskError:
            raise
        except Exception as e:  # noqa: BLE001 - fall back to letting onnx2torch convert them
            report.warnings.append(
                f"constant folding with onnxruntime failed ({_short(e)}); kept those nodes"
            )
            foldable = [i for i in foldable if i not in set(rest)]
            # Identity/Constant aliases of tensors produced by unfolded nodes must stay nodes too.
            produced_by_rest = {o for i in rest for o in g.node[i].output}
            alias = {k: v for k, v in alias.items() if v not in produced_by_rest}
            keep_ids = {
                i
                for i in foldable
                if g.node[i].op_type != "Identity" or g.node[i].output[0] in alias
            }
            foldable = sorted(keep_ids)
    drop = set(foldable)
    folded_nodes = [g.node[i] for i in sorted(drop)]
    for n in folded_nodes:
        report.folded_nodes.add(n.name)
    folded_nodes = [NodeProto(op_type=n.op_type) for n in folded_nodes]
    for n in g.node:
        for k, x in enumerate(n.input):
            if x in alias:
                n.input[k] = alias[x]
    kept = [g.node[i] for i in range(len(g.node)) if i not in drop]
    replace_all(g.node, kept, NodeProto)
    g.initializer.extend(new_inits)
    counts = collections.Counter(n.op_type for n in folded_nodes)
    report.add(
        "folded constant nodes into initializers ("
        + ", ".join(f"{k} x{v}" for k, v in counts.items())
        + ")"
    )
    prune_unused(model, Report())


def _constant_tensor(n: NodeProto) -> TensorProto | None:
    """A ``Constant`` node's value as a named initializer; None for sparse values."""
    for a in n.attribute:
        v = helper.get_attribute_value(a)
        if a.name == "value":
            t = TensorProto()
            t.CopyFrom(v)
            t.name = n.output[0]
            return t
        arr = {
            "value_float": lambda v: np.array(v, np.float32),
            "value_floats": lambda v: np.array(list(v), np.float32),
            "value_int": lambda v: np.array(v, np.int64),
            "value_ints": lambda v: np.array(list(v), np.int64),
        }.get(a.name)
        if arr is not None:
            return numpy_helper.from_array(arr(v), n.output[0])  # type: ignore[arg-type]  # arr is one of the converters above
    return None


def _evaluate_with_ort(
    model: ModelProto,
    node_ids: list[int],
    alias: dict[str, str],
    python_consts: set[str],
    python_inits: list[TensorProto],
    *,
    where: str = "the model",
) -> list[TensorProto]:
    """Run the constant nodes in one onnxruntime session; returns initializers for their outputs.

    Shapes are inferred first: a constant that would be absurdly large (a hostile
    ``ConstantOfShape``) is refused before onnxruntime allocates it."""
    import onnxruntime as ort

    from fvdesk.core.model import vet

    g = model.graph
    nodes = [g.node[i] for i in node_ids]
    produced = {o for n in nodes for o in n.output if o}
    needed_inputs = {alias.get(x, x) for n in nodes for x in n.input if x and x not in produced}
    consumers_outside: set[str] = set()
    folded_ids = set(node_ids)
    for i, n in enumerate(g.node):
        if i not in folded_ids:
            consumers_outside.update(alias.get(x, x) for x in n.input)
    outputs = [o for n in nodes for o in n.output if o and o in consumers_outside]
    # Constants consumed only by Identity aliases still need a value.
    outputs += [v for v in set(alias.values()) if v in produced and v not in outputs]
    if not outputs:
        return []
    sub = helper.make_graph(
        [_renamed_inputs(n, alias) for n in nodes],
        "fvdesk_constant_folding",
        inputs=[],
        outputs=[helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
        initializer=[t for t in g.initializer if t.name in needed_inputs]
        + [t for t in python_inits if t.name in needed_inputs],
    )
    m = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    vet.check_inferred_sizes(without_weights(m)[0], where, what="constant")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = sess.run(outputs, {})
    return [
        numpy_helper.from_array(np.asarray(v), name)
        for name, v in zip(outputs, values, strict=True)
    ]


def _renamed_inputs(n: NodeProto, alias: dict[str, str]) -> NodeProto:
    c = NodeProto()
    c.CopyFrom(n)
    for k, x in enumerate(c.input):
        if x in alias:
            c.input[k] = alias[x]
    return c


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


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
            return _restore_weights(converted, model, stubbed)
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
        schema = defs.get_schema(n.op_type, opset, "")  # type: ignore[attr-defined]  # missing from onnx's stubs
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


# -- weight-free copies -------------------------------------------------------------------------
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


def _restore_weights(light: ModelProto, full: ModelProto, stubbed: list[str]) -> ModelProto:
    """Put the stubbed weights of ``full`` back into a (converted) weight-free copy ``light``."""
    names = set(stubbed)
    inputs = [i for i in light.graph.input if i.name not in names]
    replace_all(light.graph.input, inputs, onnx.ValueInfoProto)
    light.graph.initializer.extend(t for t in full.graph.initializer if t.name in names)
    return light


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
            report.warnings.append(f"onnx shape inference failed ({_short(error)})")
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
        dims = [1] + [int(d) + int(p[i]) + int(p[i + rank]) for i, d in enumerate(shape) if i]  # type: ignore[arg-type]  # shape[1:] checked positive ints above
        border = np.full(dims, c[0], dtype=numpy_helper.to_array(value).dtype)
        inner = (slice(None),) + tuple(
            slice(int(p[i]), int(p[i]) + int(shape[i]))  # type: ignore[arg-type]  # checked above
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
