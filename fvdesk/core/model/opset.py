"""Opset 18+ graphs lowered to opset 17, the newest opset onnx2torch converts, exactly or not at all.

Current exporters (torch's dynamo exporter writes opset 18 and later) use operator versions that
onnx2torch has no converter for, and onnx's version converter has no adapter back for several of
them (``Pad`` with an ``axes`` input among them).  Most changes since opset 17 are either new
types (bfloat16, float8, int4: irrelevant to a float32 graph) or a constant that moved between an
attribute and an input.  ``lower_to_17`` rewrites every node of the default domain to its opset-17
form and then declares opset 17, but only when it can do so for every node without changing what
the graph computes; otherwise it leaves the model untouched (the caller tries onnx's version
converter and function expansion next).

Rewrites (each exact):

* ``Reduce*`` v18/v20: constant ``axes`` input -> ``axes`` attribute; empty axes with
  ``noop_with_empty_axes=1`` -> ``Identity``.
* ``Pad`` v18+: constant ``axes`` input -> full-rank ``pads``; ``wrap`` mode is refused.
* ``Split`` v18: ``num_outputs`` -> an explicit ``split`` input from the static dimension
  (the last part is the smaller one, as v18 defines).
* ``Resize`` v18/v19: ``axes`` -> full-rank ``scales``/``sizes``/``roi``;
  ``keep_aspect_ratio_policy`` -> the sizes it implies (static shapes); ``antialias=1`` and the
  v19 ``half_pixel_symmetric`` mode are refused.
* ``Cast`` v19+: ``saturate`` dropped (it only affects float8 targets, which are refused).
* ``AveragePool`` v19+: ``dilations`` of 1 dropped.
* ``GridSample`` v20+: mode names ``linear``/``cubic`` back to ``bilinear``/``bicubic``.
* ``Reshape`` (any opset): ``allowzero=1`` dropped when the constant target has no zero, where it
  makes no difference (torch's dynamo exporter sets it on every Reshape).

Any other node whose schema changed since opset 17 is accepted only when the change is
structural-free (same inputs, outputs and attributes: a type extension) and the node sets no
attribute unknown at opset 17.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, defs, numpy_helper

from fvdesk.core.model.nodes import attr as _attr
from fvdesk.core.model.nodes import set_attr as _set

TARGET = 17
_REDUCE = {
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}
_FLOAT8 = {
    TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ,
    TensorProto.FLOAT8E5M2,
    TensorProto.FLOAT8E5M2FNUZ,
}
_DEFAULT = ("", "ai.onnx")


class NotLowerable(Exception):
    """A node cannot be expressed at opset 17 exactly (the message says why)."""


class _Ctx:
    """What the rewrites may read and add: constants, static shapes, new initializers."""

    def __init__(self, model: ModelProto, shapes: dict) -> None:
        self.consts = {t.name: t for t in model.graph.initializer}
        self.shapes = shapes
        self.new_inits: list[TensorProto] = []
        self.counter = 0

    def const(self, name: str) -> np.ndarray | None:
        t = self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def add_const(self, base: str, value: np.ndarray) -> str:
        self.counter += 1
        name = f"{base}__fvdesk_v17_{self.counter}"
        t = numpy_helper.from_array(value, name)
        self.new_inits.append(t)
        self.consts[name] = t
        return name

    def shape(self, tensor: str) -> tuple | None:
        return self.shapes.get(tensor)

    def rank(self, tensor: str) -> int:
        s = self.shape(tensor)
        if s is None:
            raise NotLowerable(f"the rank of {tensor!r} is unknown")
        return len(s)

    def dim(self, tensor: str, axis: int) -> int:
        s = self.shape(tensor)
        if s is None or not -len(s) <= axis < len(s):
            raise NotLowerable(f"the shape of {tensor!r} is unknown")
        d = s[axis]
        if not isinstance(d, int) or d <= 0:
            raise NotLowerable(f"dimension {axis} of {tensor!r} is not static")
        return d


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _input(n: NodeProto, k: int) -> str:
    return n.input[k] if len(n.input) > k else ""


def _needs_const(ctx: _Ctx, n: NodeProto, k: int, what: str) -> np.ndarray | None:
    name = _input(n, k)
    if not name:
        return None
    v = ctx.const(name)
    if v is None:
        raise NotLowerable(f"{n.op_type} {n.name!r} takes its {what} at run time")
    return v


# -- per-op rewrites ----------------------------------------------------------------------------
def _reduce(n: NodeProto, ctx: _Ctx) -> None:
    axes = _needs_const(ctx, n, 1, "axes")
    noop = int(_attr(n, "noop_with_empty_axes", 0) or 0)
    del n.input[1:]
    _set(n, "noop_with_empty_axes", None)
    if axes is None or axes.size == 0:
        if noop:
            n.op_type = "Identity"
            del n.attribute[:]
        return  # no axes attribute: reduce over all axes, as v18 does with noop=0
    _set(n, "axes", [int(a) for a in axes.reshape(-1)])


def _pad(n: NodeProto, ctx: _Ctx) -> None:
    mode = _text(_attr(n, "mode", "constant"))
    if mode == "wrap":
        raise NotLowerable(f"Pad {n.name!r} uses wrap mode, which opset 17 lacks")
    if len(n.input) < 4 or not n.input[3]:
        return
    pads = _needs_const(ctx, n, 1, "pads")
    axes = _needs_const(ctx, n, 3, "axes")
    assert pads is not None and axes is not None
    rank = ctx.rank(n.input[0])
    full = np.zeros(2 * rank, np.int64)
    k = len(axes.reshape(-1))
    for i, a in enumerate(int(x) for x in axes.reshape(-1)):
        a = a + rank if a < 0 else a
        if not 0 <= a < rank:
            raise NotLowerable(f"Pad {n.name!r} has an axis out of range")
        full[a], full[a + rank] = pads[i], pads[i + k]
    n.input[1] = ctx.add_const(n.name or "pad", full)
    del n.input[3:]
    if len(n.input) == 3 and not n.input[2]:
        del n.input[2]


def _split(n: NodeProto, ctx: _Ctx) -> None:
    count = _attr(n, "num_outputs")
    if count is None:
        return
    _set(n, "num_outputs", None)
    if _input(n, 1):
        return
    axis = int(_attr(n, "axis", 0) or 0)
    d = ctx.dim(n.input[0], axis)
    c = int(count)
    chunk = -(-d // c)
    sizes = [chunk] * (c - 1) + [d - chunk * (c - 1)]
    if sizes[-1] < 0 or len(n.output) != c:
        raise NotLowerable(f"Split {n.name!r} cannot split {d} into {c} parts")
    while len(n.input) < 2:
        n.input.append("")
    n.input[1] = ctx.add_const(n.name or "split", np.array(sizes, np.int64))


def _resize(n: NodeProto, ctx: _Ctx) -> None:
    if int(_attr(n, "antialias", 0) or 0):
        raise NotLowerable(f"Resize {n.name!r} antialiases, which opset 17 cannot express")
    if _text(_attr(n, "coordinate_transformation_mode", "half_pixel")) == "half_pixel_symmetric":
        raise NotLowerable(f"Resize {n.name!r} uses half_pixel_symmetric coordinates")
    policy = _text(_attr(n, "keep_aspect_ratio_policy", "stretch"))
    axes_attr = _attr(n, "axes")
    for name in ("antialias", "keep_aspect_ratio_policy", "axes"):
        _set(n, name, None)
    x = n.input[0]
    sizes = _needs_const(ctx, n, 3, "sizes")
    if axes_attr is None and policy == "stretch":
        return
    rank = ctx.rank(x)
    axes = [int(a) + (rank if int(a) < 0 else 0) for a in (axes_attr or range(rank))]
    roi = _needs_const(ctx, n, 1, "roi")
    scales = _needs_const(ctx, n, 2, "scales")
    if sizes is not None and sizes.size:
        sizes = sizes.astype(np.int64).reshape(-1)
        ins = [ctx.dim(x, a) for a in axes]
        if policy != "stretch":
            ratios = [float(s / d) for s, d in zip(sizes, ins, strict=True)]
            r = min(ratios) if policy == "not_larger" else max(ratios)
            sizes = np.array([int(np.floor(r * d + 0.5)) for d in ins], np.int64)
        static = ctx.shape(x)
        if static is not None and all(isinstance(d, int) and d > 0 for d in static):
            full = np.array(static, np.int64)
            full[axes] = sizes
            n.input[3] = ctx.add_const(n.name or "resize", full)
        else:  # a dynamic batch: the same output through scales, where float32 gives it exactly
            full_s = np.ones(rank, np.float32)
            for a, size, d in zip(axes, sizes, ins, strict=True):
                full_s[a] = np.float32(size / d)
                if int(np.floor(np.float32(d) * full_s[a])) != int(size):
                    raise NotLowerable(f"Resize {n.name!r} sizes are not exact as scales")
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = ctx.add_const(n.name or "resize", full_s)
            del n.input[3:]
    elif scales is not None and scales.size:
        full_s = np.ones(rank, np.float32)
        full_s[axes] = scales.reshape(-1)
        n.input[2] = ctx.add_const(n.name or "resize", full_s)
    if roi is not None and roi.size:
        k = len(axes)
        full_r = np.array([0.0] * rank + [1.0] * rank, np.float32)
        for i, a in enumerate(axes):
            full_r[a], full_r[a + rank] = roi.reshape(-1)[i], roi.reshape(-1)[i + k]
        n.input[1] = ctx.add_const(n.name or "resize", full_r)


def _cast(n: NodeProto, ctx: _Ctx) -> None:
    if int(_attr(n, "to", 0) or 0) in _FLOAT8:
        raise NotLowerable(f"Cast {n.name!r} casts to float8")
    _set(n, "saturate", None)


def _avgpool(n: NodeProto, ctx: _Ctx) -> None:
    dil = _attr(n, "dilations")
    if dil is not None and any(int(d) != 1 for d in dil):
        raise NotLowerable(f"AveragePool {n.name!r} is dilated, which opset 17 lacks")
    _set(n, "dilations", None)


def _gridsample(n: NodeProto, ctx: _Ctx) -> None:
    mode = _text(_attr(n, "mode", "linear"))
    old = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    if old not in ("bilinear", "bicubic", "nearest") or ctx.rank(n.input[0]) != 4:
        raise NotLowerable(f"GridSample {n.name!r} is not a 2-D bilinear/bicubic/nearest sample")
    _set(n, "mode", old)


def _scatter(n: NodeProto, ctx: _Ctx) -> None:
    if _text(_attr(n, "reduction", "none")) in ("max", "min"):
        raise NotLowerable(f"{n.op_type} {n.name!r} reduces with max/min, which opset 17 lacks")


_RULES: dict[str, Callable[[NodeProto, _Ctx], None]] = {
    **dict.fromkeys(_REDUCE, _reduce),
    "Pad": _pad,
    "Split": _split,
    "Resize": _resize,
    "Cast": _cast,
    "AveragePool": _avgpool,
    "GridSample": _gridsample,
    "ScatterElements": _scatter,
    "ScatterND": _scatter,
}


def _same_structure(new: defs.OpSchema, old: defs.OpSchema, n: NodeProto) -> bool:
    """A type-only change: same formal inputs/outputs, and the node sets only old attributes."""
    if [(p.name, p.option) for p in new.inputs] != [(p.name, p.option) for p in old.inputs]:
        return False
    if [(p.name, p.option) for p in new.outputs] != [(p.name, p.option) for p in old.outputs]:
        return False
    return all(a.name in old.attributes for a in n.attribute)


def _lower_node(n: NodeProto, opset: int, ctx: _Ctx) -> bool:
    """Rewrite one node in place for opset 17; False when it already means the same there."""
    try:
        new = defs.get_schema(n.op_type, opset, "")
    except defs.SchemaError:
        raise NotLowerable(f"{n.op_type} is not a standard operator at opset {opset}") from None
    try:
        old = defs.get_schema(n.op_type, TARGET, "")
    except defs.SchemaError:
        raise NotLowerable(f"{n.op_type} does not exist at opset {TARGET}") from None
    if any(a.HasField("g") or len(a.graphs) for a in n.attribute):
        raise NotLowerable(f"{n.op_type} {n.name!r} holds a subgraph")
    rule = _RULES.get(n.op_type)
    if new.since_version == old.since_version:
        if rule is _scatter:
            rule(n, ctx)
        return False
    if rule is not None:
        rule(n, ctx)
        return True
    if _same_structure(new, old, n):
        return False
    raise NotLowerable(f"{n.op_type} changed between opset {old.since_version} and {opset}")


def default_opset(model: ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in _DEFAULT), 0)


def lower_to_17(model: ModelProto, shapes: dict) -> tuple[collections.Counter[str], str | None]:
    """Rewrite ``model`` (opset > 17) to opset 17 in place when every node allows it.

    ``shapes`` maps tensor names to inferred shapes (``canonicalize.known_shapes``).  Returns
    (rewritten op counts, None) on success, or (empty, the reason) leaving ``model`` unchanged.
    """
    opset = default_opset(model)
    if opset <= TARGET:
        return collections.Counter(), "the model is already at opset 17 or below"
    nodes = [NodeProto() for _ in model.graph.node]  # edited copies: all or nothing
    for dst, src in zip(nodes, model.graph.node, strict=True):
        dst.CopyFrom(src)
    ctx = _Ctx(model, shapes)
    counts: collections.Counter[str] = collections.Counter()
    try:
        for n in nodes:
            op = n.op_type
            if n.domain in _DEFAULT and _lower_node(n, opset, ctx):
                counts[op] += 1
    except NotLowerable as e:
        return collections.Counter(), str(e)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(ctx.new_inits)
    for o in model.opset_import:
        if o.domain in _DEFAULT:
            o.version = TARGET
    return counts, None


def drop_needless_allowzero(model: ModelProto) -> int:
    """``Reshape(allowzero=1)`` with a constant target without zeros means the same as without
    the flag, which onnx2torch refuses; returns how many were dropped."""
    consts = {t.name: t for t in model.graph.initializer}
    count = 0
    for n in model.graph.node:
        if n.op_type != "Reshape" or n.domain not in _DEFAULT or not _attr(n, "allowzero", 0):
            continue
        target = consts.get(_input(n, 1))
        if target is not None and 0 not in numpy_helper.to_array(target).reshape(-1).tolist():
            _set(n, "allowzero", None)
            count += 1
    return count
