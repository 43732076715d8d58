"""The image input: which graph input is the image (the rule in ``loader``'s docstring), its
layout, channels and size (the user's, the metadata's training size, or the declared one), and
zeros for the other inputs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from fvdesk.core.errors import (
    AmbiguousInputError,
    ConfigError,
    ModelLoadError,
    UnsupportedModelError,
)
from fvdesk.core.model.loading.context import LoadContext

DEFAULT_SIZE = 224
FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def find_image_input(
    ctx: LoadContext, model: Any, chosen: str | None, *, explicit: bool
) -> tuple[int, dict]:
    inputs = list(model.graph.input)
    described = [describe_input(vi) for vi in inputs]
    if chosen is not None:
        names = [vi.name for vi in inputs]
        if chosen not in names:
            if explicit:
                raise ModelLoadError(
                    f"{ctx.path} has no input named {chosen!r} (inputs: {', '.join(described) or 'none'})."
                )
            ctx.warnings.append(
                f"The sidecar names input {chosen!r}, which {ctx.path.name} does not have."
            )
        else:
            i = names.index(chosen)
            spec = image_spec(inputs[i])
            if spec is None:
                raise UnsupportedModelError(
                    f"{ctx.path}: input {described[i]} is not an image input "
                    "(need float N x C x H x W or N x H x W x C with 1 or 3 channels)."
                )
            return i, spec
    candidates = [(i, s) for i, vi in enumerate(inputs) if (s := image_spec(vi)) is not None]
    if not candidates:
        raise UnsupportedModelError(
            f"{ctx.path} has no image-like input (inputs: {', '.join(described) or 'none'}); "
            "fvdesk needs a float N x C x H x W or N x H x W x C input with 1 or 3 channels."
        )
    if len(candidates) > 1:
        names = [s["name"] for _, s in candidates]
        raise AmbiguousInputError(
            f"{ctx.path} has several image-like inputs ({', '.join(names)}); choose one with input_name.",
            names,
        )
    return candidates[0]


def size_hint(
    ctx: LoadContext, metadata: dict[str, str], spec: dict, user: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """The user's input size, else the training size a size-agnostic model records
    (``fvdesk.input_size``, Ultralytics' ``imgsz``); a fixed-size model given or recording
    another size gets a warning."""
    hint = user or metadata_size(metadata, str(ctx.path))
    spec["size_source"] = "user" if user else ("metadata" if hint else "default")
    if hint is None or spec["dynamic_size"]:
        return hint
    if hint != (spec["height"], spec["width"]):
        where = "you chose" if user else "it records in its metadata"
        ctx.warnings.append(
            f"{ctx.path.name} has its input fixed at {spec['height']}×{spec['width']}, not the "
            f"{hint[0]}×{hint[1]} {where}; using the input's."
        )
    return None


def metadata_size(metadata: dict[str, str], where: str) -> tuple[int, int] | None:
    """The training size of a size-agnostic model: ``fvdesk.input_size`` (``64`` or ``[h, w]``;
    malformed is a ``ConfigError``), else Ultralytics' ``imgsz`` (``[320, 320]``; ignored when
    unreadable, as it is another tool's key)."""
    raw = metadata.get("fvdesk.input_size")
    if raw is not None:
        hw = _parse_size(raw)
        if hw is None:
            raise ConfigError(
                f"The metadata of {where} has an unreadable fvdesk.input_size {raw!r} (expected 64 or [h, w])."
            )
        if not (8 <= hw[0] <= 4096 and 8 <= hw[1] <= 4096):
            raise ConfigError(
                f"The metadata of {where} has an out-of-range fvdesk.input_size {raw!r}."
            )
        return hw
    hw = _parse_size(metadata.get("imgsz", ""))
    if hw is not None and 8 <= hw[0] <= 4096 and 8 <= hw[1] <= 4096:
        return hw
    return None


def _parse_size(raw: str) -> tuple[int, int] | None:
    try:
        value = json.loads(raw)
        if isinstance(value, bool):
            return None
        h, w = (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
    except (ValueError, TypeError, IndexError, KeyError, RecursionError):
        return None
    return (h, w) if isinstance(value, int) or len(value) == 2 else None


def image_spec(vi: Any) -> dict | None:
    """Layout, channels and size of a graph input when it looks like an image, else None."""
    if not vi.type.HasField("tensor_type"):
        return None
    t = vi.type.tensor_type
    if t.elem_type not in FLOAT_TYPES or not t.HasField("shape") or len(t.shape.dim) != 4:
        return None
    dims: list[int | None] = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim
    ]
    b, d1, d2, d3 = dims

    def spatial(a: int | None, bb: int | None) -> bool:
        return (a is None or a > 4) and (bb is None or bb > 4)

    if d1 in (1, 3) and spatial(d2, d3):
        layout, c, h, w = "NCHW", d1, d2, d3
    elif d3 in (1, 3) and spatial(d1, d2):
        layout, c, h, w = "NHWC", d3, d1, d2
    elif d1 is None and spatial(d2, d3) and (d3 is None or d3 > 4):
        layout, c, h, w = "NCHW", 3, d2, d3
    elif d3 is None and d1 is not None and d1 > 4 and spatial(d1, d2):
        layout, c, h, w = "NHWC", 3, d1, d2
    else:
        return None
    batch = t.shape.dim[0]
    return {
        "name": vi.name,
        "layout": layout,
        "channels": int(c),
        "height": int(h or DEFAULT_SIZE),
        "width": int(w or DEFAULT_SIZE),
        "dynamic_size": h is None or w is None,
        "batch": b if b is not None else (batch.dim_param or None),
        "dtype": FLOAT_TYPES[t.elem_type],
    }


def describe_input(vi: Any) -> str:
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        return f"{vi.name} (not a tensor)"
    from onnx import helper

    try:
        dt = helper.tensor_dtype_to_np_dtype(t.elem_type).name
    except (KeyError, ValueError, TypeError):
        dt = "?"
    dims = [
        str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim
    ]
    return f"{vi.name} {dt}[{', '.join(dims)}]"


def declared_dtype(base: Any, name: str, default: str) -> str:
    """The image input's element type as the file declares it (before half precision widening)."""
    for vi in base.graph.input:
        if vi.name == name:
            return FLOAT_TYPES.get(vi.type.tensor_type.elem_type, default)
    return default


def input_shape(spec: dict, batch: int, h: int | None = None, w: int | None = None) -> list[int]:
    """The image input's shape at ``batch`` (and ``h`` x ``w``, else the spec's size)."""
    h = h or spec["height"]
    w = w or spec["width"]
    c = spec["channels"]
    return [batch, c, h, w] if spec["layout"] == "NCHW" else [batch, h, w, c]


def extra_inputs(ctx: LoadContext, model: Any, index: int) -> dict[str, torch.Tensor]:
    """Zeros for the non-image inputs, keyed by the fx placeholder names."""
    extra: dict[str, torch.Tensor] = {}
    placeholders = None
    for i, vi in enumerate(model.graph.input):
        if i == index:
            continue
        if placeholders is None:
            placeholders = [f"input_{k}" for k in range(1, len(model.graph.input) + 1)]
        t = vi.type.tensor_type
        shape = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim
        ]
        from onnx import helper

        try:
            dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        except (KeyError, ValueError, TypeError):
            dtype = np.dtype(np.float32)
        extra[placeholders[i]] = torch.from_numpy(np.zeros(shape, dtype=dtype))
        ctx.warnings.append(
            f"{ctx.path.name}: the non-image input {vi.name!r} is fed zeros of shape {shape}."
        )
    return extra
