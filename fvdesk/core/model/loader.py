"""``load_model``: an ONNX file -> a ``LoadedModel`` (torch module, input spec, layers, parity).

Phases (each reported to ``progress(fraction, message)`` and timed in ``LoadedModel.timings``):

1. read      the file in chunks (sha256 on the way), parse it, vet declared sizes and names, load
             and vet external data
2. repair    name nodes, check/sort the graph, ``canonicalize`` (named passes: onnx tools,
             onnxruntime folding, opset-17 rewrites, float16 widening)
3. check     every node against onnx2torch's converter registry; unconvertible nodes and what
             depends on them are cut off (partial conversion, ``LoadedModel.conversion``)
4. convert   ``onnx2torch.convert(..., attach_onnx_mapping=True)``, ``eval()``; a node whose
             converter raises is cut off too
5. probe     forwards at batch 1 and 2 at the native size record every tensor's shape (and which
             tensors carry the batch in dim 0); a larger size tells ``fixed_size``; sizes with
             0, 1, 2... factors of 2 tell a size-agnostic graph's ``size_multiple``
6. layers    the ``LayerGraph`` (shape inference + probe): feature maps, vectors, token layers,
             attention tensors, and the left-out nodes greyed
7. parity    torch vs onnxruntime (CPU) on a seeded input, on the outputs and a mid feature map

Steps 2-5 form one build attempt.  When the canonical graph fails to convert or run (or converts
only in part) where the file without repairs converts completely, the build is retried with each
applied repair left out in turn, and the one to blame is reported.

Nothing is half-loaded: the result is built only when every phase succeeded, and every failure is
an ``FvdeskError`` whose message is one sentence naming the file.

Image input rule: among the real graph inputs, the float rank-4 inputs with 1 or 3 channels in the
NCHW or NHWC position (or dynamic there) are candidates.  ``input_name=`` (or the sidecar's
``input_name``) picks one; with several candidates and no choice ``AmbiguousInputError`` lists
them.  Other inputs get zeros of their declared shape (``LoadedModel.extra_inputs``).

Preprocessing and labels follow the one precedence of ``fvdesk.core.model.choices``: the user's
(the ``preprocessing=`` argument, else the sidecar's saved choice), then ONNX ``metadata_props``
(``fvdesk.preprocessing``; Ultralytics exports, which feed [0, 1]; Windows ML's
``Image.BitmapPixelFormat``/``Image.NominalPixelRange``; ``fvdesk.labels`` and what other tools
write), then the documented default (the ``imagenet`` preset, source ``"default"``; ImageNet's

The stages live in ``fvdesk.core.model.loading``, one module each (``read``, ``build``,
``convert``, ``probe``, ``inputs``, ``layer_list``, ``metadata``, ``parity``); this module runs
them in order and keeps every name it had before (re-exported).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from fvdesk.core.errors import FvdeskError, ModelLoadError
from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model import precision
from fvdesk.core.model.graph import NodeOutputs, build_layer_graph, find_logits
from fvdesk.core.model.layers import LayerGraph
from fvdesk.core.model.loaded import InputSpec, LoadedModel, round_to_multiple
from fvdesk.core.model.loading.build import Built, Request, build_with_fallback
from fvdesk.core.model.loading.context import PARITY_SEED, LoadContext, ProgressFn, cause
from fvdesk.core.model.loading.convert import nothing_convertible, onnx2torch
from fvdesk.core.model.loading.inputs import DEFAULT_SIZE, describe_input
from fvdesk.core.model.loading.layer_list import list_layers, unavailable_layers
from fvdesk.core.model.loading.metadata import (
    choose_labels,
    choose_preprocessing,
    preprocessing_from_metadata,
)
from fvdesk.core.model.loading.parity import (
    PARITY_TOLERANCE,
    compute_parity,
    pick_feature_layer,
)
from fvdesk.core.model.loading.parity import (
    check_parity as _check_parity,  # ``run`` has a flag so named
)
from fvdesk.core.model.loading.probe import probe_sizes
from fvdesk.core.model.loading.read import read_model
from fvdesk.core.model.preprocessing import DEFAULT_PRESET, Preprocessing
from fvdesk.core.model.sidecar import Sidecar, read_sidecar

__all__ = [
    "DEFAULT_SIZE",
    "PARITY_SEED",
    "PARITY_TOLERANCE",
    "ProgressFn",
    "compute_parity",
    "load_model",
    "onnx2torch",
    "pick_feature_layer",
    "preprocessing_from_metadata",
]

# The private names other modules imported from here before the split.
_cause = cause
_describe_input = describe_input
_nothing_convertible = nothing_convertible


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    input_name: str | None = None,
    preprocessing: Preprocessing | str | None = None,
    check_parity: bool = True,
    parity_tolerance: float = PARITY_TOLERANCE,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Load, repair and convert an ONNX image classifier (see the module docstring).

    ``input_size`` (height, width) is the size a size-agnostic graph is probed and shown at; it
    wins over the sidecar's ``input_size`` and the metadata's training size (some graphs only run
    at their own size although every dimension is declared dynamic).

    ``device`` is where the torch module ends up; probing and parity run on the CPU first so that
    results do not depend on the accelerator (TF32, nondeterministic kernels).
    """
    loader = _Loader(Path(path), progress)
    try:
        return loader.run(
            device=device,
            input_name=input_name,
            preprocessing=preprocessing,
            check_parity=check_parity,
            tolerance=parity_tolerance,
            input_size=input_size,
        )
    except FvdeskError:
        raise
    except MemoryError:
        raise ModelLoadError(f"{loader.path} is too large to load into memory.") from None
    except Exception as e:  # noqa: BLE001 - the contract is one FvdeskError, never a traceback
        raise ModelLoadError(
            f"{loader.path} could not be loaded while {loader.phase}: {cause(e)}."
        ) from e


