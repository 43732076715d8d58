"""The activation pass engines: a batch of images in, per-unit summaries of the layers out.

Two engines compute the same rows (``cache.row_dtype``): fvdesk's truncated torch module
(``LoadedModel.extractor``: the converted graph cut after the deepest requested layer) and
onnxruntime on the canonical ONNX graph pruned to the requested layers, which become its graph
outputs (CUDA provider when the device is a GPU and onnxruntime has it).  Both apply the model's
preprocessing through ``LoadedModel.prepare_input``, run without gradients and reduce every map
to its rows on the device they ran on, so only ``units`` numbers per image leave it.

``pick_engine`` chooses by measurement (``benchmarks/bench_examples.py``, 2 CPU threads):
onnxruntime on CPUs, where the whole pass ran 2.1x (ResNet-18 to layer3) and 6x (demo model) as
fast as with the converted torch module.  On a GPU where onnxruntime has its CUDA provider,
``make_engine`` times both engines on the model's own batches and keeps the faster
(``_fastest``); without that provider torch runs (its CUDA path is the one the renderer already
exercises), sending the uint8 pixels through a pinned buffer while the decode workers prepare
the next batch.  A
model onnxruntime cannot take in one piece (over protobuf's 2 GB) falls back to torch.
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


def _fill(out: np.ndarray, v: np.ndarray, pos: int = 0) -> np.ndarray:
    """Rows where the unit has one value per image (vectors, neurons)."""
    out["max"] = out["min"] = out["mean"] = v
    out["amax"] = out["amin"] = pos
    return out


def _neuron_xy(m: Measure, h: int, w: int) -> tuple[int, int]:
    return (w // 2 if m.x is None else m.x), (h // 2 if m.y is None else m.y)


def reduce_numpy(a: np.ndarray, m: Measure, dtype: np.dtype) -> np.ndarray:
    """Rows of a batch of maps (B, C, H, W) or vectors (B, C), on the CPU (numpy is
    single-threaded, so it never waits on threads the image decoders keep busy)."""
    out = np.zeros(a.shape[0], dtype)
    if a.ndim == 2:
        return _fill(out, a)
    if m.kind == "neuron":
        x, y = _neuron_xy(m, a.shape[2], a.shape[3])
        return _fill(out, a[:, :, y, x], y * a.shape[3] + x)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    amax, amin = flat.argmax(-1), flat.argmin(-1)
    out["amax"], out["amin"] = amax, amin
    out["max"] = np.take_along_axis(flat, amax[..., None], -1)[..., 0]
    out["min"] = np.take_along_axis(flat, amin[..., None], -1)[..., 0]
    out["mean"] = flat.mean(-1, dtype=np.float64)
    return out


def reduce_torch(a: torch.Tensor, m: Measure, dtype: np.dtype) -> np.ndarray:
    """``reduce_numpy`` on the device the maps are on (a GPU), so only the rows leave it."""
    if a.device.type == "cpu":
        return reduce_numpy(a.float().numpy(), m, dtype)
    a = a.float()
    out = np.zeros(a.shape[0], dtype)
    if a.dim() == 2:
        return _fill(out, a.cpu().numpy())
    if m.kind == "neuron":
        x, y = _neuron_xy(m, a.shape[2], a.shape[3])
        return _fill(out, a[:, :, y, x].cpu().numpy(), y * a.shape[3] + x)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    (mx, amx), (mn, amn) = flat.max(-1), flat.min(-1)
    out["max"], out["amax"] = mx.cpu().numpy(), amx.cpu().numpy()
    out["min"], out["amin"] = mn.cpu().numpy(), amn.cpu().numpy()
    out["mean"] = flat.mean(-1).cpu().numpy()
    return out


class Engine:
    """Runs batches of uint8 (B, H, W, 3) images; ``run`` returns ``{layer: rows}``.

    Preprocessing: ``prepare_input`` is probed once as a per-pixel affine map (as the renderer
    does, ``render._affine_preprocessing``, which checks the probe) and applied in one pass on
    the uint8 pixels; a preprocessing that is not affine goes through ``prepare_input`` itself.
    """

    name = ""

    def __init__(self, model: LoadedModel, layers: Sequence[str], measure: Measure,
                 pre: Preprocessing, device: torch.device) -> None:  # fmt: skip
        from fvdesk.core.optim.render import _affine_preprocessing

        self.model, self.layers, self.measure, self.pre = model, list(layers), measure, pre
        self.device = device
        self.dtypes = {}
        for name in self.layers:
            lay = model.graph[name]
            grid = (lay.spatial[0] * lay.spatial[1]) if lay.spatial else 1
            self.dtypes[name] = row_dtype(lay.channels, max(grid, 1))
        aff = _affine_preprocessing(model, 3, torch.device("cpu"), pre)
        self.affine = None if aff is None else (aff[0].numpy() / 255.0, aff[1].numpy())
        self.nhwc = model.input.layout == "NHWC"
        #: the largest batch ``run`` takes (``None``: any); the pass never hands it more
        self.max_batch: int | None = model.input.max_batch

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) -> the graph's image input (float32, NCHW or NHWC)."""
        if self.affine is None:
            with torch.inference_mode():
                x01 = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2) / 255.0
                return self.model.prepare_input(x01.float(), self.pre).numpy()
        m, b = self.affine  # (C_out, 3) per unit of uint8, (C_out,)
        if m.shape[0] == 3 and not (m - np.diag(np.diagonal(m))).any():
            # the uint8 pixels moved to the graph's layout first (a byte each), then one multiply
            # and one add in float32: the same operations per value as the arithmetic in NHWC
            # followed by a float transpose, so the same bits, at a tenth of the cost
            scale, shift = np.diagonal(m).astype(np.float32), b.astype(np.float32)
            if not self.nhwc:
                images = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))
                scale, shift = scale[:, None, None], shift[:, None, None]
            y = np.multiply(images, scale, dtype=np.float32)
            y += shift
            return y
        y = b.astype(np.float32) + sum(
            images[..., c : c + 1] * m[:, c].astype(np.float32) for c in range(3)
        )
        y = y.astype(np.float32, copy=False)
        return y if self.nhwc else np.ascontiguousarray(y.transpose(0, 3, 1, 2))

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
            if self.device.type == "cpu" or self.affine is None:
                x = torch.from_numpy(self.inputs(images)).to(self.device)
            else:  # on a GPU: send the uint8 pixels and prepare them there
                u8 = self._to_device(images)
                m, b = (torch.from_numpy(v).float().to(self.device) for v in self.affine)
                x = torch.einsum("bhwc,oc->bhwo", u8.float(), m) + b
                x = x if self.nhwc else x.permute(0, 3, 1, 2).contiguous()
            acts = self.ext(x)
            return {k: reduce_torch(acts[k], self.measure, self.dtypes[k]) for k in self.layers}

    _pinned: torch.Tensor | None = None

    def _to_device(self, images: np.ndarray) -> torch.Tensor:
        """The uint8 batch on the GPU through a reused page-locked buffer (a DMA copy that needs
        no staging; the rows' ``.cpu()`` waits for it, so the buffer is free again for the next
        batch, which the decode workers meanwhile prepared)."""
        src = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type != "cuda":
            return src.to(self.device)
        if self._pinned is None or self._pinned.numel() < src.numel():
            self._pinned = torch.empty(src.numel(), dtype=torch.uint8).pin_memory()
        buf = self._pinned[: src.numel()].view(src.shape)
        buf.copy_(src)
        return buf.to(self.device, non_blocking=True)


