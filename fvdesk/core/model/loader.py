"""``load_model``: an ONNX file -> a ``LoadedModel`` (torch module, input spec, layers, parity).

Phases (each reported to ``progress(fraction, message)`` and timed in ``LoadedModel.timings``):

1. read      the file in chunks (sha256 on the way), parse it, load and vet external data
2. repair    name nodes, check/sort the graph, ``canonicalize`` (onnx tools + onnxruntime folding)
3. check     every node against onnx2torch's converter registry (all unsupported ops named at once)
4. convert   ``onnx2torch.convert(..., attach_onnx_mapping=True)``, ``eval()``
5. probe     one forward at the native size records every tensor's shape; batch 2 and a larger
             size are tried to learn ``max_batch`` / ``fixed_size``
6. layers    the ``LayerGraph`` (shape inference + probe) and ``node_of_layer`` (fx node names)
7. parity    torch vs onnxruntime (CPU) on a seeded input, on the outputs and a mid feature map

Nothing is half-loaded: the result is built only when every phase succeeded, and every failure is
an ``FvdeskError`` whose message is one sentence naming the file.

Image input rule: among the real graph inputs, the float rank-4 inputs with 1 or 3 channels in the
NCHW or NHWC position (or dynamic there) are candidates.  ``input_name=`` (or the sidecar's
``input_name``) picks one; with several candidates and no choice ``AmbiguousInputError`` lists
them.  Other inputs get zeros of their declared shape (``LoadedModel.extra_inputs``).

Preprocessing order: ``preprocessing=`` argument, ONNX ``metadata_props``
(``fvdesk.preprocessing``, or Windows ML's ``Image.BitmapPixelFormat``/``Image.NominalPixelRange``),
the sidecar, then the documented default preset ``imagenet`` (source ``"default"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import fx

from fvdesk.core.errors import (
    AmbiguousInputError,
    ConfigError,
    FvdeskError,
    ModelLoadError,
    UnsupportedModelError,
)
from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model.graph import (
    NodeOutputs,
    build_layer_graph,
    find_layers,
    find_logits,
    tensor_layouts,
)
from fvdesk.core.model.labels import default_labels, labels_from_metadata, read_labels_file
from fvdesk.core.model.loaded import InputSpec, LoadedModel, Parity
from fvdesk.core.model.onnx2torch_compat import import_onnx2torch
from fvdesk.core.model.preprocessing import DEFAULT_PRESET, PRESETS, Preprocessing
from fvdesk.core.model.sidecar import Sidecar, parse_preprocessing, read_sidecar

onnx2torch = import_onnx2torch()
ProgressFn = Callable[[float, str], None]

DEFAULT_SIZE = 224
PARITY_TOLERANCE = 1e-4
PARITY_SEED = 0
_CHUNK = 4 << 20
_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    input_name: str | None = None,
    preprocessing: Preprocessing | str | None = None,
    check_parity: bool = True,
    parity_tolerance: float = PARITY_TOLERANCE,
) -> LoadedModel:
    """Load, repair and convert an ONNX image classifier (see the module docstring).

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
        )
    except FvdeskError:
        raise
    except MemoryError:
        raise ModelLoadError(f"{loader.path} is too large to load into memory.") from None
    except Exception as e:  # noqa: BLE001 - the contract is one FvdeskError, never a traceback
        raise ModelLoadError(
            f"{loader.path} could not be loaded while {loader.phase}: {_cause(e)}."
        ) from e


def _cause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if not text:
        text = type(e).__name__
    elif not text.startswith(type(e).__name__) and type(e) not in (
        RuntimeError,
        ValueError,
        Exception,
    ):
        text = f"{type(e).__name__}: {text}"
    text = text.rstrip(".")
    return text if len(text) <= 300 else text[:297] + "..."


