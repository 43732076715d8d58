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
names for 1000 classes).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import operator
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
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
from fvdesk.core.fileio import parse_json
from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model import cut as cutlib
from fvdesk.core.model import precision, vet
from fvdesk.core.model.choices import first_choice, resolve_labels
from fvdesk.core.model.graph import (
    NodeOutputs,
    build_layer_graph,
    classify,
    find_layers,
    find_logits,
    tensor_layouts,
)
from fvdesk.core.model.labels import labels_from_metadata, read_labels_file
from fvdesk.core.model.layers import Layer
from fvdesk.core.model.loaded import (
    ConversionCut,
    InputSpec,
    LoadedModel,
    Parity,
    round_to_multiple,
)
from fvdesk.core.model.onnx2torch_compat import import_onnx2torch
from fvdesk.core.model.preprocessing import (
    DEFAULT_PRESET,
    PRESETS,
    Preprocessing,
    parse_preprocessing,
)
from fvdesk.core.model.sidecar import Sidecar, read_sidecar

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
            f"{loader.path} could not be loaded while {loader.phase}: {_cause(e)}."
        ) from e


def _cause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text.split(" While executing %", 1)[0]  # torch.fx appends the node and a tlparse hint
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
        input_size: tuple[int, int] | None = None,
    ) -> LoadedModel:

        t_start = time.perf_counter()
        self.phase = "reading the file"
        self.report(0.0, f"Reading {self.path.name}")
        data, sha = self._read_bytes()
        self.phase = "parsing the ONNX file"
        model = self._parse(data)
        del data
        vet.check_declared_sizes(model, str(self.path))
        self._load_external_data(model)
        self.mark("read")

        self.phase = "checking the sidecar"
        sidecar = read_sidecar(self.path)

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
        request = _Request(model, chosen, input_name is not None, metadata, size)
        built = self._build_with_fallback(request)
        self.warnings += built.warnings
        report = built.report
        report.steps[:0] = base_report.steps
        model = built.model
        index, spec_base, extra, module = built.index, built.spec, built.extra, built.module

        self.phase = "probing the converted model"
        self.report(0.65, "Probing input sizes")
        fixed_size = self._probe_size(module, index, spec_base, extra, built.batch_first)
        multiple = (
            1
            if fixed_size
            else self._probe_multiple(module, index, spec_base, extra, built.batch_first)
        )
        self.mark("probe")

        self.phase = "listing the layers"
        self.report(0.75, "Listing layers")
        layers, node_of_layer = self._layers(model, module, user_nodes, report, built, spec_base)
        unavailable = self._unavailable_layers(built, user_nodes, len(layers))
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

        self.phase = "reading preprocessing and labels"
        height, width = spec_base["height"], spec_base["width"]
        if multiple > 1:  # the default canvas is one the graph runs at
            height, width = round_to_multiple(height, multiple), round_to_multiple(width, multiple)
        spec = InputSpec(
            name=spec_base["name"],
            index=index,
            layout=spec_base["layout"],
            channels=spec_base["channels"],
            height=height,
            width=width,
            fixed_size=fixed_size,
            max_batch=built.max_batch,
            dtype=spec_base["dtype"],
            size_multiple=multiple,
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
        loaded.labels_file = str(sidecar.labels) if labels_source == "sidecar" and sidecar else ""
        loaded.input_source = ("user" if input_name is not None else
                               "sidecar" if chosen is not None else "default")  # fmt: skip
        loaded.conversion = built.cut
        if built.cut is not None:
            self.warnings.insert(0, f"{self.path.name}: {built.cut.describe()}")

        if check_parity:
            self.phase = "checking parity with onnxruntime"
            self.report(0.85, "Checking parity with onnxruntime")
            reference = None
            if half:
                reference = request.base
                tolerance = max(tolerance, precision.HALF_TOLERANCE)
            try:
                loaded.parity = compute_parity(loaded, tolerance=tolerance, reference=reference)
            except _ReferenceRejected as e:
                self.warnings.append(
                    f"onnxruntime rejects {self.path.name} ({e}), so parity could not be checked; "
                    "the torch conversion may differ from what other runtimes compute."
                )
            if loaded.parity is not None and not loaded.parity.ok:
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

    # -- building: canonicalize, cut, convert, probe (with a fallback) ----------------------------
    def _build_with_fallback(self, req: _Request) -> _Built:
        """Canonicalize and convert; when the canonical graph fails (or converts only in part)
        where the file as it is converts completely, find the step to blame and leave it out."""
        failure: _BuildFailure | None = None
        built: _Built | None = None
        try:
            built = self._build(req, skip=())
        except _BuildFailure as e:
            failure = e
        if built is not None and built.cut is None:
            return built
        suspects = built.report.applied if built is not None else failure.applied  # type: ignore[union-attr]  # one of the two is set
        if not suspects:
            return _keep(built, failure)
        self.report(0.55, "Retrying without graph repair")
        try:
            plain = self._build(req, skip=_all_steps())
        except Exception:  # noqa: BLE001 - the file as it is does no better: keep the first answer
            return _keep(built, failure)
        if plain.cut is not None:
            return _keep(built, failure)
        why = failure.cause if failure is not None else built.cut.reason  # type: ignore[union-attr]  # one of the two is set
        for name in suspects:
            self.report(0.6, f"Retrying without the step '{name}'")
            try:
                candidate = self._build(req, skip=(name,))
            except Exception:  # noqa: BLE001 - this step is not the culprit (or not alone)
                continue
            if candidate.cut is None:
                candidate.skipped = [name]
                candidate.report.add(
                    f"left out the step '{name}', which made the graph unconvertible"
                )
                candidate.warnings.append(
                    f"{self.path.name}: the graph repair step '{name}' made the model unconvertible "
                    f"({why}); fvdesk left that step out."
                )
                return candidate
        plain.skipped = list(_all_steps())
        plain.warnings.append(
            f"{self.path.name}: graph repair made the model unconvertible ({why}) and no single "
            "step could be blamed; fvdesk converted the file without repairs."
        )
        return plain

    def _build(self, req: _Request, *, skip: Iterable[str]) -> _Built:
        skip = frozenset(skip)
        saved, self.warnings = self.warnings, []
        report = canon.Report()
        try:
            return self._build_inner(req, skip, report)
        except (UnsupportedModelError, _ProbeError, _NodeFailed) as e:
            raise _BuildFailure(e, report.applied, str(self.path)) from e
        finally:
            self.warnings = saved

    def _build_inner(self, req: _Request, skip: frozenset[str], report: canon.Report) -> _Built:
        model = onnx.ModelProto()
        model.CopyFrom(req.base)
        self.phase = "repairing the graph"
        model = canon.canonicalize(model, where=str(self.path), report=report, skip=skip)
        self.mark("canonicalize")

        self.phase = "finding the image input"
        index, spec = self._find_image_input(model, req.chosen, explicit=req.explicit)
        image = model.graph.input[index].name
        spec["dtype"] = _declared_dtype(req.base, image, spec["dtype"])
        canon.prune_unused(model, report, protect=[image])
        hint = self._size_hint(req.metadata, spec, req.input_size)
        if hint:
            spec["height"], spec["width"] = hint
        vet.check_activation_sizes(canon.without_weights(model)[0], spec, str(self.path))

        self.phase = "checking the operators"
        self.report(0.4, "Checking operators")
        full_shapes = canon.known_shapes(model)
        found = cutlib.blockers(model)
        self.mark("check")
        failed: list[cutlib.Blocker] = []
        for _attempt in range(_MAX_CUTS):
            bad = found + failed
            work, graph_cut = model, None
            if bad:
                graph_cut = cutlib.cut(model, [b.node for b in bad], protect=[image])
                if graph_cut is None:
                    raise _nothing_convertible(str(self.path), bad)
                work = graph_cut.model
            index = [i.name for i in work.graph.input].index(image)
            extra = self._extra_inputs(work, index)
            if canon.MEASURE_SHAPES not in skip:
                try:
                    self._measure_shapes(work, index, spec, extra, report)
                except Exception as e:  # noqa: BLE001 - the converter may not need them after all
                    report.warnings.append(f"onnxruntime could not measure shapes ({_cause(e)})")
            self.phase = "converting to torch"
            self.report(0.5, "Converting to torch")
            try:
                module = self._convert(work, own_inference="infer shapes" in skip)
            except _NodeFailed as e:
                if any(b.node == e.blocker.node for b in bad):
                    raise
                failed.append(e.blocker)
                continue
            break
        else:
            raise _nothing_convertible(str(self.path), found + failed)
        self.mark("convert")

        self.phase = "probing the converted model"
        self.report(0.6, "Probing the converted model")
        probe, probe1, max_batch, first = _probe(module, index, spec, extra)
        self.mark("probe")
        cut_info = None
        if graph_cut is not None:
            ordered = [b for b in bad if b.node in {n.name for n in graph_cut.removed}]
            order = {n.name: i for i, n in enumerate(model.graph.node)}
            ordered.sort(key=lambda b: order.get(b.node, 0))
            head = ordered[0] if ordered else bad[0]
            cut_info = ConversionCut(
                stopped_at=head.node,
                op=head.op,
                reason=head.reason,
                cut_nodes=len(graph_cut.removed),
                total_nodes=len(model.graph.node),
                cut_ops=cutlib.op_counts(graph_cut.removed),
                boundary=tuple(graph_cut.boundary),
                blockers=tuple(b.node for b in ordered),
            )
        return _Built(
            model=work,
            report=report,
            index=index,
            spec=spec,
            extra=extra,
            module=module,
            probe=probe,
            probe1=probe1,
            max_batch=max_batch,
            batch_first=first,
            cut=cut_info,
            removed=list(graph_cut.removed) if graph_cut is not None else [],
            full_shapes=full_shapes,
            blockers=bad,
            warnings=self.warnings,
            path=str(self.path),
        )

    def _measure_shapes(
        self, model: Any, index: int, spec: dict, extra: dict, report: canon.Report
    ) -> None:
        missing = canon.tensors_needing_shapes(model)
        if not missing:
            return
        image = np.zeros(self._input_shape(spec, 1), np.float32)
        feeds = {
            vi.name: image if i == index else extra[f"input_{i + 1}"].numpy()
            for i, vi in enumerate(model.graph.input)
        }
        canon.fill_shapes_with_ort(model, feeds, missing, report)
        report.applied.append(canon.MEASURE_SHAPES)

    def _size_hint(
        self, metadata: dict[str, str], spec: dict, user: tuple[int, int] | None = None
    ) -> tuple[int, int] | None:
        """The user's input size, else the training size a size-agnostic model records
        (``fvdesk.input_size``, Ultralytics' ``imgsz``); a fixed-size model given or recording
        another size gets a warning."""
        hint = user or _size_hint(metadata, str(self.path))
        spec["size_source"] = "user" if user else ("metadata" if hint else "default")
        if hint is None or spec["dynamic_size"]:
            return hint
        if hint != (spec["height"], spec["width"]):
            where = "you chose" if user else "it records in its metadata"
            self.warnings.append(
                f"{self.path.name} has its input fixed at {spec['height']}×{spec['width']}, not the "
                f"{hint[0]}×{hint[1]} {where}; using the input's."
            )
        return None

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
        vet.check_text(model, str(p))
        vet.check_opsets(model, str(p))
        return model

    def _load_external_data(self, model: Any) -> None:
        """Read weights kept in external files, after checking every declaration: the location
        stays inside the model's folder (symlinks resolved), names a regular file, and the
        declared offset and length are numbers that fit that file and the tensor's size."""
        from onnx.external_data_helper import _get_all_tensors, uses_external_data

        folder = self.path.parent.resolve()
        plans: list[tuple[Any, Path, int, int]] = []
        for t in _get_all_tensors(model):
            if not uses_external_data(t):
                continue
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            try:
                target = (folder / loc).resolve()
                inside = bool(loc) and not Path(loc).is_absolute() and target.is_relative_to(folder)
            except (ValueError, OSError):  # NUL bytes, loops of symlinks
                inside = False
            if not inside:
                raise ModelLoadError(
                    f"{self.path} refers to external data at {loc!r}, outside the model's folder; "
                    "fvdesk refuses to read it."
                )
            if not target.exists():
                raise ModelLoadError(
                    f"{self.path} keeps its weights in external data file(s) {loc!r} that are missing from {folder}."
                )
            if not target.is_file():
                raise ModelLoadError(
                    f"{self.path} refers to external data {loc!r}, which is not a regular file."
                )
            plans.append((t, target, *self._external_range(t, info, target)))
        if not plans:
            return
        self.phase = "reading external data"
        self.report(0.15, "Reading external weights")
        try:
            for t, target, offset, length in plans:
                with open(target, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(length)
                if len(data) != length:
                    raise OSError(f"{target.name} ended early")
                t.raw_data = data
                del t.external_data[:]
                t.data_location = onnx.TensorProto.DEFAULT
        except OSError as e:
            raise ModelLoadError(
                f"{self.path} has unreadable external data ({_cause(e)})."
            ) from None

    def _external_range(self, t: Any, info: dict[str, str], target: Path) -> tuple[int, int]:
        """(offset, length) of an external tensor, checked against the file and the tensor."""
        size = target.stat().st_size
        try:
            offset = int(info.get("offset", "0") or 0)
            length = int(info["length"]) if info.get("length") else size - offset
        except ValueError:
            raise ModelLoadError(
                f"{self.path} is corrupt: the external data of {t.name!r} has a non-numeric offset or length."
            ) from None
        want = vet.tensor_bytes(t)
        if (
            offset < 0
            or length < 0
            or offset + length > size
            or (want is not None and length != want)
        ):
            raise ModelLoadError(
                f"{self.path} is corrupt: the external data of {t.name!r} (offset {offset}, "
                f"length {length}) does not fit {target.name} ({size} bytes) and the tensor's "
                f"{want if want is not None else '?'} bytes."
            )
        return offset, length

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
                dtype = np.dtype(np.float32)
            extra[placeholders[i]] = torch.from_numpy(np.zeros(shape, dtype=dtype))
            self.warnings.append(
                f"{self.path.name}: the non-image input {vi.name!r} is fed zeros of shape {shape}."
            )
        return extra

    def _probe_size(
        self,
        module: fx.GraphModule,
        index: int,
        spec: dict,
        extra: dict[str, torch.Tensor],
        batch_first: list[bool],
    ) -> bool:
        """Try a larger input on the torch module: fixed reshapes fail (or mis-shape) there."""
        h, w = spec["height"], spec["width"]
        shape = self._input_shape(spec, 1, h + 32, w + 32)
        fixed = not _runs(module, index, shape, extra, expect_batch=1, batch_first=batch_first)
        if fixed and spec["dynamic_size"]:
            self.warnings.append(
                f"{self.path.name} declares a dynamic input size but only runs at {h}×{w}."
            )
        return fixed

    def _probe_multiple(
        self,
        module: fx.GraphModule,
        index: int,
        spec: dict,
        extra: dict[str, torch.Tensor],
        batch_first: list[bool],
    ) -> int:
        """The size granularity of a size-agnostic graph: the smallest ``m = 2**j`` at which a
        square input whose size has exactly ``j`` factors of 2 runs (stride-2 stages joined by
        adds or concats fail otherwise).  Sizes start at the native size, capped at 128 px (cheap,
        yet a graph with a minimum size is not taken for one with a multiple); batch 1, no
        gradients; a failing size stops at the first mismatched add, and most graphs pass the
        first probe.  When none runs no multiple is claimed."""
        floor = min(spec["height"], spec["width"], _MULTIPLE_FLOOR)
        with torch.no_grad():
            for j in range(_MULTIPLE_MAX + 1):
                s = _multiple_probe_size(floor, j)
                shape = self._input_shape(spec, 1, s, s)
                if _runs(module, index, shape, extra, expect_batch=1, batch_first=batch_first):
                    return 1 << j
        return 1

    # -- convert ------------------------------------------------------------------------------
    def _convert(self, model: Any, *, own_inference: bool = False) -> fx.GraphModule:
        """onnx2torch's conversion; a node whose converter raises becomes ``_NodeFailed`` (the
        graph can be cut there).  ``own_inference`` lets onnx2torch infer shapes itself (the file
        converted without fvdesk's repairs, as plain onnx2torch would)."""
        current: list[Any] = []
        conv = onnx2torch.converter

        def tracked(*args: Any, **kwargs: Any) -> Any:
            converter = original_get(*args, **kwargs)  # type: ignore[has-type]  # bound below, before the first call

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
                op = (
                    node.operation_type
                    if not node.domain
                    else f"{node.domain}::{node.operation_type}"
                )
                why = (
                    _cause(e)
                    if not isinstance(e, KeyError)
                    else f"tensor {e} is computed at run time"
                )
                raise _NodeFailed(
                    cutlib.Blocker(
                        node.name, op, f"onnx2torch cannot convert it ({why})", f"{op} ({why})"
                    )
                ) from None
            if isinstance(e, NotImplementedError):
                raise UnsupportedModelError(
                    f"{self.path} cannot be converted to torch: {_cause(e)}."
                ) from None
            if isinstance(e, KeyError):
                raise ModelLoadError(
                    f"{self.path} could not be converted to torch: onnx2torch could not find tensor {e} "
                    "(a weight that is computed at run time?)."
                ) from None
            raise
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
        built: _Built,
        spec: dict,
    ) -> tuple[list, dict[str, str]]:
        """The targetable layers: float outputs of the user's nodes whose dim 0 is the batch
        (checked by comparing the probes at batch 1 and 2), shaped from inference + the probe."""
        produced = _tensor_sources(module)  # tensor -> (fx node, k, n_outputs)
        inferred = canon.known_shapes(model)
        batch_dynamic = not isinstance(spec["batch"], int)
        shapes: dict[str, tuple[int | None, ...] | None] = {}
        floats: set[str] = set()
        removed = {n.name for n in built.removed}
        visible = [
            n for n in user_nodes if n.name not in report.folded_nodes and n.name not in removed
        ]
        for n in visible:
            for t in n.outputs:
                src = produced.get(t)
                if src is None:
                    continue
                value = _probed(built.probe, src)
                if value is None or not value.dtype.is_floating_point:
                    continue
                shape = value.shape
                if not _per_image(shape, _probed(built.probe1, src), built.max_batch):
                    continue
                floats.add(t)
                inf = inferred.get(t)
                if inf is not None and len(inf) == len(shape):
                    merged: list[int | None] = [
                        d if isinstance(d, int) and d > 0 else s
                        for d, s in zip(inf, shape, strict=True)
                    ]
                else:
                    merged = list(shape)
                if merged:
                    merged[0] = None if batch_dynamic else spec["batch"]
                shapes[t] = tuple(merged)
        graph_outputs = [o.name for o in model.graph.output]
        hw = (spec["height"], spec["width"])
        layouts = tensor_layouts(model.graph.node, spec["name"], spec["layout"], shapes, hw)
        layers = find_layers(visible, shapes, floats, graph_outputs, layouts, image_hw=hw)
        node_of_layer: dict[str, str] = {}
        graph = module.graph
        changed = False
        for layer in layers:
            fx_node, k, _n = produced[layer.output]
            value = built.probe.get(fx_node.name)
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

    def _unavailable_layers(
        self, built: _Built, user_nodes: list[NodeOutputs], first_index: int
    ) -> list[Layer]:
        """The user's nodes a partial conversion left out, greyed in the tree with the reason."""
        if built.cut is None:
            return []
        removed = {n.name for n in built.removed}
        why = {b.node: b.reason for b in built.blockers}
        cut = built.cut
        out: list[Layer] = []
        for n in user_nodes:
            if n.name not in removed or not n.outputs or not n.outputs[0]:
                continue
            t = n.outputs[0]
            shape = built.full_shapes.get(t)
            kind = classify(shape, is_output=False) if shape is not None else None
            reason = why.get(n.name) or (
                f"it depends on {cut.stopped_at!r}, where the conversion stopped"
            )
            out.append(
                Layer(
                    n.name,
                    t,
                    n.op,
                    tuple(d if isinstance(d, int) else None for d in shape) if kind else (),  # type: ignore[union-attr]  # kind is None whenever shape is
                    kind or "unknown",  # type: ignore[arg-type]  # a kind the layer list shows as is
                    first_index + len(out),
                    available=False,
                    reason=reason,
                )
            )
        return out

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
                    value = parse_json(given)
                except json.JSONDecodeError as e:
                    raise ConfigError(
                        f"The preprocessing argument is not valid JSON ({e.msg})."
                    ) from None
            return parse_preprocessing(value, "user", "The preprocessing argument")
        # The user's saved choice beats what the file says: they chose it knowing the model.
        return first_choice(None, sidecar.preprocessing if sidecar is not None else None,
                            lambda: preprocessing_from_metadata(metadata, str(self.path)),
                            replace(PRESETS[DEFAULT_PRESET], source="default"))  # fmt: skip

    def _labels(
        self, metadata: dict[str, str], sidecar: Sidecar | None, num_classes: int | None
    ) -> tuple[list[str] | None, str]:
        saved = None
        if sidecar is not None and sidecar.labels is not None:
            try:
                saved = read_labels_file(sidecar.labels)
            except ConfigError as e:
                self.warnings.append(str(e))
        labels, source = resolve_labels(saved, labels_from_metadata(metadata), num_classes)
        if source in ("sidecar", "metadata"):
            labels = self._check_count(labels, num_classes, source)  # type: ignore[arg-type]  # these sources give labels
        return labels, source

    def _check_count(self, labels: list[str], n: int | None, source: str) -> list[str]:
        if n is not None and len(labels) != n:
            self.warnings.append(
                f"The {source} labels of {self.path.name} list {len(labels)} classes but the logits have {n}."
            )
        return labels


# -- building blocks -----------------------------------------------------------------------
def _all_steps() -> tuple[str, ...]:
    """Every skippable step: the canonicalization passes and the loader's shape measurement."""
    return (*canon.PASS_NAMES, canon.MEASURE_SHAPES)


#: Conversion-time failures handled by cutting the graph there, at most this many per build.
_MAX_CUTS = 8


@dataclass(frozen=True)
class _Request:
    """What every build attempt starts from: the named, sorted graph and the user's choices."""

    base: Any  # onnx.ModelProto (never modified)
    chosen: str | None
    explicit: bool
    metadata: dict[str, str]
    input_size: tuple[int, int] | None = None  # the user's (argument or sidecar)


@dataclass
class _Built:
    """One build attempt's result: the graph the module was converted from, and what was seen."""

    model: Any
    report: canon.Report
    index: int
    spec: dict
    extra: dict[str, torch.Tensor]
    module: fx.GraphModule
    probe: dict[str, Any]  # fx node -> shape info at the probe batch (2 when it worked)
    probe1: dict[str, Any] | None  # at batch 1, when ``probe`` is at batch 2
    max_batch: int | None
    batch_first: list[bool]  # per module output: its dim 0 is the batch
    cut: ConversionCut | None
    removed: list[Any]  # NodeProtos left out by a cut
    full_shapes: dict  # inferred shapes of the whole canonical graph (for left-out layers)
    blockers: list[cutlib.Blocker]
    warnings: list[str]
    path: str
    skipped: list[str] = field(default_factory=list)

    def nothing_left(self) -> FvdeskError:
        return _nothing_convertible(self.path, self.blockers)


class _NodeFailed(Exception):
    """onnx2torch's converter for one node raised: the graph can be cut there."""

    def __init__(self, blocker: cutlib.Blocker) -> None:
        super().__init__(blocker.reason)
        self.blocker = blocker


class _BuildFailure(Exception):
    """A build attempt could not convert or run the graph (``public`` is what the user sees)."""

    def __init__(self, error: Exception, applied: list[str], path: str) -> None:
        super().__init__(str(error))
        self.applied = list(applied)
        if isinstance(error, FvdeskError):
            self.public: FvdeskError = error
            self.cause = str(error)
        elif isinstance(error, _ProbeError):
            advice = ""
            if error.size_agnostic:
                advice = (
                    "; if the model takes another input size, save it with `fvdesk info "
                    f"{Path(path).name} --input-size HxW --remember`"
                    if error.size_source != "user"
                    else "; check the input size you gave"
                )
            self.public = ModelLoadError(
                f"{path} converts to torch but the result {error}{advice}."
            )
            self.cause = f"the converted module {error}"
        else:
            self.public = UnsupportedModelError(f"{path} cannot be converted to torch: {error}.")
            self.cause = str(error)


def _keep(built: _Built | None, failure: _BuildFailure | None) -> _Built:
    if built is not None:
        return built
    assert failure is not None
    raise failure.public


def _nothing_convertible(path: str, bad: list[cutlib.Blocker]) -> FvdeskError:
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


def _declared_dtype(base: Any, name: str, default: str) -> str:
    """The image input's element type as the file declares it (before half precision widening)."""
    for vi in base.graph.input:
        if vi.name == name:
            return _FLOAT_TYPES.get(vi.type.tensor_type.elem_type, default)
    return default


# -- helpers used by the loader -------------------------------------------------------------
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


_MULTIPLE_FLOOR = 128  # probe sizes for ``size_multiple`` start here (or at the native size)
_MULTIPLE_MAX = 6  # multiples up to 2**6 = 64 are measured


def _multiple_probe_size(floor: int, j: int) -> int:
    """The smallest size >= ``floor`` with exactly ``j`` factors of 2 (an odd multiple of 2**j)."""
    k = -(-floor // (1 << j))
    return (k if k % 2 else k + 1) << j


class _ProbeError(Exception):
    """The converted module failed at the probe; ``size_agnostic``: every spatial dimension was
    declared dynamic, so the size probed may simply not be the model's."""

    def __init__(self, message: str, spec: dict | None = None) -> None:
        super().__init__(message)
        self.size_agnostic = bool(spec and spec.get("dynamic_size"))
        self.size_source = (spec or {}).get("size_source", "default")


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


def _image(spec: dict, batch: int) -> tuple[list[int], torch.Tensor]:
    shape = (
        [batch, spec["channels"], spec["height"], spec["width"]]
        if spec["layout"] == "NCHW"
        else [batch, spec["height"], spec["width"], spec["channels"]]
    )
    gen = torch.Generator().manual_seed(PARITY_SEED)
    return shape, torch.rand(shape, generator=gen)


@torch.no_grad()
def _probe(
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
    rec1 = _ShapeRecorder(module)
    try:
        out1 = rec1.run(*_args(module, index, x, extra))
    except Exception as e:  # noqa: BLE001
        raise _ProbeError(
            f"fails to run on a {'x'.join(map(str, shape))} input: {_cause(e)}", spec
        ) from e
    first = [isinstance(o, torch.Tensor) and o.dim() >= 1 and o.shape[0] == 1 for o in _outs(out1)]
    _shape2, x2 = _image(spec, 2)
    rec2 = _ShapeRecorder(module)
    try:
        out2 = rec2.run(*_args(module, index, x2, extra))
    except Exception:  # noqa: BLE001 - batch 1 only
        return rec1.values, None, 1, first
    if not _outputs_ok(out2, 2, first):
        return rec1.values, None, 1, first
    return rec2.values, rec1.values, None, first


def _probed(values: dict[str, Any] | None, src: tuple[fx.Node, int, int]) -> _TensorInfo | None:
    """The recorded (shape, dtype) of output ``k`` of an fx node."""
    if values is None:
        return None
    value = values.get(src[0].name)
    if isinstance(value, tuple):
        return value[src[1]] if src[1] < len(value) else None
    return None if src[1] > 0 else value


def _per_image(
    shape: tuple[int, ...], at_batch1: _TensorInfo | None, max_batch: int | None
) -> bool:
    """Whether dim 0 of a tensor is the batch (from the probes at batch 2 and 1)."""
    if not shape:
        return False
    if max_batch == 1 or at_batch1 is None:
        return shape[0] == 1
    one = at_batch1.shape
    return len(one) == len(shape) and shape[0] == 2 and one[0] == 1 and one[1:] == shape[1:]


def _outs(out: Any) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@torch.no_grad()
def _runs(
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
        out = module(*_args(module, index, x, extra))
    except Exception:  # noqa: BLE001 - any failure means "not accepted"
        return False
    return _outputs_ok(out, expect_batch, batch_first)


def _outputs_ok(out: Any, expect_batch: int, batch_first: list[bool] | None = None) -> bool:
    """Outputs are finite and, where dim 0 is the batch (``batch_first``), have ``expect_batch``."""
    for i, o in enumerate(_outs(out)):
        first = batch_first[i] if batch_first is not None and i < len(batch_first) else True
        if isinstance(o, torch.Tensor) and first and o.dim() >= 2 and o.shape[0] != expect_batch:
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
            value = parse_json(raw)
        except json.JSONDecodeError as e:
            if e.msg == "nested too deeply":
                raise ConfigError(
                    f"The metadata of {where} has an fvdesk.preprocessing that is not valid JSON "
                    "(nested too deeply)."
                ) from None
            value = raw.strip()
        return parse_preprocessing(value, "metadata", f"The metadata of {where}")
    if metadata.get("author", "").startswith("Ultralytics") or {"imgsz", "stride", "names"} <= set(
        metadata
    ):
        # Ultralytics feeds RGB in [0, 1] with no mean/std (its classify transforms use 0 and 1).
        return replace(PRESETS["unit"], source="metadata")
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
    maps = ("feature", "tokens")
    feats = [x for x in model.graph.layers if x.kind in maps and (x.spatial or (0, 0))[0] > 1]
    if not feats:
        feats = [x for x in model.graph.layers if x.kind in maps]
    if not feats:
        return None
    return feats[len(feats) // 2].name


@torch.no_grad()
def compute_parity(
    model: LoadedModel,
    *,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = PARITY_SEED,
    reference: Any = None,
) -> Parity:
    """Compare the torch module with onnxruntime (CPU) on a seeded random image.

    Relative diffs are the max abs difference divided by the reference's max magnitude, over the
    graph outputs and the logits layer, and separately on a mid-depth feature map (outputs of
    random-weight nets can vanish, e.g. 1e-14 for efficientnet, so output parity alone cannot
    fail).  Extra tensors are added as graph outputs of a weight-free copy of the graph; the
    weights are fed as inputs, so nothing big is serialized.  onnxruntime runs the canonical
    graph, or ``reference`` (the file's own half-precision graph, whose tensors have the same
    names), fed in the types it declares.  For a partially converted model the canonical graph
    ends at the boundary of the converted part, so parity covers exactly what torch computes.
    """
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
        if not out_layers and model.graph.layers:  # a cut model whose boundary is no layer
            out_layers.append(model.graph.layers[-1].name)
        feature = pick_feature_layer(model)
        targets = list(dict.fromkeys(out_layers + ([feature] if feature else [])))
        ext = model.extractor(targets, raw=True)
        torch_vals = {k: v.detach().float().numpy() for k, v in ext(x).items()}
        tensors = [model.graph[t].output for t in targets]
        label = ""
        ref_vals = None
        if reference is not None:
            try:
                ref_vals = _run_reference(reference, model, x, tensors)
                label = "float16 graph"
            except Exception:  # noqa: BLE001 - fall back to the canonical graph
                ref_vals = None
        if ref_vals is None:
            try:
                ref_vals = _run_reference(model.onnx_model, model, x, tensors)
            except Exception as e:  # noqa: BLE001 - onnxruntime's own error types vary by build
                raise _ReferenceRejected(_cause(e)) from e
    finally:
        model.to(device)

    def rel(layer: str) -> tuple[float, float]:
        ref = ref_vals[model.graph[layer].output].astype(np.float64)
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
        reference=label,
    )


class _ReferenceRejected(Exception):
    """onnxruntime cannot build or run the reference graph (the file is not valid ONNX)."""


def _run_reference(
    graph: Any, model: LoadedModel, x: torch.Tensor, tensors: list[str]
) -> dict[str, np.ndarray]:
    """``tensors`` of ``graph`` computed by onnxruntime (CPU) on the prepared input ``x``."""
    from onnx import helper

    ort = onnxruntime
    m, stubbed = canon.without_weights(graph)
    outputs = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in outputs:
            m.graph.output.append(onnx.helper.make_value_info(t, onnx.TypeProto()))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = canon.weight_feeds(graph, stubbed)
    names = [i.name for i in model.onnx_model.graph.input]
    declared = {vi.name: vi.type.tensor_type.elem_type for vi in graph.graph.input}

    def typed(name: str, value: np.ndarray) -> np.ndarray:
        elem = declared.get(name)
        return value.astype(helper.tensor_dtype_to_np_dtype(elem)) if elem else value

    for i, name in enumerate(names):
        if name not in declared:
            continue
        value = (
            x.numpy() if i == model.input.index else model.extra_inputs[f"input_{i + 1}"].numpy()
        )
        feeds[name] = typed(name, value)
    return dict(zip(tensors, sess.run(tensors, feeds), strict=True))