class OrtEngine(Engine):
    """onnxruntime on the pruned graph.  A feature map measured per channel is reduced inside the
    graph (ReduceMax/ArgMax/ReduceMin/ArgMin/ReduceMean over its grid, first index on ties as
    numpy), so onnxruntime's threads do it and only ``units`` numbers per image come out."""

    name = "onnxruntime"

    def __init__(self, *args: Any, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        g = self.model.graph
        self.reduced = {
            n for n in self.layers if g[n].kind == "feature" and self.measure.kind == "channel"
        }
        proto = truncated_onnx(self.model.onnx_model, [g[n].output for n in self.layers])
        self.outputs: dict[str, list[str]] = {}
        for n in self.layers:
            if n in self.reduced:
                self.outputs[n] = _append_reductions(proto, g[n].output, g[n].layout == "NHWC")
            else:
                self.outputs[n] = [g[n].output]
        self.feeds = {}
        inputs = list(self.model.onnx_model.graph.input)
        for i, vi in enumerate(inputs):
            if i != self.model.input.index:
                self.feeds[vi.name] = self.model.extra_inputs[f"input_{i + 1}"].cpu().numpy()
        self.session = self._batch_session(proto, threads)

    def _batch_session(self, proto: Any, threads: int | None) -> Any:
        """A session taking batches: a graph exported with a fixed batch (``torch.onnx.export``
        without ``dynamic_axes`` writes 1) gets a symbolic batch dimension when the graph then
        computes each image of a batch of 2 as it does alone; when it does not (a reshape that
        bakes the batch in), the declared batch stays and becomes ``max_batch``."""
        fixed = _fixed_batch(proto, self.model.input.name)
        if fixed is None or (self.max_batch is not None and self.max_batch <= fixed):
            return ort_session(self.model, proto, self.device, threads=threads)
        loose = type(proto)()
        loose.CopyFrom(proto)
        _symbolic_batch(loose, self.model.input.name)
        try:
            self.session = ort_session(self.model, loose, self.device, threads=threads)
            if self._runs_per_image(fixed + 1):
                return self.session
        except Exception:  # noqa: BLE001 - onnxruntime refusing the batch: keep the declared one
            pass
        self.max_batch = fixed
        return ort_session(self.model, proto, self.device, threads=threads)

    def _runs_per_image(self, n: int) -> bool:
        """Whether a batch of ``n`` distinct images gives each image's rows alone."""
        h, w = int(self.model.input.height), int(self.model.input.width)
        images = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        together = self.run(images)
        alone = [self.run(images[i : i + 1]) for i in range(n)]
        for name, rows in together.items():
            if rows.shape != (n,):
                return False
            for f in ("max", "min", "mean"):
                one = np.concatenate([a[name][f] for a in alone]).astype(np.float64)
                got = rows[f].astype(np.float64)
                if not np.allclose(got, one, rtol=1e-2, atol=1e-3 * (1 + np.abs(one).max())):
                    return False
        return True

    def _unit_layout(self, name: str, a: np.ndarray) -> np.ndarray:
        """A raw graph output as the torch engine's extractor hands it out (NHWC maps as NCHW,
        token sequences as the patch map, ``name#k`` as extra token k)."""
        from fvdesk.core.model.loaded import to_unit_layout

        lay = self.model.graph[name]
        if lay.layout != "NHWC" and lay.kind != "tokens":
            return a
        found = self.model.graph.resolve(name)
        token = found[1] if found is not None else None
        gh, gw = lay.grid or (0, 0)
        x = to_unit_layout(torch.from_numpy(a), lay.layout, lay.extra_tokens, gh, gw, token)
        return x.numpy()

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {**self.feeds, self.model.input.name: self.inputs(images)}
        names = [t for n in self.layers for t in self.outputs[n]]
        got = dict(zip(names, self.session.run(names, feeds), strict=True))
        result = {}
        for name in self.layers:
            outs = [got[t] for t in self.outputs[name]]
            if name in self.reduced:
                rows = np.zeros(outs[0].shape[0], self.dtypes[name])
                for field_name, a in zip(_FIELDS, outs, strict=True):
                    rows[field_name] = a
                result[name] = rows
                continue
            result[name] = reduce_numpy(self._unit_layout(name, outs[0]), self.measure,
                                        self.dtypes[name])  # fmt: skip
        return result


_FIELDS = ("max", "amax", "min", "amin", "mean")
_BATCH = "fvdesk_batch"


def _fixed_batch(proto: Any, image: str) -> int | None:
    """The batch the image input declares (``None``: symbolic or undeclared)."""
    for vi in proto.graph.input:
        if vi.name == image:
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value"):
                return int(dims[0].dim_value)
    return None


def _symbolic_batch(proto: Any, image: str) -> None:
    """Declare the first dimension of the image input and of every output symbolic; intermediate
    shapes are dropped (onnxruntime infers them again from the input)."""
    g = proto.graph
    del g.value_info[:]
    for vi in [*(v for v in g.input if v.name == image), *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and t.shape.dim:
            t.shape.dim[0].Clear()
            t.shape.dim[0].dim_param = _BATCH


def _append_reductions(proto: Any, tensor: str, nhwc: bool) -> list[str]:
    """Nodes computing ``tensor``'s rows over its grid; returns their output names (``_FIELDS``)."""
    import onnx
    from onnx import helper

    g = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    base = f"fvdesk_rows/{tensor}"
    src = tensor
    if nhwc:
        g.node.append(helper.make_node("Transpose", [src], [base + "/nchw"], perm=[0, 3, 1, 2]))
        src = base + "/nchw"
    shape = base + "/shape"
    g.initializer.append(helper.make_tensor(shape, onnx.TensorProto.INT64, [3], [0, 0, -1]))
    flat = base + "/flat"
    g.node.append(helper.make_node("Reshape", [src, shape], [flat]))
    names = [f"{base}/{f}" for f in _FIELDS]
    axes = base + "/axes"
    g.initializer.append(helper.make_tensor(axes, onnx.TensorProto.INT64, [1], [2]))
    if opset >= 10:
        # TopK(k=1) gives the extreme and its (first, as numpy's) index in one pass over the
        # map, where ReduceMax + ArgMax take two: 10 % faster on the demo model's pass.
        k = base + "/k"
        g.initializer.append(helper.make_tensor(k, onnx.TensorProto.INT64, [1], [1]))
        for largest, (value, index) in ((1, names[:2]), (0, names[2:4])):
            g.node.append(helper.make_node("TopK", [flat, k], [value + "/k", index + "/k"],
                                           axis=2, largest=largest, sorted=1))  # fmt: skip
            for t in (value, index):
                if opset >= 13:
                    g.node.append(helper.make_node("Squeeze", [t + "/k", axes], [t]))
                else:
                    g.node.append(helper.make_node("Squeeze", [t + "/k"], [t], axes=[2]))
    else:
        for op, out in zip(("ReduceMax", "ArgMax", "ReduceMin", "ArgMin"), names, strict=False):
            kw: dict[str, Any] = {"axis": 2} if op.startswith("Arg") else {"axes": [2]}
            g.node.append(helper.make_node(op, [flat], [out], keepdims=0, **kw))
    if opset >= 18:
        g.node.append(helper.make_node("ReduceMean", [flat, axes], [names[4]], keepdims=0))
    else:
        g.node.append(helper.make_node("ReduceMean", [flat], [names[4]], axes=[2], keepdims=0))
    g.output.extend(helper.make_value_info(n, onnx.TypeProto()) for n in names)
    return names


def truncated_onnx(onnx_model: Any, outputs: Sequence[str]) -> Any:
    """A copy of the graph computing only ``outputs`` (which become its outputs)."""
    from fvdesk.core.model.cut import sub_model

    g = onnx_model.graph
    need = set(outputs)
    kept = []
    for node in reversed(g.node):
        if any(o in need for o in node.output):
            kept.append(node)
            need.update(t for t in node.input if t)
    kept.reverse()
    return sub_model(onnx_model, kept, outputs, keep=need)


def ort_session(model: LoadedModel, graph: Any, device: torch.device,
                *, threads: int | None = None) -> Any:  # fmt: skip
    """An onnxruntime session of ``graph`` (a ``ModelProto``; ``None``: the model's whole
    canonical graph), with the CUDA provider first when ``device`` is a GPU and onnxruntime has
    it."""
    import onnxruntime as ort

    proto = model.onnx_model if graph is None else graph
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads or torch.get_num_threads()
    # no busy-waiting between runs: the image decoders need those cores meanwhile
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    return ort.InferenceSession(proto.SerializeToString(), so, providers=providers)


def pick_engine(name: str, device: torch.device) -> str:
    """``auto`` -> the measured choice for ``device`` (see the module docstring)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    if name != "auto":
        return name
    return "onnxruntime" if device.type == "cpu" else "torch"


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a dependency, but keep the torch path alive
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _fastest(model: LoadedModel, layers: Sequence[str], measure: Measure, pre: Preprocessing,
             device: torch.device, batch: int = 32, rounds: int = 3) -> Engine:  # fmt: skip
    """On a GPU with both engines, the one that runs this model's batches faster (measured on
    random pixels after a warm-up, best of ``rounds``); the other is dropped.  Unmeasured on
    real GPUs so far (benchmarks/README.md)."""
    import time

    engines: list[Engine] = [TorchEngine(model, layers, measure, pre, device)]
    try:
        engines.append(OrtEngine(model, layers, measure, pre, device))
    except Exception:  # noqa: BLE001 - onnxruntime refusing the model: torch it is
        return engines[0]
    h, w = int(model.input.height), int(model.input.width)
    best: tuple[float, Engine] | None = None
    for e in engines:
        n = max(1, min(batch, e.max_batch or batch))
        px = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        e.run(px)  # warm-up: kernels picked, memory allocated
        t = min(_timed(e, px, time.perf_counter) for _ in range(rounds)) / n
        best = (t, e) if best is None or t < best[0] else best
    assert best is not None
    return best[1]


def _timed(e: Engine, px: np.ndarray, clock: Any) -> float:
    t0 = clock()
    e.run(px)  # returns numpy rows: the GPU has finished
    return clock() - t0


def make_engine(model: LoadedModel, layers: Sequence[str], measure: Measure, pre: Preprocessing,
                device: torch.device, name: str = "auto") -> Engine:  # fmt: skip
    """The engine ``name`` (after ``pick_engine``); onnxruntime falls back to torch when it
    cannot take the model (e.g. a graph over protobuf's 2 GB)."""
    chosen = pick_engine(name, device)
    if name == "auto" and device.type == "cuda" and _ort_cuda():
        return _fastest(model, layers, measure, pre, device)
    if chosen == "onnxruntime":
        try:
            return OrtEngine(model, layers, measure, pre, device)
        except Exception:  # noqa: BLE001 - any onnxruntime refusal: the torch engine still works
            if name == "onnxruntime":
                raise
    return TorchEngine(model, layers, measure, pre, device)