class _Loader:
    def __init__(self, path: Path, progress: ProgressFn | None) -> None:
        self.path = path
        self._progress = progress
        self.phase = "starting"
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()
        self.warnings: list[str] = []

    # -- bookkeeping --------------------------------------------------------------------------
    def report(self, fraction: float, message: str) -> None:
        if self._progress is not None:
            self._progress(float(min(max(fraction, 0.0), 1.0)), message)

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + (now - self._t)
        self._t = now

    # -- the phases ---------------------------------------------------------------------------
    def run(
        self,
        *,
        device: str | torch.device,
        input_name: str | None,
        preprocessing: Preprocessing | str | None,
        check_parity: bool,
        tolerance: float,
    ) -> LoadedModel:

        t_start = time.perf_counter()
        self.phase = "reading the file"
        self.report(0.0, f"Reading {self.path.name}")
        data, sha = self._read_bytes()
        self.phase = "parsing the ONNX file"
        model = self._parse(data)
        del data
        self._load_external_data(model)
        self.mark("read")

        self.phase = "checking the sidecar"
        sidecar = read_sidecar(self.path)

        self.phase = "repairing the graph"
        self.report(0.2, "Repairing the graph")
        report = canon.Report()
        canon.name_nodes(model, report)
        canon.check_and_sort(model, str(self.path), report)
        user_nodes = [NodeOutputs(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]
        metadata = {p.key: p.value for p in model.metadata_props}
        self._check_domains(model)
        model = canon.canonicalize(model, where=str(self.path), report=report)
        self.warnings += report.warnings
        self.mark("canonicalize")

        self.phase = "finding the image input"
        chosen = input_name or (sidecar.input_name if sidecar else None)
        index, spec_base = self._find_image_input(model, chosen, explicit=input_name is not None)
        canon.prune_unused(model, report, protect=[model.graph.input[index].name])
        index = [i.name for i in model.graph.input].index(spec_base["name"])
        hint = _size_hint(metadata, str(self.path)) if spec_base["dynamic_size"] else None
        if hint:
            spec_base["height"], spec_base["width"] = hint

        self.phase = "checking the operators"
        self.report(0.4, "Checking operators")
        self._check_ops(model)
        extra = self._extra_inputs(model, index)
        missing = canon.tensors_needing_rank(model)
        if missing:
            image = np.zeros(self._input_shape(spec_base, 1), np.float32)
            feeds = {
                vi.name: image if i == index else extra[f"input_{i + 1}"].numpy()
                for i, vi in enumerate(model.graph.input)
            }
            canon.fill_shapes_with_ort(model, feeds, missing, report)
        self.mark("check")

        self.phase = "converting to torch"
        self.report(0.5, "Converting to torch")
        module = self._convert(model)
        self.mark("convert")

        self.phase = "probing the converted model"
        self.report(0.65, "Probing input sizes")
        try:
            probe, max_batch = _probe(module, index, spec_base, extra)
        except _ProbeError as e:
            raise ModelLoadError(f"{self.path} converts to torch but the result {e}.") from e
        fixed_size = self._probe_size(module, index, spec_base, extra)
        self.mark("probe")

        self.phase = "listing the layers"
        self.report(0.75, "Listing layers")
        layers, node_of_layer = self._layers(model, module, user_nodes, report, probe, spec_base)
        graph_outputs = [o.name for o in model.graph.output]
        producer = {
            n.output[0]: (n.op_type, n.input[0] if n.input else "")
            for n in model.graph.node
            if n.output
        }
        logits = find_logits(layers, graph_outputs, producer)
        layer_graph = build_layer_graph(layers, logits, self.path.stem)
        self.mark("layers")

        self.phase = "reading preprocessing and labels"
        height, width = spec_base["height"], spec_base["width"]
        spec = InputSpec(
            name=spec_base["name"],
            index=index,
            layout=spec_base["layout"],
            channels=spec_base["channels"],
            height=height,
            width=width,
            fixed_size=fixed_size,
            max_batch=max_batch,
            dtype=spec_base["dtype"],
        )
        pre = self._preprocessing(preprocessing, metadata, sidecar)
        num_classes = layer_graph.logits.channels if layer_graph.logits is not None else None
        labels, labels_source = self._labels(metadata, sidecar, num_classes)
        if pre.source == "default":
            self.warnings.append(
                f"No preprocessing is recorded for {self.path.name}; using the default '{DEFAULT_PRESET}' preset."
            )

        loaded = LoadedModel(
            path=self.path,
            sha256=sha,
            onnx_model=model,
            module=module,
            input=spec,
            preprocessing=pre,
            labels=labels,
            labels_source=labels_source,
            graph=layer_graph,
            parity=None,
            node_of_layer=node_of_layer,
            extra_inputs=extra,
            warnings=self.warnings,
        )
        loaded.canonicalization = list(report.steps)
        loaded.metadata = metadata

        if check_parity:
            self.phase = "checking parity with onnxruntime"
            self.report(0.85, "Checking parity with onnxruntime")
            loaded.parity = compute_parity(loaded, tolerance=tolerance)
            if not loaded.parity.ok:
                self.warnings.append(
                    f"{self.path.name}: the converted model differs from onnxruntime "
                    f"({loaded.parity.describe()}); renders may not reflect the ONNX model exactly."
                )
            self.mark("parity")

        self.phase = "moving the model to the device"
        if isinstance(device, str):
            from fvdesk.core.device import pick_device

            device = pick_device(device)
        loaded.to(device)
        self.mark("device")
        loaded.timings = dict(self.timings, total=time.perf_counter() - t_start)
        self.report(1.0, f"Loaded {self.path.name}")
        return loaded

    # -- read ---------------------------------------------------------------------------------
    def _read_bytes(self) -> tuple[bytes, str]:
        p = self.path
        if not p.exists():
            raise ModelLoadError(f"{p} does not exist.")
        if p.is_dir():
            raise ModelLoadError(f"{p} is a folder, not an ONNX model file.")
        try:
            size = p.stat().st_size
            if size == 0:
                raise ModelLoadError(f"{p} is empty (0 bytes), so it is not an ONNX model.")
            h = hashlib.sha256()
            buf = bytearray(size)
            view = memoryview(buf)
            done = 0
            with open(p, "rb") as fh:
                while done < size:
                    n = fh.readinto(view[done : done + _CHUNK])
                    if not n:
                        break
                    h.update(view[done : done + n])
                    done += n
                    self.report(
                        0.15 * done / size, f"Reading {p.name} ({done >> 20} of {size >> 20} MB)"
                    )
            view.release()
        except PermissionError:
            raise ModelLoadError(f"{p} cannot be read (permission denied).") from None
        except OSError as e:
            raise ModelLoadError(f"{p} cannot be read ({e.strerror or e}).") from None
        return bytes(buf[:done]), h.hexdigest()

    def _parse(self, data: bytes) -> Any:
        from google.protobuf.message import DecodeError

        p = self.path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = onnx.load_model_from_string(data)
        except (DecodeError, RuntimeError, ValueError):
            raise ModelLoadError(
                f"{p} is not a valid ONNX file (it is truncated, corrupt or another format)."
            ) from None
        if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
            raise ModelLoadError(
                f"{p} is not an ONNX model (no graph or opset inside; is it another format?)."
            )
        g = model.graph
        if not g.node:
            raise UnsupportedModelError(
                f"{p} has an empty graph (no nodes), so there is nothing to visualize."
            )
        if not g.output:
            raise ModelLoadError(f"{p} is corrupt or truncated: its graph declares no outputs.")
        return model

    def _load_external_data(self, model: Any) -> None:
        from onnx.external_data_helper import (
            ExternalDataInfo,
            _get_all_tensors,
            load_external_data_for_model,
            uses_external_data,
        )

        folder = self.path.parent.resolve()
        locations: dict[str, Path] = {}
        for t in _get_all_tensors(model):
            if not uses_external_data(t):
                continue
            info = ExternalDataInfo(t)
            loc = info.location or ""
            target = (folder / loc).resolve()
            if not loc or Path(loc).is_absolute() or not target.is_relative_to(folder):
                raise ModelLoadError(
                    f"{self.path} refers to external data at {loc!r}, outside the model's folder; "
                    "fvdesk refuses to read it."
                )
            locations[loc] = target
        if not locations:
            return
        missing = [loc for loc, target in locations.items() if not target.is_file()]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise ModelLoadError(
                f"{self.path} keeps its weights in external data file(s) {shown} that are missing from {folder}."
            )
        self.phase = "reading external data"
        self.report(0.15, "Reading external weights")
        try:
            load_external_data_for_model(model, str(folder))
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelLoadError(
                f"{self.path} has unreadable external data ({_cause(e)})."
            ) from None

    # -- checks -------------------------------------------------------------------------------
    def _check_domains(self, model: Any) -> None:
        custom: dict[str, int] = {}
        for n in model.graph.node:
            if n.domain not in canon.STANDARD_DOMAINS:
                key = f"{n.domain}::{n.op_type}"
                custom[key] = custom.get(key, 0) + 1
        if custom:
            listed = ", ".join(f"{k} x{v}" for k, v in sorted(custom.items()))
            raise UnsupportedModelError(
                f"{self.path} uses custom-domain operators that cannot be converted to torch ({listed})."
            )

    def _check_ops(self, model: Any) -> None:
        bad = canon.unsupported_ops(model)
        if bad:
            listed = ", ".join(f"{k} x{v}" for k, v in sorted(bad.items()))
            raise UnsupportedModelError(
                f"{self.path} uses operators that onnx2torch cannot convert ({listed})."
            )

    # -- input --------------------------------------------------------------------------------
    def _find_image_input(
        self, model: Any, chosen: str | None, *, explicit: bool
    ) -> tuple[int, dict]:
        inputs = list(model.graph.input)
        described = [_describe_input(vi) for vi in inputs]
        if chosen is not None:
            names = [vi.name for vi in inputs]
            if chosen not in names:
                if explicit:
                    raise ModelLoadError(
                        f"{self.path} has no input named {chosen!r} (inputs: {', '.join(described) or 'none'})."
                    )
                self.warnings.append(
                    f"The sidecar names input {chosen!r}, which {self.path.name} does not have."
                )
            else:
                i = names.index(chosen)
                spec = _image_spec(inputs[i])
                if spec is None:
                    raise UnsupportedModelError(
                        f"{self.path}: input {described[i]} is not an image input "
                        "(need float N x C x H x W or N x H x W x C with 1 or 3 channels)."
                    )
                return i, spec
        candidates = [(i, s) for i, vi in enumerate(inputs) if (s := _image_spec(vi)) is not None]
        if not candidates:
            raise UnsupportedModelError(
                f"{self.path} has no image-like input (inputs: {', '.join(described) or 'none'}); "
                "fvdesk needs a float N x C x H x W or N x H x W x C input with 1 or 3 channels."
            )
        if len(candidates) > 1:
            names = [s["name"] for _, s in candidates]
            raise AmbiguousInputError(
                f"{self.path} has several image-like inputs ({', '.join(names)}); choose one with input_name.",
                names,
            )
        return candidates[0]

    def _input_shape(
        self, spec: dict, batch: int, h: int | None = None, w: int | None = None
    ) -> list[int]:
        h = h or spec["height"]
        w = w or spec["width"]
        c = spec["channels"]
        return [batch, c, h, w] if spec["layout"] == "NCHW" else [batch, h, w, c]

    def _extra_inputs(self, model: Any, index: int) -> dict[str, torch.Tensor]:
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
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in t.shape.dim
            ]
            from onnx import helper

            try:
                dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
            except (KeyError, ValueError, TypeError):
                dtype = np.float32
            extra[placeholders[i]] = torch.from_numpy(np.zeros(shape, dtype=dtype))
            self.warnings.append(
                f"{self.path.name}: the non-image input {vi.name!r} is fed zeros of shape {shape}."
            )
        return extra

    def _probe_size(
        self, module: fx.GraphModule, index: int, spec: dict, extra: dict[str, torch.Tensor]
    ) -> bool:
        """Try a larger input on the torch module: fixed reshapes fail (or mis-shape) there."""
        h, w = spec["height"], spec["width"]
        fixed = not _runs(
            module, index, self._input_shape(spec, 1, h + 32, w + 32), extra, expect_batch=1
        )
        if fixed and spec["dynamic_size"]:
            self.warnings.append(
                f"{self.path.name} declares a dynamic input size but only runs at {h}×{w}."
            )
        return fixed

    # -- convert ------------------------------------------------------------------------------
    def _convert(self, model: Any) -> fx.GraphModule:
        try:
            with warnings.catch_warnings(), _CONVERT_LOCK:
                warnings.simplefilter("ignore")
                # Shapes were inferred already (on a weight-free copy); onnx2torch would serialize
                # the whole model again to redo it.
                original = onnx2torch.converter.safe_shape_inference
                onnx2torch.converter.safe_shape_inference = _no_shape_inference
                try:
                    module = onnx2torch.converter.convert(model, attach_onnx_mapping=True)
                finally:
                    onnx2torch.converter.safe_shape_inference = original
        except NotImplementedError as e:
            raise UnsupportedModelError(
                f"{self.path} cannot be converted to torch: {_cause(e)}."
            ) from None
        except KeyError as e:
            raise ModelLoadError(
                f"{self.path} could not be converted to torch: onnx2torch could not find tensor {e} "
                "(a weight that is computed at run time?)."
            ) from None
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module

    # -- layers -------------------------------------------------------------------------------
    def _layers(
        self,
        model: Any,
        module: fx.GraphModule,
        user_nodes: list[NodeOutputs],
        report: canon.Report,
        probe: dict[str, Any],
        spec: dict,
    ) -> tuple[list, dict[str, str]]:
        produced = _tensor_sources(module)  # tensor -> (fx node, k, n_outputs)
        inferred = canon.known_shapes(model)
        batch_dynamic = not isinstance(spec["batch"], int)
        shapes: dict[str, tuple[int | None, ...] | None] = {}
        floats: set[str] = set()
        visible = [n for n in user_nodes if n.name not in report.folded_nodes]
        for n in visible:
            for t in n.outputs:
                src = produced.get(t)
                if src is None:
                    continue
                value = probe.get(src[0].name)
                if isinstance(value, tuple):
                    value = value[src[1]] if src[1] < len(value) else None
                elif src[1] > 0:
                    value = None
                if value is None:
                    continue
                shape, dtype = value.shape, value.dtype
                if not dtype.is_floating_point:
                    continue
                floats.add(t)
                inf = inferred.get(t)
                if inf is not None and len(inf) == len(shape):
                    merged = [
                        d if isinstance(d, int) and d > 0 else s
                        for d, s in zip(inf, shape, strict=True)
                    ]
                else:
                    merged = list(shape)
                if merged:
                    merged[0] = None if batch_dynamic else spec["batch"]
                shapes[t] = tuple(merged)
        graph_outputs = [o.name for o in model.graph.output]
        layouts = tensor_layouts(model.graph.node, spec["name"], spec["layout"])
        layers = find_layers(visible, shapes, floats, graph_outputs, layouts)
        node_of_layer: dict[str, str] = {}
        graph = module.graph
        changed = False
        for layer in layers:
            fx_node, k, _n = produced[layer.output]
            value = probe.get(fx_node.name)
            if isinstance(value, tuple):
                getter = next(
                    (
                        u
                        for u in fx_node.users
                        if u.op == "call_function"
                        and u.target is operator.getitem
                        and u.args[1] == k
                    ),
                    None,
                )
                if getter is None:
                    with graph.inserting_after(fx_node):
                        getter = graph.call_function(operator.getitem, (fx_node, k))
                    changed = True
                node_of_layer[layer.name] = getter.name
            else:
                node_of_layer[layer.name] = fx_node.name
        if changed:
            module.recompile()
        lost = [
            n.name
            for n in visible
            if n.outputs and n.outputs[0] not in produced and n.outputs[0] in inferred
        ]
        if lost:
            self.warnings.append(
                f"{self.path.name}: {len(lost)} nodes were merged away during repair and cannot be targeted "
                f"({', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''})."
            )
        return layers, node_of_layer

    # -- preprocessing and labels ------------------------------------------------------------
    def _preprocessing(
        self, given: Preprocessing | str | None, metadata: dict[str, str], sidecar: Sidecar | None
    ) -> Preprocessing:
        if isinstance(given, Preprocessing):
            return given
        if isinstance(given, str):
            value: Any = given
            if given.lstrip().startswith("{"):
                try:
                    value = json.loads(given)
                except json.JSONDecodeError as e:
                    raise ConfigError(
                        f"The preprocessing argument is not valid JSON ({e.msg})."
                    ) from None
            return parse_preprocessing(value, "user", "The preprocessing argument")
        from_meta = preprocessing_from_metadata(metadata, str(self.path))
        if from_meta is not None:
            return from_meta
        if sidecar is not None and sidecar.preprocessing is not None:
            return sidecar.preprocessing
        return replace(PRESETS[DEFAULT_PRESET], source="default")

    def _labels(
        self, metadata: dict[str, str], sidecar: Sidecar | None, num_classes: int | None
    ) -> tuple[list[str] | None, str]:
        labels = labels_from_metadata(metadata)
        if labels:
            return self._check_count(labels, num_classes, "metadata"), "metadata"
        if sidecar is not None and sidecar.labels is not None:
            try:
                labels = read_labels_file(sidecar.labels)
            except ConfigError as e:
                self.warnings.append(str(e))
            else:
                return self._check_count(labels, num_classes, "sidecar"), "sidecar"
        return default_labels(num_classes)

    def _check_count(self, labels: list[str], n: int | None, source: str) -> list[str]:
        if n is not None and len(labels) != n:
            self.warnings.append(
                f"The {source} labels of {self.path.name} list {len(labels)} classes but the logits have {n}."
            )
        return labels


