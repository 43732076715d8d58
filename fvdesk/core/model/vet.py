"""Refusing absurd sizes before anything allocates them.

An ONNX file declares sizes everywhere: weight dims, the image input's dims, shapes that
``ConstantOfShape``/``Expand``/``Resize`` compute from constants.  A corrupt or hostile file can
declare a weight of 10^12 values backed by four bytes, or a graph whose third node would allocate
a terabyte.  numpy, onnxruntime and torch would try (and the operating system may kill the whole
app, or swap the machine to a halt, instead of raising).  These checks run on declared numbers
only, before any of that work:

* every weight's declared element count matches the data the file holds, and no single weight
  exceeds ``MAX_WEIGHT_BYTES``;
* the image input's sides stay within ``MAX_IMAGE_SIDE``;
* with the image input fixed at the size fvdesk will probe (batch 2), onnx shape inference (with
  data propagation, so shapes computed from constants resolve) finds no tensor larger than
  ``MAX_TENSOR_BYTES``.
"""

from __future__ import annotations

import math
from typing import Any

from onnx import ModelProto, TensorProto, helper

from fvdesk.core.errors import ModelLoadError

MAX_WEIGHT_BYTES = 4 << 30
MAX_TENSOR_BYTES = 2 << 30
MAX_IMAGE_SIDE = 8192
PROBE_BATCH = 2

_TYPED_FIELDS: dict[int, str] = {
    TensorProto.FLOAT: "float_data",
    TensorProto.COMPLEX64: "float_data",
    TensorProto.DOUBLE: "double_data",
    TensorProto.COMPLEX128: "double_data",
    TensorProto.INT64: "int64_data",
    TensorProto.UINT32: "uint64_data",
    TensorProto.UINT64: "uint64_data",
    TensorProto.STRING: "string_data",
}
_VALUES_PER_ITEM: dict[int, int] = {TensorProto.COMPLEX64: 2, TensorProto.COMPLEX128: 2}


def _itemsize(data_type: int) -> int:
    try:
        return max(1, helper.tensor_dtype_to_np_dtype(data_type).itemsize)
    except (KeyError, ValueError, TypeError):
        return 4


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def tensor_bytes(t: TensorProto) -> int | None:
    """The bytes a tensor's raw data must hold (None for strings, whose size is not fixed)."""
    if t.data_type == TensorProto.STRING:
        return None
    n = math.prod(int(d) for d in t.dims)
    if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (n + 1) // 2
    return n * _itemsize(t.data_type)


