"""What a command acts on: a row of the layer tree, as a plain value (no Qt).

The tree makes these; the job controller, the article's controller and the menus take them, so
the features share this type without importing the tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fvdesk.core.model.layers import Layer, TreeNode


@dataclass(frozen=True)
class RowRef:
    """What a row stands for, independent of Qt: a group, a layer, or one unit of a layer."""

    kind: str
    layer: Layer | None
    unit: int
    node: TreeNode | None
