"""Constant folding: subgraphs computed only from constants become initializers, never touching a
node that reads the image."""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from fvdesk.core.errors import FvdeskError
from fvdesk.core.model.nodes import replace_all
from fvdesk.core.model.repairs.common import STANDARD_DOMAINS, Report, short_error
from fvdesk.core.model.repairs.structure import prune_unused
from fvdesk.core.model.repairs.weights import without_weights

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
                f"constant folding with onnxruntime failed ({short_error(e)}); kept those nodes"
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
            return numpy_helper.from_array(np.asarray(arr(v)), n.output[0])
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
