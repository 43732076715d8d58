"""Parity: the torch module against onnxruntime (CPU) on a seeded input, on the outputs and a
mid-depth feature map, so a conversion that computes something else is said, not hidden."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model import precision
from fvdesk.core.model.loaded import LoadedModel, Parity
from fvdesk.core.model.loading.context import PARITY_SEED, LoadContext, cause

PARITY_TOLERANCE = 1e-4


def check_parity(
    ctx: LoadContext, loaded: LoadedModel, *, tolerance: float, half_graph: Any = None
) -> None:
    """Set ``loaded.parity``; a mismatch, or a graph onnxruntime rejects, becomes a warning.

    ``half_graph`` is the file's own float16/bfloat16 graph, the reference for a widened one (with
    the looser ``precision.HALF_TOLERANCE``)."""
    ctx.phase = "checking parity with onnxruntime"
    ctx.report(0.85, "Checking parity with onnxruntime")
    if half_graph is not None:
        tolerance = max(tolerance, precision.HALF_TOLERANCE)
    try:
        loaded.parity = compute_parity(loaded, tolerance=tolerance, reference=half_graph)
    except ReferenceRejected as e:
        ctx.warnings.append(
            f"onnxruntime rejects {ctx.path.name} ({e}), so parity could not be checked; "
            "the torch conversion may differ from what other runtimes compute."
        )
    if loaded.parity is not None and not loaded.parity.ok:
        ctx.warnings.append(
            f"{ctx.path.name}: the converted model differs from onnxruntime "
            f"({loaded.parity.describe()}); renders may not reflect the ONNX model exactly."
        )
    ctx.mark("parity")


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
                raise ReferenceRejected(cause(e)) from e
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


class ReferenceRejected(Exception):
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