def tensor_problem(t: TensorProto) -> str | None:
    """Why a weight's declaration cannot be right (negative dims, data that does not match the
    declared count, an absurd size), or None."""
    if any(d < 0 for d in t.dims):
        return f"weight {t.name!r} has negative dimensions {list(t.dims)}"
    n = math.prod(int(d) for d in t.dims)
    nbytes = n * _itemsize(t.data_type)
    if nbytes > MAX_WEIGHT_BYTES:
        return f"weight {t.name!r} declares {n} values ({_gib(nbytes)})"
    if t.data_location == TensorProto.EXTERNAL:
        return None
    if t.HasField("raw_data"):
        want = nbytes
        if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
            want = (n + 1) // 2
        if len(t.raw_data) != want:
            return (
                f"weight {t.name!r} declares {n} values but holds {len(t.raw_data)} bytes of data"
            )
        return None
    field = _TYPED_FIELDS.get(t.data_type, "int32_data")
    have = len(getattr(t, field))
    want = n * _VALUES_PER_ITEM.get(t.data_type, 1)
    if t.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT4):
        want = have if have in (n, (n + 1) // 2) else n
    if have != want and not (have == 0 and n == 0):
        return f"weight {t.name!r} declares {n} values but holds {have}"
    return None


def check_declared_sizes(model: ModelProto, where: str) -> None:
    """Weights (initializers and ``Constant`` values) must hold what they declare."""
    tensors: list[TensorProto] = list(model.graph.initializer)
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == a.TENSOR:
                tensors.append(a.t)
            tensors.extend(a.tensors)
    for t in tensors:
        problem = tensor_problem(t)
        if problem is not None:
            raise ModelLoadError(f"{where} is corrupt: {problem}.")


def check_opsets(model: ModelProto, where: str) -> None:
    """Opset versions must be ones an ONNX release can define (refuses corrupt numbers before
    onnx's schema lookups choke on them)."""
    from onnx import defs

    newest = defs.onnx_opset_version()
    for o in model.opset_import:
        standard = o.domain in ("", "ai.onnx")
        if o.version < 1 or o.version >= 1 << 31 or (standard and o.version > newest):
            name = "the standard opset" if standard else f"opset {o.domain!r}"
            raise ModelLoadError(
                f"{where} declares {name} version {o.version}, which "
                + (
                    f"is newer than any fvdesk knows ({newest})."
                    if standard and o.version > newest
                    else "is not a valid version."
                )
            )


def check_text(model: ModelProto, where: str) -> None:
    """Names and metadata must be text: protobuf hands out invalid UTF-8 as bytes, which no later
    step expects (a corrupt or hostile file)."""

    def bad(values: Any) -> bool:
        return any(isinstance(v, bytes) for v in values)

    def graph_bad(g: Any) -> str | None:
        for i, n in enumerate(g.node):
            if bad([n.name, n.op_type, n.domain, *n.input, *n.output]) or bad(
                a.name for a in n.attribute
            ):
                return f"node {i}"
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    found = graph_bad(sub)
                    if found:
                        return found
        names = [t.name for t in g.initializer] + [
            v.name for v in [*g.input, *g.output, *g.value_info]
        ]
        return "a tensor name" if bad(names) or bad([g.name]) else None

    where_bad = graph_bad(model.graph)
    if where_bad is None and bad(
        [o.domain for o in model.opset_import]
        + [p.key for p in model.metadata_props]
        + [p.value for p in model.metadata_props]
        + [model.producer_name, model.domain]
    ):
        where_bad = "its metadata"
    if where_bad is not None:
        raise ModelLoadError(f"{where} is corrupt: {where_bad} holds text that is not valid UTF-8.")


def check_image_size(height: int, width: int, where: str) -> None:
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise ModelLoadError(
            f"{where} declares an image input of {height}×{width} pixels; fvdesk handles up to "
            f"{MAX_IMAGE_SIDE} pixels per side."
        )


def check_inferred_sizes(model: ModelProto, where: str, *, what: str = "tensor") -> None:
    """Refuse when onnx shape inference (with data propagation) finds a static shape whose size
    exceeds ``MAX_TENSOR_BYTES``.  ``model`` should be weight-free (it is serialized)."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(
            model, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception:  # noqa: BLE001 - nothing known, nothing to refuse
        return
    g = inferred.graph
    for vi in list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        if any(d < 0 for d in dims):
            continue
        nbytes = math.prod(dims) * _itemsize(t.elem_type)
        if nbytes > MAX_TENSOR_BYTES:
            shown = "×".join(str(d) for d in dims)
            raise ModelLoadError(
                f"{where} would compute a {what} {vi.name!r} of {shown} values ({_gib(nbytes)}), "
                "more than fvdesk allows for one tensor."
            )


def check_activation_sizes(light: ModelProto, spec: dict[str, Any], where: str) -> None:
    """With the image input at the probe's batch and size, no tensor may be absurdly large.

    ``light`` is a weight-free copy of the graph (``canonicalize.without_weights``); its image
    input and value_info are changed."""
    check_image_size(int(spec["height"]), int(spec["width"]), where)
    for vi in light.graph.input:
        if vi.name != spec["name"]:
            continue
        h, w, c = int(spec["height"]), int(spec["width"]), int(spec["channels"])
        dims = [PROBE_BATCH, c, h, w] if spec["layout"] == "NCHW" else [PROBE_BATCH, h, w, c]
        elem = vi.type.tensor_type.elem_type or TensorProto.FLOAT
        vi.type.CopyFrom(helper.make_tensor_type_proto(elem, dims))
    del light.graph.value_info[:]
    check_inferred_sizes(light, where)
