"""Probing the converted module: forwards at batch 1 and 2 record every tensor's shape and which
tensors carry the batch; a larger input tells ``fixed_size``; sizes with 0, 1, 2... factors of 2
tell a size-agnostic graph's ``size_multiple``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from fvdesk.core.model.loading.context import PARITY_SEED, LoadContext, cause
from fvdesk.core.model.loading.inputs import input_shape


def probe_sizes(
    ctx: LoadContext,
    module: fx.GraphModule,
    index: int,
    spec: dict,
    extra: dict[str, torch.Tensor],
    batch_first: list[bool],
) -> tuple[bool, int]:
    """``fixed_size``: a larger input fails (fixed reshapes fail or mis-shape there); and for a
    size-agnostic graph its ``size_multiple``."""

    def accepted(shape: list[int]) -> bool:
        return runs(module, index, shape, extra, expect_batch=1, batch_first=batch_first)

    h, w = spec["height"], spec["width"]
    fixed = not accepted(input_shape(spec, 1, h + 32, w + 32))
    if fixed and spec["dynamic_size"]:
        ctx.warnings.append(
            f"{ctx.path.name} declares a dynamic input size but only runs at {h}×{w}."
        )
    return fixed, 1 if fixed else _size_multiple(spec, accepted)


def _size_multiple(spec: dict, accepted: Callable[[list[int]], bool]) -> int:
    """The size granularity of a size-agnostic graph: the smallest ``m = 2**j`` at which a
    square input whose size has exactly ``j`` factors of 2 runs (stride-2 stages joined by
    adds or concats fail otherwise).  Sizes start at the native size, capped at 128 px (cheap,
    yet a graph with a minimum size is not taken for one with a multiple); batch 1, no
    gradients; a failing size stops at the first mismatched add, and most graphs pass the
    first probe.  When none runs no multiple is claimed."""
    floor = min(spec["height"], spec["width"], _MULTIPLE_FLOOR)
    with torch.no_grad():
        for j in range(_MULTIPLE_MAX + 1):
            s = multiple_probe_size(floor, j)
            if accepted(input_shape(spec, 1, s, s)):
                return 1 << j
    return 1


_MULTIPLE_FLOOR = 128  # probe sizes for ``size_multiple`` start here (or at the native size)
_MULTIPLE_MAX = 6  # multiples up to 2**6 = 64 are measured


def multiple_probe_size(floor: int, j: int) -> int:
    """The smallest size >= ``floor`` with exactly ``j`` factors of 2 (an odd multiple of 2**j)."""
    k = -(-floor // (1 << j))
    return (k if k % 2 else k + 1) << j


class ProbeError(Exception):
    """The converted module failed at the probe; ``size_agnostic``: every spatial dimension was
    declared dynamic, so the size probed may simply not be the model's."""

    def __init__(self, message: str, spec: dict | None = None) -> None:
        super().__init__(message)
        self.size_agnostic = bool(spec and spec.get("dynamic_size"))
        self.size_source = (spec or {}).get("size_source", "default")


class ShapeRecorder(fx.Interpreter):
    """Runs the module once and keeps (shape, dtype) of every node's value instead of the value."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = _shape_of(out)
        return out


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


def _shape_of(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return TensorInfo(tuple(int(s) for s in v.shape), v.dtype)
    if isinstance(v, (tuple, list)):
        return tuple(_shape_of(x) for x in v)
    return None


def _image(spec: dict, batch: int) -> tuple[list[int], torch.Tensor]:
    shape = (
        [batch, spec["channels"], spec["height"], spec["width"]]
        if spec["layout"] == "NCHW"
        else [batch, spec["height"], spec["width"], spec["channels"]]
    )
    gen = torch.Generator().manual_seed(PARITY_SEED)
    return shape, torch.rand(shape, generator=gen)


def module_args(
    module: fx.GraphModule, index: int, x: torch.Tensor, extra: dict[str, torch.Tensor]
) -> list:
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    return [x if i == index else extra[ph.name] for i, ph in enumerate(placeholders)]


@torch.no_grad()
def probe(
    module: fx.GraphModule, index: int, spec: dict, extra: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, Any] | None, int | None, list[bool]]:
    """Forwards at the native size recording every fx node's (shape, dtype) (tuples for
    multi-output nodes).

    Batch 1 must run.  Batch 2 then tells whether the graph takes any batch (fixed reshapes fail
    or mis-shape their outputs there) and, compared with batch 1, which tensors carry the batch
    in dim 0 (a transformer's sequence-first internals and windowed tokens do not).  Returns
    (values at the probe batch, values at batch 1 when that was 2, max_batch, per module output:
    its dim 0 is the batch).
    """
    shape, x = _image(spec, 1)
    rec1 = ShapeRecorder(module)
    try:
        out1 = rec1.run(*module_args(module, index, x, extra))
    except Exception as e:  # noqa: BLE001
        raise ProbeError(
            f"fails to run on a {'x'.join(map(str, shape))} input: {cause(e)}", spec
        ) from e
    first = [isinstance(o, torch.Tensor) and o.dim() >= 1 and o.shape[0] == 1 for o in outs(out1)]
    _shape2, x2 = _image(spec, 2)
    rec2 = ShapeRecorder(module)
    try:
        out2 = rec2.run(*module_args(module, index, x2, extra))
    except Exception:  # noqa: BLE001 - batch 1 only
        return rec1.values, None, 1, first
    if not outputs_ok(out2, 2, first):
        return rec1.values, None, 1, first
    return rec2.values, rec1.values, None, first


def probed(values: dict[str, Any] | None, src: tuple[fx.Node, int, int]) -> TensorInfo | None:
    """The recorded (shape, dtype) of output ``k`` of an fx node."""
    if values is None:
        return None
    value = values.get(src[0].name)
    if isinstance(value, tuple):
        return value[src[1]] if src[1] < len(value) else None
    return None if src[1] > 0 else value


def per_image(shape: tuple[int, ...], at_batch1: TensorInfo | None, max_batch: int | None) -> bool:
    """Whether dim 0 of a tensor is the batch (from the probes at batch 2 and 1)."""
    if not shape:
        return False
    if max_batch == 1 or at_batch1 is None:
        return shape[0] == 1
    one = at_batch1.shape
    return len(one) == len(shape) and shape[0] == 2 and one[0] == 1 and one[1:] == shape[1:]


def outs(out: Any) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@torch.no_grad()
def runs(
    module: fx.GraphModule,
    index: int,
    shape: list[int],
    extra: dict[str, torch.Tensor],
    *,
    expect_batch: int,
    batch_first: list[bool] | None = None,
) -> bool:
    x = torch.zeros(shape)
    try:
        out = module(*module_args(module, index, x, extra))
    except Exception:  # noqa: BLE001 - any failure means "not accepted"
        return False
    return outputs_ok(out, expect_batch, batch_first)


def outputs_ok(out: Any, expect_batch: int, batch_first: list[bool] | None = None) -> bool:
    """Outputs are finite and, where dim 0 is the batch (``batch_first``), have ``expect_batch``."""
    for i, o in enumerate(outs(out)):
        first = batch_first[i] if batch_first is not None and i < len(batch_first) else True
        if isinstance(o, torch.Tensor) and first and o.dim() >= 2 and o.shape[0] != expect_batch:
            return False
        if isinstance(o, torch.Tensor) and o.is_floating_point() and not torch.isfinite(o).all():
            return False
    return True
