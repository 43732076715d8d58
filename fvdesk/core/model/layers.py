"""The targetable layers of a model and the name tree the app shows; plain data, no torch."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fvdesk.core.errors import RenderError

Layout = Literal["NCHW", "NHWC"]
LayerKind = Literal["feature", "vector"]


@dataclass(frozen=True)
class Layer:
    """One targetable node output: a feature map (N, C, H, W) or a vector (N, C)."""

    name: str  # user-facing id: the ONNX node name, ``name:k`` for output k > 0
    output: str  # the ONNX tensor name
    op: str  # ONNX op type
    shape: tuple[int | None, ...]  # batch first, NCHW order even for NHWC models' inputs
    kind: LayerKind
    index: int  # topological position in the graph
    # Memory layout of the ONNX tensor.  "NHWC" for channels-last maps inside the graph (ConvNeXt
    # blocks, tf2onnx exports): ``shape`` is still reported N, C, H, W and ``extractor``/``capture``
    # hand out the tensor permuted to NCHW, so objectives can always index channels at dim 1.
    layout: Layout = "NCHW"

    @property
    def channels(self) -> int:
        return int(self.shape[1] or 0)

    @property
    def spatial(self) -> tuple[int, int] | None:
        if self.kind != "feature":
            return None
        return int(self.shape[2] or 0), int(self.shape[3] or 0)


@dataclass
class TreeNode:
    """A node of the layer tree: a group (``layer is None``) or a layer leaf."""

    label: str
    path: str
    layer: Layer | None = None
    children: list[TreeNode] = field(default_factory=list)

    def walk(self) -> Iterator[TreeNode]:
        yield self
        for child in self.children:
            yield from child.walk()


class LayerGraph:
    """The targetable layers in topological order, plus the tree the GUI shows."""

    def __init__(self, layers: list[Layer], tree: TreeNode, logits: str | None = None) -> None:
        self.layers = layers
        self.tree = tree
        self._by_name = {layer.name: layer for layer in layers}
        self.logits_name = logits

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Layer:
        try:
            return self._by_name[name]
        except KeyError:
            hint = self.suggest(name)
            more = f"; did you mean {', '.join(hint)}?" if hint else "."
            raise RenderError(f"The model has no layer named {name!r}{more}") from None

    def suggest(self, name: str, n: int = 5) -> list[str]:
        """Nearest layer names, for 'did you mean' messages."""
        names = list(self._by_name)
        close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
        if len(close) < n:
            low = name.lower()
            close += [x for x in names if low and low in x.lower() and x not in close][
                : n - len(close)
            ]
        return close

    @property
    def logits(self) -> Layer | None:
        return self._by_name.get(self.logits_name) if self.logits_name else None

    def unit_label(self, layer: str, unit: int, labels: Sequence[str] | None) -> str | None:
        """The class name of ``unit``: only on the logits layer or a vector layer exactly as wide
        as the labels (a softmax output), so no feature channel is ever named after a class."""
        lay = self._by_name.get(layer)
        if lay is None or not labels or not 0 <= unit < len(labels):
            return None
        is_class_layer = layer == self.logits_name or lay.kind == "vector"
        return labels[unit] if is_class_layer and lay.channels in (0, len(labels)) else None

    def filter(self, text: str) -> list[Layer]:
        """Layers whose name or op type contains ``text`` (case-insensitive)."""
        t = text.lower()
        return [x for x in self.layers if t in x.name.lower() or t in x.op.lower()]


def format_shape(shape: Sequence[int | None], *, batch: bool = False, sep: str = "×") -> str:
    """``(None, 64, 56, 56)`` -> ``64×56×56``: the one way shapes are written for people (the
    batch dimension left out unless asked, then a free batch is ``N``; unknown sizes as ``?``)."""
    dims = [("N" if d is None else str(d)) for d in shape[:1]] if batch else []
    return sep.join(dims + ["?" if d is None else str(d) for d in shape[1:]])
