"""The loaded-model object that the GUI, the CLI and the engine share.

Everything here is plain Python + torch; it never imports Qt.  A ``LoadedModel`` is produced by
``fvdesk.core.model.loader.load_model`` and is read-only afterwards except for the user's choices of
preprocessing and labels (``fvdesk.core.model.choices``), which a script or the CLI makes the
model's own with ``use`` between tasks; the app never does: its jobs carry the choices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from fvdesk.core.errors import RenderError
from fvdesk.core.model.choices import Choices
from fvdesk.core.model.layers import LayerGraph, Layout
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.model.sidecar import save_sidecar  # noqa: F401 - importable from here, as before


def round_to_multiple(n: int, multiple: int) -> int:
    """``n`` rounded to the nearest multiple of ``multiple`` (ties up, at least one multiple)."""
    if multiple <= 1:
        return int(n)
    return max(multiple, (int(n) + multiple // 2) // multiple * multiple)


@dataclass(frozen=True)
class InputSpec:
    """The graph input that receives the image, and what sizes it accepts."""

    name: str
    index: int  # position among the graph's real (non-initializer) inputs
    layout: Layout
    channels: int  # 1 or 3
    height: int  # the model's own size when fixed, else a default of 224
    width: int
    fixed_size: bool  # True when the graph only accepts (height, width)
    max_batch: int | None  # None: any batch; 1: batch must be 1 (fixed reshapes)
    dtype: str = "float32"
    # A size-agnostic graph with stride-2 stages joined by adds or concats only runs at sizes
    # that are multiples of this (measured by the loader); 1 for fixed-size graphs.
    size_multiple: int = 1

    @property
    def batch_ok(self) -> bool:
        return self.max_batch is None or self.max_batch > 1

    def round_size(self, n: int) -> int:
        """``n`` px rounded to the nearest size the graph takes (ties round up), so octaves and
        default canvases never choose a size the graph cannot run at."""
        return round_to_multiple(n, self.size_multiple)

    def round_view(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.round_size(size[0]), self.round_size(size[1])

    def size_refusal(self, n: int, who: str = "the model") -> str | None:
        """The sentence refusing an explicit size ``n`` the graph cannot take, else ``None``
        (an explicit size is not rounded behind the user's back)."""
        m = self.size_multiple
        if self.fixed_size or m <= 1 or n % m == 0:
            return None
        low, high = n // m * m, (n // m + 1) * m
        use = f"{low} or {high}" if low >= m else str(high)
        return f"{who} takes sizes that are multiples of {m}; use {use}."

    def describe_size(self) -> str:
        """``224x224 (fixed)``, ``224x224 (any size; default shown)`` or, with a multiple,
        ``224x224 (any multiple of 32; default shown)``."""
        if self.fixed_size:
            rule = "fixed"
        elif self.size_multiple > 1:
            rule = f"any multiple of {self.size_multiple}; default shown"
        else:
            rule = "any size; default shown"
        return f"{self.height}x{self.width} ({rule})"


@dataclass(frozen=True)
class Parity:
    """Converted torch model vs onnxruntime on the same random input."""

    max_abs_diff: float  # on the model outputs
    rel_diff: float  # max_abs_diff / max(|reference|)
    feature_rel_diff: float | None  # same, on an intermediate feature map
    feature_layer: str | None
    tolerance: float
    ok: bool
    # What onnxruntime ran: "" for the canonical graph; "float16 graph" when the file computes in
    # half precision (fvdesk renders in float32, so the file's own precision is the reference).
    reference: str = ""

    def describe(self) -> str:
        flag = "ok" if self.ok else "ABOVE TOLERANCE"
        ref = f"{self.reference}, " if self.reference else ""
        return f"max |torch - onnxruntime| = {self.max_abs_diff:.2e} ({ref}relative {self.rel_diff:.1e}, {flag})"


@dataclass(frozen=True)
class ConversionCut:
    """A partially converted model: where conversion stopped and what was left out."""

    stopped_at: str  # the first node (in graph order) that could not be converted
    op: str  # its op type ("LSTM", "com.example::FancyPool")
    reason: str  # why that node could not be converted
    cut_nodes: int  # nodes left out: the unconvertible ones and everything that depends on them
    total_nodes: int
    cut_ops: dict[str, int]  # op type -> count among the left-out nodes
    boundary: tuple[str, ...]  # tensors the converted part ends with (checked for parity)
    blockers: tuple[str, ...] = ()  # every unconvertible node (the first is ``stopped_at``)

    def describe(self) -> str:
        """One sentence: which node stopped the conversion, why, and what was left out."""
        items = list(self.cut_ops.items())
        ops = ", ".join(f"{k} x{v}" for k, v in items[:4]) + (", ..." if len(items) > 4 else "")
        return (
            f"Converted up to node {self.stopped_at!r} ({self.op}): {self.reason}, so {self.cut_nodes} "
            f"of {self.total_nodes} nodes ({ops}) are left out and shown greyed; the layers before "
            "it render normally."
        )


def to_unit_layout(
    x: torch.Tensor,
    layout: str,
    extra_tokens: int = 0,
    rows: int = 0,
    cols: int = 0,
    token: int | None = None,
) -> torch.Tensor:
    """A layer's tensor in the layout its units are indexed in (see ``Layer``): NHWC maps to NCHW;
    token sequences to the patch map (N, D, rows, cols), or extra token ``token`` as (N, D).

    A patch count that does not match ``rows`` x ``cols`` (another input size) keeps their
    aspect ratio.  Used inside extractor graphs, so it takes plain values only."""
    if layout == "NHWC":
        return x.permute(0, 3, 1, 2)
    if layout not in ("NTC", "NCT"):
        return x
    seq = x if layout == "NTC" else x.transpose(1, 2)  # (N, T, D)
    if token is not None:
        return seq[:, token]
    patches = seq[:, extra_tokens:]
    p = patches.shape[1]
    if p != rows * cols:
        rows = max(1, round((p * rows / max(cols, 1)) ** 0.5))
        if p % rows:
            raise RenderError(f"{p} patch tokens do not form a grid like {rows}×{cols}.")
        cols = p // rows
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], rows, cols)