# -- helpers used by the loader -------------------------------------------------------------
_CONVERT_LOCK = threading.Lock()


def _no_shape_inference(model: Any, **_kwargs: Any) -> Any:
    return model


def _describe_input(vi: Any) -> str:
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


def _size_hint(metadata: dict[str, str], where: str) -> tuple[int, int] | None:
    """``fvdesk.input_size`` (``64`` or ``[h, w]``): the training size of a size-agnostic model."""
    raw = metadata.get("fvdesk.input_size")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        h, w = (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
    except (ValueError, TypeError, IndexError, KeyError):
        raise ConfigError(
            f"The metadata of {where} has an unreadable fvdesk.input_size {raw!r} (expected 64 or [h, w])."
        ) from None
    if not (8 <= h <= 4096 and 8 <= w <= 4096):
        raise ConfigError(f"The metadata of {where} has an out-of-range fvdesk.input_size {raw!r}.")
    return h, w


def _image_spec(vi: Any) -> dict | None:
    """Layout, channels and size of a graph input when it looks like an image, else None."""
    if not vi.type.HasField("tensor_type"):
        return None
    t = vi.type.tensor_type
    if t.elem_type not in _FLOAT_TYPES or not t.HasField("shape") or len(t.shape.dim) != 4:
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
        "dtype": _FLOAT_TYPES[t.elem_type],
    }


