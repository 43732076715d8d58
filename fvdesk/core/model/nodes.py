"""Small helpers for editing ONNX nodes in place (shared by the graph repairs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnx import NodeProto, helper


def attr(n: NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of ``n``, or ``default`` (Any: ONNX attributes are untyped)."""
    for a in n.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(n: NodeProto, name: str, value: object) -> None:
    """Set (or, with None, remove) attribute ``name`` of ``n``."""
    for i, a in enumerate(n.attribute):
        if a.name == name:
            del n.attribute[i]
            break
    if value is not None:
        n.attribute.append(helper.make_attribute(name, value))


def replace_all(field: Any, items: Sequence[Any], kind: type) -> None:
    """Replace a repeated protobuf field's contents by copies of ``items`` (which may be elements
    of that same field, so they are copied first)."""
    copies = [kind() for _ in items]
    for dst, src in zip(copies, items, strict=True):
        dst.CopyFrom(src)
    del field[:]
    field.extend(copies)
