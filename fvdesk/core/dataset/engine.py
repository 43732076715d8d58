"""The activation pass engines: a batch of images in, per-unit summaries of the layers out.

Two engines compute the same rows (``cache.row_dtype``): fvdesk's truncated torch module
(``LoadedModel.extractor``: the converted graph cut after the deepest requested layer) and
onnxruntime on the canonical ONNX graph pruned to the requested layers, which become its graph
outputs (CUDA provider when the device is a GPU and onnxruntime has it).  Both apply the model's
preprocessing through ``LoadedModel.prepare_input``, run without gradients and reduce every map
to its rows on the device they ran on, so only ``units`` numbers per image leave it.

``pick_engine`` chooses by measurement (``benchmarks/bench_examples.py``): onnxruntime on CPUs,
where it ran the demo model and ResNet-18 about twice as fast as the converted torch module,
and torch on GPUs (its CUDA path is the one the renderer already exercises); a model
onnxruntime cannot take in one piece (over 2 GB) uses torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fvdesk.core.dataset.cache import row_dtype
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing

ENGINES = ("auto", "torch", "onnxruntime")


class Measure:
    """What a unit's value is on one image: ``channel`` (spatial max/min, mean as objective) or
    ``neuron`` (the value at grid position ``x, y``); vector layers have one value per unit."""

    def __init__(self, kind: str = "channel", x: int | None = None, y: int | None = None) -> None:
        self.kind, self.x, self.y = kind, x, y

    @property
    def key(self) -> str:
        return "channel" if self.kind != "neuron" else f"neuron@{self.x},{self.y}"


def _reduce_torch(act: torch.Tensor, m: Measure, dtype: np.dtype) -> np.ndarray:
    a = act.float()
    b, c = a.shape[0], a.shape[1]
    out = np.zeros(b, dtype)
    if a.dim() == 2:
        v = a.cpu().numpy()
        out["max"] = out["min"] = out["mean"] = v
        return out
    if m.kind == "neuron":
        h, w = a.shape[2], a.shape[3]
        x = w // 2 if m.x is None else m.x
        y = h // 2 if m.y is None else m.y
        v = a[:, :, y, x].cpu().numpy()
        out["max"] = out["min"] = out["mean"] = v
        out["amax"] = out["amin"] = y * w + x
        return out
    flat = a.reshape(b, c, -1)
    mx, amx = flat.max(-1)
    mn, amn = flat.min(-1)
    out["max"], out["amax"] = mx.cpu().numpy(), amx.cpu().numpy()
    out["min"], out["amin"] = mn.cpu().numpy(), amn.cpu().numpy()
    out["mean"] = flat.mean(-1).cpu().numpy()
    return out


class Engine:
    """Runs batches of uint8 (B, H, W, 3) images; ``run`` returns ``{layer: rows}``."""

    name = ""

    def __init__(self, model: LoadedModel, layers: Sequence[str], measure: Measure,
                 pre: Preprocessing, device: torch.device) -> None:  # fmt: skip
        self.model, self.layers, self.measure, self.pre = model, list(layers), measure, pre
        self.device = device
        self.dtypes = {}
        for name in self.layers:
            lay = model.graph[name]
            grid = (lay.spatial[0] * lay.spatial[1]) if lay.spatial else 1
            self.dtypes[name] = row_dtype(lay.channels, max(grid, 1))

    def prepare(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        x01 = x.permute(0, 3, 1, 2).float().div_(255.0)
        return self.model.prepare_input(x01, self.pre)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.model.device != self.device:
            self.model.to(self.device)
        self.ext = self.model.extractor(self.layers)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            acts = self.ext(self.prepare(images, self.device))
            return {k: _reduce_torch(acts[k], self.measure, self.dtypes[k]) for k in self.layers}


class OrtEngine(Engine):
    name = "onnxruntime"

    def __init__(self, *args: Any, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = ort_session(self.model, [self.model.graph[n].output for n in self.layers],
                                   self.device, threads=threads)  # fmt: skip
        self.outputs = [self.model.graph[n].output for n in self.layers]
        self.feeds = {}
        inputs = list(self.model.onnx_model.graph.input)
        for i, vi in enumerate(inputs):
            if i != self.model.input.index:
                self.feeds[vi.name] = self.model.extra_inputs[f"input_{i + 1}"].cpu().numpy()

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            x = self.prepare(images, torch.device("cpu")).numpy()
        feeds = {**self.feeds, self.model.input.name: x.astype(np.float32, copy=False)}
        outs = self.session.run(self.outputs, feeds)
        result = {}
        for name, a in zip(self.layers, outs, strict=True):
            if self.model.graph[name].layout == "NHWC":
                a = a.transpose(0, 3, 1, 2)
            t = torch.from_numpy(np.ascontiguousarray(a))
            result[name] = _reduce_torch(t, self.measure, self.dtypes[name])
        return result


def truncated_onnx(onnx_model: Any, outputs: Sequence[str]) -> Any:
    """A copy of the graph computing only ``outputs`` (which become its outputs)."""
    import onnx
    from onnx import helper

    g = onnx_model.graph
    need = set(outputs)
    kept = []
    for node in reversed(g.node):
        if any(o in need for o in node.output):
            kept.append(node)
            need.update(t for t in node.input if t)
    kept.reverse()
    m = onnx.ModelProto()
    m.ir_version = onnx_model.ir_version
    m.opset_import.extend(onnx_model.opset_import)
    m.functions.extend(onnx_model.functions)
    mg = m.graph
    mg.name = g.name
    mg.node.extend(kept)
    mg.input.extend(vi for vi in g.input if vi.name in need)
    mg.initializer.extend(t for t in g.initializer if t.name in need)
    by_name = {vi.name: vi for vi in [*g.value_info, *g.output]}
    for t in outputs:
        mg.output.append(by_name.get(t) or helper.make_value_info(t, onnx.TypeProto()))
    return m


def ort_session(model: LoadedModel, outputs: Sequence[str] | None, device: torch.device,
                *, threads: int | None = None) -> Any:  # fmt: skip
    """An onnxruntime session of ``model``'s canonical graph (pruned to ``outputs`` unless None),
    with the CUDA provider first when ``device`` is a GPU and onnxruntime offers it."""
    import onnxruntime as ort

    proto = model.onnx_model if outputs is None else truncated_onnx(model.onnx_model, outputs)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    return ort.InferenceSession(proto.SerializeToString(), so, providers=providers)  # type: ignore[attr-defined]


def pick_engine(name: str, device: torch.device) -> str:
    """``auto`` -> the measured choice for ``device`` (see the module docstring)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    if name != "auto":
        return name
    return "onnxruntime" if device.type == "cpu" else "torch"


def make_engine(model: LoadedModel, layers: Sequence[str], measure: Measure, pre: Preprocessing,
                device: torch.device, name: str = "auto") -> Engine:  # fmt: skip
    """The engine ``name`` (after ``pick_engine``); onnxruntime falls back to torch when it
    cannot take the model (e.g. a graph over protobuf's 2 GB)."""
    chosen = pick_engine(name, device)
    if chosen == "onnxruntime":
        try:
            return OrtEngine(model, layers, measure, pre, device)
        except Exception:  # noqa: BLE001 - any onnxruntime refusal: the torch engine still works
            if name == "onnxruntime":
                raise
    return TorchEngine(model, layers, measure, pre, device)