class _Loader(LoadContext):
    """The stages in order; each names its ``phase`` (the error message says it) and its time."""

    def run(
        self,
        *,
        device: str | torch.device,
        input_name: str | None,
        preprocessing: Preprocessing | str | None,
        check_parity: bool,
        tolerance: float,
        input_size: tuple[int, int] | None = None,
    ) -> LoadedModel:
        t_start = time.perf_counter()
        model, sha = read_model(self)
        self.mark("read")
        self.phase = "checking the sidecar"
        sidecar = read_sidecar(self.path)
        req, base_report, user_nodes, half = self._request(model, sidecar, input_name, input_size)
        built = self._build(req, base_report)
        fixed_size, multiple = self._probe_sizes(built)
        layer_graph, node_of_layer = self._layer_graph(built, user_nodes)
        self.phase = "reading preprocessing and labels"
        spec = _input_spec(built, fixed_size, multiple)
        choices = (preprocessing, req.metadata, sidecar)
        loaded = self._assemble(built, sha, spec, layer_graph, node_of_layer, choices)
        loaded.input_source = ("user" if input_name is not None else
                               "sidecar" if req.chosen is not None else "default")  # fmt: skip
        if check_parity:
            half_graph = req.base if half else None
            _check_parity(self, loaded, tolerance=tolerance, half_graph=half_graph)
        self.phase = "moving the model to the device"
        if isinstance(device, str):
            from fvdesk.core.device import pick_device

            device = pick_device(device)
        loaded.to(device)
        self.mark("device")
        loaded.timings = dict(self.timings, total=time.perf_counter() - t_start)
        self.report(1.0, f"Loaded {self.path.name}")
        return loaded

    def _request(
        self,
        model: Any,
        sidecar: Sidecar | None,
        input_name: str | None,
        input_size: tuple[int, int] | None,
    ) -> tuple[Request, canon.Report, list[NodeOutputs], bool]:
        """Name the nodes and sort the graph (the user's node list is read there), and gather
        what every build attempt starts from; also whether the file computes in half precision."""
        self.phase = "repairing the graph"
        self.report(0.2, "Repairing the graph")
        base_report = canon.Report()
        canon.name_nodes(model, base_report)
        canon.check_and_sort(model, str(self.path), base_report)
        user_nodes = [NodeOutputs(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]
        metadata = {p.key: p.value for p in model.metadata_props}
        half = precision.uses_half(model)
        chosen = input_name or (sidecar.input_name if sidecar else None)
        size = input_size or (sidecar.input_size if sidecar else None)
        req = Request(model, chosen, input_name is not None, metadata, size)
        return req, base_report, user_nodes, half

    def _build(self, req: Request, base_report: canon.Report) -> Built:
        """The build (with the fallback), its warnings kept and the naming steps reported first."""
        built = build_with_fallback(self, req)
        self.warnings += built.warnings
        built.report.steps[:0] = base_report.steps
        return built

    def _probe_sizes(self, built: Built) -> tuple[bool, int]:
        """``fixed_size``, and the ``size_multiple`` of a size-agnostic graph."""
        self.phase = "probing the converted model"
        self.report(0.65, "Probing input sizes")
        args = (built.module, built.index, built.spec, built.extra, built.batch_first)
        fixed_size, multiple = probe_sizes(self, *args)
        self.mark("probe")
        return fixed_size, multiple

    def _layer_graph(
        self, built: Built, user_nodes: list[NodeOutputs]
    ) -> tuple[LayerGraph, dict[str, str]]:
        """The ``LayerGraph`` (with the logits and the greyed left-out nodes) and the fx node of
        each layer; a partial conversion with no layer left is refused."""
        self.phase = "listing the layers"
        self.report(0.75, "Listing layers")
        model = built.model
        layers, node_of_layer = list_layers(
            self, model, built.module, user_nodes, built.report, built, built.spec
        )
        unavailable = unavailable_layers(built, user_nodes, len(layers))
        graph_outputs = [o.name for o in model.graph.output]
        producer = {
            n.output[0]: (n.op_type, n.input[0] if n.input else "")
            for n in model.graph.node
            if n.output
        }
        logits = find_logits(layers, graph_outputs, producer) if built.cut is None else None
        layer_graph = build_layer_graph(layers, logits, self.path.stem, unavailable=unavailable)
        if built.cut is not None and not layers:
            raise built.nothing_left()
        self.mark("layers")
        return layer_graph, node_of_layer

    def _assemble(
        self,
        built: Built,
        sha: str,
        spec: InputSpec,
        layer_graph: LayerGraph,
        node_of_layer: dict[str, str],
        choices: tuple[Preprocessing | str | None, dict[str, str], Sidecar | None],
    ) -> LoadedModel:
        """The ``LoadedModel``, with the preprocessing and labels chosen from ``choices``
        (the argument, the file's metadata, the sidecar)."""
        preprocessing, metadata, sidecar = choices
        pre = choose_preprocessing(self, preprocessing, metadata, sidecar)
        num_classes = layer_graph.logits.channels if layer_graph.logits is not None else None
        labels, labels_source = choose_labels(self, metadata, sidecar, num_classes)
        if pre.source == "default":
            self.warnings.append(
                f"No preprocessing is recorded for {self.path.name}; using the default '{DEFAULT_PRESET}' preset."
            )
        loaded = LoadedModel(
            path=self.path,
            sha256=sha,
            onnx_model=built.model,
            module=built.module,
            input=spec,
            preprocessing=pre,
            labels=labels,
            labels_source=labels_source,
            graph=layer_graph,
            parity=None,
            node_of_layer=node_of_layer,
            extra_inputs=built.extra,
            warnings=self.warnings,
        )
        loaded.canonicalization = list(built.report.steps)
        loaded.metadata = metadata
        loaded.labels_file = str(sidecar.labels) if labels_source == "sidecar" and sidecar else ""
        loaded.conversion = built.cut
        if built.cut is not None:
            self.warnings.insert(0, f"{self.path.name}: {built.cut.describe()}")
        return loaded


def _input_spec(built: Built, fixed_size: bool, multiple: int) -> InputSpec:
    """The image input as the rest of fvdesk sees it; the default canvas is one the graph runs at."""
    s = built.spec
    height, width = s["height"], s["width"]
    if multiple > 1:
        height, width = round_to_multiple(height, multiple), round_to_multiple(width, multiple)
    return InputSpec(
        name=s["name"],
        index=built.index,
        layout=s["layout"],
        channels=s["channels"],
        height=height,
        width=width,
        fixed_size=fixed_size,
        max_batch=built.max_batch,
        dtype=s["dtype"],
        size_multiple=multiple,
    )