class LoadedModel:
    """An ONNX model converted to torch, with its input spec, preprocessing, labels and layer graph."""

    def __init__(
        self,
        *,
        path: Path,
        sha256: str,
        onnx_model: Any,  # onnx.ModelProto, canonicalized (typed loosely to keep onnx import lazy)
        module: fx.GraphModule,
        input: InputSpec,
        preprocessing: Preprocessing,
        labels: list[str] | None,
        labels_source: str,
        graph: LayerGraph,
        parity: Parity | None,
        node_of_layer: dict[str, str],
        extra_inputs: dict[str, torch.Tensor] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.path = path
        self.sha256 = sha256
        self.onnx_model = onnx_model
        self.module = module.eval()
        self.input = input
        self.preprocessing = preprocessing
        self.labels = labels
        self.labels_source = labels_source
        self.labels_file = ""  # the labels file in force, when the user chose one
        self.input_source = "default"  # which input is the image: user, sidecar or default
        self.graph = graph
        self.parity = parity
        # layer name -> name of the fx node computing it (call_module or getitem for multi-output)
        self.node_of_layer = node_of_layer
        # Constant values for graph inputs other than the image (rare; zeros of the declared shape).
        self.extra_inputs = extra_inputs or {}
        self.warnings = warnings or []
        self._extractors: dict[tuple[str, ...], fx.GraphModule] = {}
        # Filled by the loader: what canonicalization did, the ONNX metadata_props, phase timings (s).
        self.canonicalization: list[str] = []
        self.metadata: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        # Set when only part of the graph could be converted (the rest is greyed in the tree).
        self.conversion: ConversionCut | None = None

    @property
    def status_text(self) -> str | None:
        """The sentence a status bar shows for a partially converted model; None when complete."""
        if self.conversion is None:
            return None
        return f"{self.name} is partially converted. {self.conversion.describe()}"

    # -- device -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for t in self.module.parameters():
            return t.device
        for b in self.module.buffers():
            return b.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> LoadedModel:
        """Move the torch module (and cached extractors, which share its weights) to ``device``."""
        device = torch.device(device)
        self.module.to(device)
        self.extra_inputs = {k: v.to(device) for k, v in self.extra_inputs.items()}
        self._extractors.clear()
        return self

    @property
    def name(self) -> str:
        return self.path.name

    # -- input --------------------------------------------------------------------------------
    def prepare_input(
        self, x01: torch.Tensor, preprocessing: Preprocessing | None = None
    ) -> torch.Tensor:
        """NCHW images in [0, 1] (RGB, or 1 channel for grayscale models) -> the graph's image input.

        Applies ``preprocessing`` (default: the one in force; a job passes the one it captured)
        and the model's layout; stays differentiable.
        """
        if x01.shape[1] != self.input.channels:
            if self.input.channels == 1 and x01.shape[1] == 3:
                w = torch.tensor([0.299, 0.587, 0.114], dtype=x01.dtype, device=x01.device)
                x01 = (x01 * w.view(1, 3, 1, 1)).sum(1, keepdim=True)
            elif self.input.channels == 3 and x01.shape[1] == 1:
                x01 = x01.expand(-1, 3, -1, -1)
            else:
                raise RenderError(
                    f"{self.name} expects {self.input.channels} input channels, got {x01.shape[1]}."
                )
        x = (preprocessing or self.preprocessing).apply(x01)
        if self.input.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        return x.contiguous()

    # -- activations --------------------------------------------------------------------------
    def extractor(self, targets: Sequence[str], *, raw: bool = False) -> fx.GraphModule:
        """A module computing only what the target layers need: ``forward(x) -> {name: tensor}``.

        ``x`` is the prepared image input (see ``prepare_input``).  Nodes after the last target are
        removed, so rendering an early layer costs only the layers before it.  Shares the weights of
        ``self.module`` (no copy).  Cached per target set.  Tensors are handed out in the units'
        layout (``Layer``: NCHW maps, token layers as patch maps, ``layer#k`` as extra token k);
        ``raw=True`` hands them out as the graph has them (parity with onnxruntime).
        """
        key = (*dict.fromkeys(targets), "\0raw" if raw else "")
        cached = self._extractors.get(key)
        if cached is not None:
            return cached
        wanted: dict[str, list[tuple[str, int | None]]] = {}
        for t in key[:-1]:
            layer = self.graph[t]  # raises a RenderError with suggestions for unknown names
            found = self.graph.resolve(t)
            token = found[1] if found is not None else None
            wanted.setdefault(self.node_of_layer[layer.name], []).append((t, token))
        src = self.module.graph
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        placeholders = [n for n in src.nodes if n.op == "placeholder"]
        image_ph = placeholders[self.input.index]
        x = g.placeholder("x")
        for i, ph in enumerate(placeholders):
            if ph is image_ph:
                env[ph] = x
            else:
                attr = f"_fvdesk_extra_{i}"
                env[ph] = g.get_attr(attr)
        outputs: dict[str, fx.Node] = {}
        for node in src.nodes:
            if node.op in ("placeholder", "output"):
                continue
            env[node] = g.node_copy(node, lambda n: env[n])
            for t, token in wanted.get(node.name, []):
                layer = self.graph[t]
                out = env[node]
                if not raw and (layer.layout == "NHWC" or layer.kind == "tokens"):
                    gh, gw = layer.grid or (0, 0)
                    args = (out, layer.layout, layer.extra_tokens, gh, gw, token)
                    out = g.call_function(to_unit_layout, args)
                outputs[t] = out
            if len(outputs) == len(key) - 1:
                break
        g.output({t: outputs[t] for t in key[:-1]})
        root = self.module
        # Values of the non-image inputs live on the module (so ``to()`` moves them); fx copies
        # get_attr targets from the root when the GraphModule is built, so register them first.
        for i, ph in enumerate(placeholders):
            if ph is not image_ph:
                value = self.extra_inputs.get(ph.name)
                if value is None:
                    raise RenderError(
                        f"{self.name} has a non-image input {ph.name!r} with no value."
                    )
                root.register_buffer(f"_fvdesk_extra_{i}", value, persistent=False)
        gm = fx.GraphModule(root, g, class_name="FvdeskExtractor")
        # Dead-code elimination needs the owning module (fx's purity check), so it runs after.
        gm.graph.eliminate_dead_code()
        gm.recompile()
        gm.eval()
        self._extractors[key] = gm
        return gm

    @torch.no_grad()
    def activations(self, x01: torch.Tensor, targets: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations of ``targets`` for images in [0, 1] (no gradients)."""
        ext = self.extractor(targets)
        return ext(self.prepare_input(x01.to(self.device)))

    @contextlib.contextmanager
    def capture(self, targets: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
        """Record ``targets`` during forward passes of the full module; hooks are removed on exit.

        Tensors are handed out like ``extractor`` does (units' layout)."""
        store: dict[str, torch.Tensor] = {}
        handles = []
        modules = dict(self.module.named_modules())
        nodes = {n.name: n for n in self.module.graph.nodes}
        try:
            for t in targets:
                layer = self.graph[t]
                found = self.graph.resolve(t)
                token = found[1] if found is not None else None
                node = nodes[self.node_of_layer[layer.name]]
                index = None
                if node.op == "call_function":  # getitem on a multi-output module
                    index = node.args[1]
                    node = node.args[0]
                mod = modules[node.target]
                gh, gw = layer.grid or (0, 0)
                form = (layer.layout, layer.extra_tokens, gh, gw, token)

                def hook(
                    _m: nn.Module,
                    _inp: object,
                    out: object,
                    t: str = t,
                    index: int | None = index,
                    form: tuple = form,
                ) -> None:
                    value = out[index] if index is not None else out  # type: ignore[index]  # a multi-output module returns a tuple
                    store[t] = to_unit_layout(value, *form)  # type: ignore[arg-type]  # the hooked module outputs a tensor

                handles.append(mod.register_forward_hook(hook))
            yield store
        finally:
            for h in handles:
                h.remove()

    def forward(self, x01: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Full-model forward on images in [0, 1]."""
        args = []
        placeholders = [n for n in self.module.graph.nodes if n.op == "placeholder"]
        for i, ph in enumerate(placeholders):
            args.append(
                self.prepare_input(x01) if i == self.input.index else self.extra_inputs[ph.name]
            )
        return self.module(*args)

    # -- user choices (fvdesk.core.model.choices; persisted in the sidecar MODEL.fvdesk.json) ----
    @property
    def choices(self) -> Choices:
        """The preprocessing, labels and input in force, with their sources."""
        return Choices.of(self)

    def use(self, choices: Choices) -> LoadedModel:
        """Make ``choices`` the model's own.  Only between tasks, by whoever holds the model
        alone (a script, the CLI): the app's jobs carry their choices instead."""
        self.preprocessing = choices.preprocessing
        self.labels = choices.label_list()
        self.labels_source = choices.labels_source
        self.labels_file = choices.labels_file
        return self

    def set_preprocessing(self, pre: Preprocessing | str, *, persist: bool = True) -> Preprocessing:
        """Use ``pre`` (a preset name or values) from now on; saved in the sidecar when ``persist``.

        The sidecar is written first, so a failed write (``ConfigError``) leaves the model unchanged.
        """
        chosen = self.choices.with_preprocessing(pre)
        if persist:
            chosen.remember(self.path, preprocessing=True)
        self.use(chosen)
        return chosen.preprocessing

    def set_labels(self, labels_file: str | Path, *, persist: bool = True) -> list[str]:
        """Use the class names in ``labels_file`` (txt or JSON); saved in the sidecar when ``persist``."""
        chosen = self.choices.with_labels_file(labels_file)
        if persist:
            chosen.remember(self.path, labels=True)
        self.use(chosen)
        return chosen.label_list() or []

    def label(self, k: int) -> str | None:
        if self.labels and 0 <= k < len(self.labels):
            return self.labels[k]
        return None
