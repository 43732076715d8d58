"""The targetable layers of a model and the name tree the app shows; plain data, no torch."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fvdesk.core.errors import RenderError

Layout = Literal["NCHW", "NHWC", "NTC", "NCT"]
LayerKind = Literal["feature", "vector", "tokens", "attention", "unknown"]

#: ``layer#k`` addresses extra token ``k`` (0: the class token) of a token layer.
TOKEN_SEP = "#"


def token_target(layer: str, token: int) -> str:
    """The target name of extra token ``token`` of token layer ``layer`` (see ``Layer``)."""
    return f"{layer}{TOKEN_SEP}{int(token)}"


@dataclass(frozen=True)
class Layer:
    """One targetable node output.

    Kinds (what a unit is, and what ``extractor``/``capture`` hand out):

    * ``feature``: a map (N, C, H, W); units are channels.  ``layout`` "NHWC" marks channels-last
      maps inside the graph (ConvNeXt and Swin blocks, tf2onnx exports): ``shape`` is still
      reported N, C, H, W and the tensor is handed out permuted to NCHW, so objectives always
      index channels at dim 1.
    * ``vector``: (N, C); units are channels (classes for the logits).
    * ``tokens``: a transformer's token sequence (N, T, D) (``layout`` "NTC"; "NCT" for
      channels-first (N, D, T)), ``shape`` as the graph has it.  The first ``extra_tokens``
      tokens are not patches (the class token, a distillation token, registers); the other
      T - extra_tokens tile the input as ``grid`` (rows, cols).  Units are the D channels; the
      tensor is handed out as the patch map (N, D, rows, cols), so a channel objective averages
      over patch tokens and a neuron objective picks a patch, and ``name#k`` (``token_target``)
      hands out extra token k as (N, D) (a neuron at the class token).
    * ``attention``: per-head tensors (N, heads, queries, keys) or (N, heads, tokens, dims);
      ``axes`` names the dims after the batch; units are heads.
    * ``unknown``: a left-out node of a partially converted model whose shape is unknown.

    ``available`` is False for the nodes a partial conversion left out (``reason`` says why):
    they are listed so the tree shows the whole model, but cannot be rendered.
    """

    name: str  # user-facing id: the ONNX node name, ``name:k`` for output k > 0
    output: str  # the ONNX tensor name
    op: str  # ONNX op type
    shape: tuple[int | None, ...]  # batch first (see the kinds above for the order of the rest)
    kind: LayerKind
    index: int  # topological position in the graph
    layout: Layout = "NCHW"
    grid: tuple[int, int] | None = None  # tokens: the patch grid (rows, cols)
    extra_tokens: int = 0  # tokens: leading non-patch tokens (class, distillation, registers)
    axes: tuple[str, ...] = ()  # attention: names of the dims after the batch
    available: bool = True
    reason: str = ""  # why an unavailable layer cannot be rendered

    @property
    def channels(self) -> int:
        """The number of units: channels (heads for attention tensors)."""
        if self.kind == "unknown" or len(self.shape) < 2:
            return 0
        if self.kind == "tokens" and self.layout == "NTC":
            return int(self.shape[2] or 0)
        return int(self.shape[1] or 0)

    @property
    def spatial(self) -> tuple[int, int] | None:
        """(rows, cols) of the positions a neuron objective can pick (feature maps, patch grids)."""
        if self.kind == "tokens":
            return self.grid
        if self.kind != "feature":
            return None
        return int(self.shape[2] or 0), int(self.shape[3] or 0)

    @property
    def dreamable(self) -> bool:
        """DeepDream (the mean square of the whole layer) is a feature visualization of maps
        and patch grids; of class scores or attention weights it says nothing useful."""
        return self.kind in ("feature", "tokens")

    @property
    def unit_noun(self) -> str:
        return "head" if self.kind == "attention" else "channel"

    @property
    def tokens(self) -> int:
        """Token layers: the number of tokens T (extra tokens plus patches)."""
        if self.kind != "tokens":
            return 0
        return int(self.shape[1 if self.layout == "NTC" else 2] or 0)

    def describe(self) -> str:
        """What the dims mean: ``64 channels × 56×56``, ``768 channels × 197 tokens (class +
        14×14 patches)``, ``12 heads × 197 queries × 197 keys``."""

        def d(v: int | None) -> str:
            return "?" if v is None else str(v)

        if not self.available and self.kind == "unknown":
            return "shape unknown"
        if self.kind == "feature":
            return f"{d(self.shape[1])} channels × {d(self.shape[2])}×{d(self.shape[3])}"
        if self.kind == "vector":
            return f"{d(self.shape[1])} channels"
        if self.kind == "tokens":
            gh, gw = self.grid or (0, 0)
            extra = {0: "", 1: "class + "}.get(self.extra_tokens, f"{self.extra_tokens} extra + ")
            return f"{self.channels} channels × {self.tokens} tokens ({extra}{gh}×{gw} patches)"
        if self.kind == "attention":
            return " × ".join(
                f"{d(v)} {a}" for v, a in zip(self.shape[1:], self.axes, strict=False)
            )
        return "×".join(d(v) for v in self.shape[1:])


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
    """The targetable layers in topological order, plus the tree the GUI shows.

    ``unavailable`` holds the layers a partial conversion left out: they are in the tree (greyed
    in the app) but not in ``layers``, and asking for one by name says why it cannot be used.
    """

    def __init__(
        self,
        layers: list[Layer],
        tree: TreeNode,
        logits: str | None = None,
        unavailable: list[Layer] | None = None,
    ) -> None:
        self.layers = layers
        self.tree = tree
        self._by_name = {layer.name: layer for layer in layers}
        self.logits_name = logits
        self.unavailable = list(unavailable or [])
        self._cut = {layer.name: layer for layer in self.unavailable}

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None

    def resolve(self, name: str) -> tuple[Layer, int | None] | None:
        """(layer, extra token index or None) for a layer name or a ``layer#k`` token target."""
        layer = self._by_name.get(name)
        if layer is not None:
            return layer, None
        base, sep, k = name.rpartition(TOKEN_SEP)
        layer = self._by_name.get(base) if sep and k.isdigit() else None
        if layer is not None and layer.kind == "tokens" and int(k) < layer.extra_tokens:
            return layer, int(k)
        return None

    def __getitem__(self, name: str) -> Layer:
        found = self.resolve(name)
        if found is not None:
            return found[0]
        cut = self._cut.get(name)
        if cut is not None:
            raise RenderError(
                f"The layer {name!r} comes after the point where the conversion to torch stopped "
                f"({cut.reason}), so it cannot be rendered."
            )
        hint = self.suggest(name)
        more = f"; did you mean {', '.join(hint)}?" if hint else "."
        raise RenderError(f"The model has no layer named {name!r}{more}")

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

    def filter_all(self, text: str) -> list[Layer]:
        """Like ``filter``, including the unavailable layers of a partial conversion."""
        t = text.lower()
        everything = sorted([*self.layers, *self.unavailable], key=lambda x: x.index)
        return [x for x in everything if t in x.name.lower() or t in x.op.lower()]


def format_shape(shape: Sequence[int | None], *, batch: bool = False, sep: str = "×") -> str:
    """``(None, 64, 56, 56)`` -> ``64×56×56``: the one way shapes are written for people (the
    batch dimension left out unless asked, then a free batch is ``N``; unknown sizes as ``?``)."""
    dims = [("N" if d is None else str(d)) for d in shape[:1]] if batch else []
    return sep.join(dims + ["?" if d is None else str(d) for d in shape[1:]])
