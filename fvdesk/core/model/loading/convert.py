"""Conversion: onnx2torch's ``convert`` with the node being converted tracked, so that a node
whose converter raises is reported (``NodeFailed``) and the graph can be cut there."""

from __future__ import annotations

import collections
import threading
import warnings
from collections.abc import Callable
from typing import Any

from torch import fx

from fvdesk.core.errors import FvdeskError, ModelLoadError, UnsupportedModelError
from fvdesk.core.model import cut as cutlib
from fvdesk.core.model.loading.context import LoadContext, cause
from fvdesk.core.model.onnx2torch_compat import import_onnx2torch

onnx2torch = import_onnx2torch()


def convert(ctx: LoadContext, model: Any, *, own_inference: bool = False) -> fx.GraphModule:
    """onnx2torch's conversion; a node whose converter raises becomes ``NodeFailed`` (the
    graph can be cut there).  ``own_inference`` lets onnx2torch infer shapes itself (the file
    converted without fvdesk's repairs, as plain onnx2torch would)."""
    current: list[Any] = []
    conv = onnx2torch.converter
    original_get: Any  # bound below, before tracked() is installed

    def tracked(*args: Any, **kwargs: Any) -> Any:
        converter = original_get(*args, **kwargs)

        def run(node: Any, graph: Any) -> Any:
            current[:] = [node]
            out = converter(node, graph)
            current.clear()
            return out

        return run

    try:
        with warnings.catch_warnings(), _CONVERT_LOCK:
            warnings.simplefilter("ignore")
            # Shapes were inferred already (on a weight-free copy); onnx2torch would serialize
            # the whole model again to redo it.
            original_inf, original_get = conv.safe_shape_inference, conv.get_converter
            conv.safe_shape_inference = (
                _tolerant(original_inf) if own_inference else _no_shape_inference
            )
            conv.get_converter = tracked
            try:
                module = conv.convert(model, attach_onnx_mapping=True)
            finally:
                conv.safe_shape_inference, conv.get_converter = original_inf, original_get
    except (
        NotImplementedError,
        KeyError,
        ValueError,
        TypeError,
        IndexError,
        RuntimeError,
    ) as e:
        if current:
            node = current[0]
            op = node.operation_type if not node.domain else f"{node.domain}::{node.operation_type}"
            why = cause(e) if not isinstance(e, KeyError) else f"tensor {e} is computed at run time"
            raise NodeFailed(
                cutlib.Blocker(
                    node.name, op, f"onnx2torch cannot convert it ({why})", f"{op} ({why})"
                )
            ) from None
        if isinstance(e, NotImplementedError):
            raise UnsupportedModelError(
                f"{ctx.path} cannot be converted to torch: {cause(e)}."
            ) from None
        if isinstance(e, KeyError):
            raise ModelLoadError(
                f"{ctx.path} could not be converted to torch: onnx2torch could not find tensor {e} "
                "(a weight that is computed at run time?)."
            ) from None
        raise
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class NodeFailed(Exception):
    """onnx2torch's converter for one node raised: the graph can be cut there."""

    def __init__(self, blocker: cutlib.Blocker) -> None:
        super().__init__(blocker.reason)
        self.blocker = blocker


def nothing_convertible(path: str, bad: list[cutlib.Blocker]) -> FvdeskError:
    """Nothing before the unconvertible nodes can be shown: the whole-model refusal."""
    counts = collections.Counter(b.label for b in bad)
    listed = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    if all("::" in b.op for b in bad):
        return UnsupportedModelError(
            f"{path} uses custom-domain operators that cannot be converted to torch ({listed})."
        )
    return UnsupportedModelError(
        f"{path} uses operators that onnx2torch cannot convert ({listed})."
    )


_CONVERT_LOCK = threading.Lock()


def _no_shape_inference(model: Any, **_kwargs: Any) -> Any:
    return model


def _tolerant(inference: Callable[..., Any]) -> Callable[..., Any]:
    """onnx2torch's own shape inference, but a graph it rejects is converted as it is."""

    def run(model: Any, **kwargs: Any) -> Any:
        try:
            return inference(model, **kwargs)
        except Exception:  # noqa: BLE001 - shapes are optional for most converters
            return model

    return run