def _args(
    module: fx.GraphModule, index: int, x: torch.Tensor, extra: dict[str, torch.Tensor]
) -> list:
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    return [x if i == index else extra[ph.name] for i, ph in enumerate(placeholders)]


class _ProbeError(Exception):
    pass


class _ShapeRecorder(fx.Interpreter):
    """Runs the module once and keeps (shape, dtype) of every node's value instead of the value."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = _shape_of(out)
        return out


@dataclass(frozen=True)
class _TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


def _shape_of(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return _TensorInfo(tuple(int(s) for s in v.shape), v.dtype)
    if isinstance(v, (tuple, list)):
        return tuple(_shape_of(x) for x in v)
    return None


@torch.no_grad()
def _probe(
    module: fx.GraphModule, index: int, spec: dict, extra: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], int | None]:
    """Forward at the native size recording every fx node's (shape, dtype) (tuples for multi-output).

    Tries batch 2 first (one pass answers both questions); a graph that fails or mis-shapes its
    outputs there is run again at batch 1 and gets ``max_batch = 1``.
    """
    for batch in (2, 1):
        shape = (
            [batch, spec["channels"], spec["height"], spec["width"]]
            if spec["layout"] == "NCHW"
            else [batch, spec["height"], spec["width"], spec["channels"]]
        )
        gen = torch.Generator().manual_seed(PARITY_SEED)
        x = torch.rand(shape, generator=gen)
        rec = _ShapeRecorder(module)
        try:
            out = rec.run(*_args(module, index, x, extra))
        except Exception as e:  # noqa: BLE001
            if batch == 1:
                raise _ProbeError(
                    f"fails to run on a {'x'.join(map(str, shape))} input: {_cause(e)}"
                ) from e
            continue
        if batch == 2 and not _outputs_ok(out, 2):
            continue
        return rec.values, (None if batch == 2 else 1)
    raise AssertionError("unreachable")


@torch.no_grad()
def _runs(
    module: fx.GraphModule,
    index: int,
    shape: list[int],
    extra: dict[str, torch.Tensor],
    *,
    expect_batch: int,
) -> bool:
    x = torch.zeros(shape)
    try:
        out = module(*_args(module, index, x, extra))
    except Exception:  # noqa: BLE001 - any failure means "not accepted"
        return False
    return _outputs_ok(out, expect_batch)


def _outputs_ok(out: Any, expect_batch: int) -> bool:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if isinstance(o, torch.Tensor) and o.dim() >= 2 and o.shape[0] != expect_batch:
            return False
        if isinstance(o, torch.Tensor) and o.is_floating_point() and not torch.isfinite(o).all():
            return False
    return True


def _tensor_sources(module: fx.GraphModule) -> dict[str, tuple[fx.Node, int, int]]:
    """ONNX tensor name -> (call_module fx node, output index, number of outputs), via onnx_mapping."""
    out: dict[str, tuple[fx.Node, int, int]] = {}
    for node in module.graph.nodes:
        if node.op != "call_module":
            continue
        mod = module.get_submodule(node.target)
        mapping = getattr(mod, "onnx_mapping", None)
        if mapping is None:
            continue
        outputs = tuple(mapping.outputs)
        for k, t in enumerate(outputs):
            if t:
                out[t] = (node, k, len(outputs))
    return out


# -- metadata preprocessing --------------------------------------------------------------
_WINML_RANGE = {
    "NominalRange_0_255": (0.0, 255.0),
    "Normalized_0_1": (0.0, 1.0),
    "Normalized_1_1": (-1.0, 1.0),
    "NominalRange_16_235": (16.0, 235.0),
}


def preprocessing_from_metadata(
    metadata: dict[str, str], where: str = "the model"
) -> Preprocessing | None:
    """``fvdesk.preprocessing`` (JSON object or preset name), else Windows ML image metadata."""
    raw = metadata.get("fvdesk.preprocessing")
    if raw:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw.strip()
        return parse_preprocessing(value, "metadata", f"The metadata of {where}")
    fmt = metadata.get("Image.BitmapPixelFormat")
    rng = metadata.get("Image.NominalPixelRange")
    if fmt or rng:
        lo, hi = _WINML_RANGE.get(rng or "", (0.0, 255.0))
        bgr = (fmt or "").lower().startswith("bgr")
        return Preprocessing("custom", lo, hi, bgr=bgr, source="metadata")
    return None


# -- parity ------------------------------------------------------------------------------
def _max_abs(a: np.ndarray) -> float:
    return float(np.max(np.abs(a))) if a.size else 0.0


def pick_feature_layer(model: LoadedModel) -> str | None:
    """A mid-depth feature map with spatial extent (vanishing outputs make output parity weak)."""
    feats = [x for x in model.graph.layers if x.kind == "feature" and (x.spatial or (0, 0))[0] > 1]
    if not feats:
        feats = [x for x in model.graph.layers if x.kind == "feature"]
    if not feats:
        return None
    return feats[len(feats) // 2].name


@torch.no_grad()
def compute_parity(
    model: LoadedModel, *, tolerance: float = PARITY_TOLERANCE, seed: int = PARITY_SEED
) -> Parity:
    """Compare the torch module with onnxruntime (CPU, canonical graph) on a seeded random image.

    Relative diffs are the max abs difference divided by the reference's max magnitude, over the
    graph outputs and the logits layer, and separately on a mid-depth feature map (outputs of
    random-weight nets can vanish, e.g. 1e-14 for efficientnet, so output parity alone cannot
    fail).  Extra tensors are added as graph outputs of a weight-free copy of the canonical
    model; the weights are fed as inputs, so nothing big is serialized.
    """
    ort = onnxruntime

    spec = model.input
    gen = torch.Generator().manual_seed(seed)
    x01 = torch.rand(1, spec.channels, spec.height, spec.width, generator=gen)
    device = model.device
    model.to("cpu")
    try:
        x = model.prepare_input(x01)
        outputs = [o.name for o in model.onnx_model.graph.output]
        out_layers = [x_.name for x_ in model.graph.layers if x_.output in outputs]
        # Softmax outputs of untrained nets are uniform; the pre-softmax logits say more.
        if model.graph.logits_name and model.graph.logits_name not in out_layers:
            out_layers.append(model.graph.logits_name)
        feature = pick_feature_layer(model)
        targets = list(dict.fromkeys(out_layers + ([feature] if feature else [])))
        ext = model.extractor(targets)
        torch_vals = {k: v.detach().float().numpy() for k, v in ext(x).items()}

        m, stubbed = canon.without_weights(model.onnx_model)
        tensors = [model.graph[t].output for t in targets]
        for t in tensors:
            if t not in outputs:
                m.graph.output.append(onnx.helper.make_value_info(t, onnx.TypeProto()))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = canon.weight_feeds(model.onnx_model, stubbed)
        for i, vi in enumerate(model.onnx_model.graph.input):
            if i == spec.index:
                feeds[vi.name] = x.numpy().astype(np.float32)
            else:
                ph = f"input_{i + 1}"
                feeds[vi.name] = model.extra_inputs[ph].numpy()
        ref_vals = dict(zip(tensors, sess.run(tensors, feeds), strict=True))
    finally:
        model.to(device)

    def rel(layer: str) -> tuple[float, float]:
        ref = ref_vals[model.graph[layer].output].astype(np.float64)
        if model.graph[layer].layout == "NHWC":
            ref = ref.transpose(0, 3, 1, 2)
        got = torch_vals[layer].astype(np.float64).reshape(ref.shape)
        d = _max_abs(got - ref)
        scale = _max_abs(ref)
        return d, (d / scale if scale > 0 else (0.0 if d == 0 else math.inf))

    abs_out, rel_out = 0.0, 0.0
    for layer in out_layers:
        d, r = rel(layer)
        abs_out, rel_out = max(abs_out, d), max(rel_out, r)
    feat_rel = rel(feature)[1] if feature else None
    ok = rel_out <= tolerance and (feat_rel is None or feat_rel <= tolerance)
    return Parity(
        max_abs_diff=abs_out,
        rel_diff=rel_out,
        feature_rel_diff=feat_rel,
        feature_layer=feature,
        tolerance=tolerance,
        ok=ok,
    )
