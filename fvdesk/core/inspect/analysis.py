"""What the model computes on one image: prediction, a layer's activations, attribution, neuron
groups and the activation grid (Olah et al., "The Building Blocks of Interpretability", 2018).

Everything runs the model's converted graph through ``LoadedModel.extractor`` on the image as
``LoadedModel.prepare_input`` prepares it (the preprocessing a job captured), on the model's
device, and hands back the numpy results of ``fvdesk.core.inspect.results``.  Deterministic: the
runners recompute these when a saved record is reproduced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fvdesk.core.errors import RenderError
from fvdesk.core.inspect.image import InspectedImage
from fvdesk.core.inspect.results import (
    ActivationGrid,
    Attribution,
    ClassScore,
    LayerActivations,
    NeuronGroups,
    Prediction,
)
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing

#: The grey image integrated gradients start from (in [0, 1]; the preprocessing's zero is not
#: known for every model, mid-grey is).
BASELINE = 0.5
_UNIT = re.compile(r"^(?P<layer>.+):(?P<unit>\d+)(?:@(?P<x>\d+),(?P<y>\d+))?$")


def image_tensor(model: LoadedModel, image: InspectedImage) -> torch.Tensor:
    """The image as (1, 3, H, W) in [0, 1] on the model's device."""
    return torch.from_numpy(image.x01()).to(model.device)


def activations(model: LoadedModel, x01: torch.Tensor, layers: Sequence[str],
                pre: Preprocessing | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """``{layer: activation}`` of images ``x01`` (N, 3, H, W) in [0, 1] (differentiable when
    gradients are enabled)."""
    ext = model.extractor(list(dict.fromkeys(layers)))
    return ext(model.prepare_input(x01, pre))


def _first(model: LoadedModel, image: InspectedImage, layer: str,
           pre: Preprocessing | None) -> torch.Tensor:  # fmt: skip
    with torch.no_grad():
        a = activations(model, image_tensor(model, image), [layer], pre)[layer]
    return a[0].detach().float().cpu()


def predict(model: LoadedModel, image: InspectedImage, *, pre: Preprocessing | None = None,
            labels: Sequence[str] | None = None, k: int = 5) -> Prediction | None:  # fmt: skip
    """The top ``k`` classes of the classifier output, or ``None`` when the model has none."""
    lay = model.graph.logits
    if lay is None:
        return None
    z = _first(model, image, lay.name, pre).flatten().double()
    p = torch.softmax(z, 0)
    order = torch.argsort(-z, stable=True)[:k].tolist()
    names = list(labels) if labels else model.labels
    out = []
    for c in order:
        lab = names[c] if names and c < len(names) else None
        out.append(ClassScore(int(c), lab, float(p[c]), float(z[c])))
    return Prediction(lay.name, out)


def _labels(model: LoadedModel, layer: str, n: int, labels: Sequence[str] | None) -> list | None:
    chosen = list(labels) if labels else model.labels
    names = [model.graph.unit_label(layer, u, chosen) for u in range(n)]
    return names if any(names) else None


def layer_activations(model: LoadedModel, image: InspectedImage, layer: str, *,
                      pre: Preprocessing | None = None,
                      labels: Sequence[str] | None = None) -> LayerActivations:  # fmt: skip
    """The layer's units on the image, sorted by their spatial maximum (vector layers: value)."""
    lay = model.graph[layer]
    a = _first(model, image, layer, pre)
    if a.dim() == 1:
        values, maps = a.numpy().astype(np.float32), None
    elif a.dim() == 3:
        maps = a.numpy().astype(np.float32)
        values = maps.reshape(maps.shape[0], -1).max(1)
    else:
        raise RenderError(
            f"Layer {layer} has {a.dim()}-d activations; inspect a feature map or vector."
        )
    order = np.argsort(-values, kind="stable")
    kind = "vector" if maps is None else str(lay.kind)
    return LayerActivations(layer, kind, values, order, maps, image.size,
                            _labels(model, layer, len(values), labels))  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Attribution
# ------------------------------------------------------------------------------------------------
def resolve_target(model: LoadedModel, image: InspectedImage, target: str,
                   pre: Preprocessing | None = None) -> tuple[str, int, tuple[int, int] | None, str]:  # fmt: skip
    """``(layer, unit, (x, y) or None, caption)`` of an attribution target (``AttributionJob``)."""
    t = target.strip()
    if t == "top" or t.isdigit() or t.startswith("class:"):
        lay = model.graph.logits
        if lay is None:
            raise RenderError(
                f"{model.name} has no classifier output, so attribute to a unit (LAYER:UNIT)."
            )
        if t == "top":
            c = int(torch.argmax(_first(model, image, lay.name, pre).flatten()))
        else:
            c = int(t.removeprefix("class:"))
        if not 0 <= c < lay.channels:
            raise RenderError(f"Class {c} does not exist: {lay.name} has {lay.channels} classes.")
        name = model.labels[c] if model.labels and c < len(model.labels) else None
        return lay.name, c, None, f"class {c}" + (f" ({name})" if name else "")
    m = _UNIT.match(t)
    if not m:
        raise RenderError(f"Cannot read the attribution target {target!r}.")
    layer, unit = m["layer"], int(m["unit"])
    lay = model.graph[layer]
    if lay.channels and not 0 <= unit < lay.channels:
        raise RenderError(f"Unit {unit} does not exist: layer {layer} has {lay.channels} channels.")
    xy = None if m["x"] is None else (int(m["x"]), int(m["y"]))
    return layer, unit, xy, t


def _target_value(a: torch.Tensor, unit: int, xy: tuple[int, int] | None) -> torch.Tensor:
    """Per image: the unit's logit (vectors), its channel mean, or the neuron at ``xy``."""
    if a.dim() == 2:
        return a[:, unit]
    if xy is not None:
        return a[:, unit, xy[1], xy[0]]
    return a[:, unit].flatten(1).mean(1)


def attribute(model: LoadedModel, image: InspectedImage, target: str, to_layer: str, *,
              method: str = "gradient", steps: int = 32, pre: Preprocessing | None = None,
              chunk: int = 16) -> Attribution:  # fmt: skip
    """Attribution of ``target`` to ``to_layer``'s activations: activation x gradient (or
    integrated gradients over ``steps`` images from a grey baseline), summed over channels per
    position (the spatial map) and over positions per unit (the channel ranking)."""
    layer, unit, xy, caption = resolve_target(model, image, target, pre)
    if model.graph[layer].index <= model.graph[to_layer].index:
        raise RenderError(f"The attribution target {caption} must come after {to_layer}.")
    x = image_tensor(model, image)

    def grads(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the input needs a gradient even where the weights have none (a frozen model)
        acts = activations(model, batch.detach().requires_grad_(True), [to_layer, layer], pre)
        value = _target_value(acts[layer].float(), unit, xy)
        (g,) = torch.autograd.grad(value.sum(), acts[to_layer], allow_unused=True)
        if g is None:
            raise RenderError(
                f"{caption} does not depend on {to_layer} in the converted graph, so nothing "
                "can be attributed to it."
            )
        return acts[to_layer].detach().float(), g.detach().float()

    with torch.enable_grad():
        if method == "gradient":
            a, g = grads(x)
            contrib = (a * g)[0]
        else:
            base = torch.full_like(x, BASELINE)
            alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
            total = None
            for i in range(0, steps, chunk):
                al = alphas[i : i + chunk].view(-1, 1, 1, 1)
                _, g = grads(base + al * (x - base))
                s = g.sum(0)
                total = s if total is None else total + s
            a1, _ = grads(x)
            with torch.no_grad():
                a0 = activations(model, base, [to_layer], pre)[to_layer].float()
            contrib = ((a1 - a0) * (total / steps))[0]  # type: ignore[operator]  # steps >= 1: the loop set total
        with torch.no_grad():
            value = float(
                _target_value(activations(model, x, [layer], pre)[layer].float(), unit, xy)[0]
            )
    c = contrib.cpu().double()
    if c.dim() != 3:
        raise RenderError(
            f"Layer {to_layer} has no spatial grid, so a spatial attribution is moot."
        )
    spatial = c.sum(0).numpy().astype(np.float32)
    channels = c.flatten(1).sum(1).numpy().astype(np.float32)
    return Attribution(caption, to_layer, method, steps if method != "gradient" else 1,
                       spatial, channels, image.size, value)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Neuron groups and the activation grid
# ------------------------------------------------------------------------------------------------
def _grid(model: LoadedModel, image: InspectedImage, layer: str,
          pre: Preprocessing | None) -> torch.Tensor:  # fmt: skip
    a = _first(model, image, layer, pre)
    if a.dim() != 3:
        raise RenderError(f"Layer {layer} has no spatial grid on the image.")
    return a


def neuron_groups(model: LoadedModel, image: InspectedImage, layer: str, k: int, *,
                  seed: int = 0, pre: Preprocessing | None = None) -> NeuronGroups:  # fmt: skip
    """scikit-learn's NMF of the (positions x channels) activations (negative values clipped)
    into ``k`` groups; factors are unit vectors, the maps carry the scale."""
    import warnings

    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    a = _grid(model, image, layer, pre).double().clamp_min(0)
    c, h, w = a.shape
    mat = a.reshape(c, h * w).T.numpy()
    if not np.any(mat > 0):
        raise RenderError(f"Layer {layer} is all zeros on the image, so it has no groups.")
    # SVD-based start (deterministic) where it is defined; a seeded random one for more groups
    # than positions or channels
    init = "nndsvda" if k <= min(mat.shape) else "random"
    nmf = NMF(n_components=k, init=init, random_state=int(seed), max_iter=1000, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        wmat = nmf.fit_transform(mat)
    hmat = nmf.components_
    norms = np.linalg.norm(hmat, axis=1)
    norms[norms == 0] = 1.0
    factors = hmat / norms[:, None]
    maps = (wmat * norms[None, :]).T.reshape(k, h, w)
    err = float(np.linalg.norm(mat - wmat @ hmat) / np.linalg.norm(mat))
    return NeuronGroups(layer, factors.astype(np.float32), maps.astype(np.float32), err, image.size)


def activation_grid(model: LoadedModel, image: InspectedImage, layer: str, *,
                    threshold: float = 0.1, pre: Preprocessing | None = None) -> ActivationGrid:  # fmt: skip
    """The activation vector of every grid cell; cells under ``threshold`` x the largest norm
    are blank."""
    a = _grid(model, image, layer, pre)
    vec = a.permute(1, 2, 0).numpy().astype(np.float32)
    norms = np.linalg.norm(vec, axis=2)
    top = float(norms.max(initial=0.0))
    blank = norms <= threshold * top if top > 0 else np.ones_like(norms, dtype=bool)
    k = min(3, vec.shape[2])
    top_units = np.argsort(-vec, axis=2, kind="stable")[:, :, :k]
    return ActivationGrid(layer, vec, norms, blank, top_units, float(threshold))


def cell_direction(grid: ActivationGrid, x: int, y: int) -> np.ndarray:
    """The cell's vector as a unit direction (what the grid renders)."""
    v = grid.vectors[y, x].astype(np.float64)
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


def model_summary(model: LoadedModel) -> dict[str, Any]:
    """The model facts an inspection report names."""
    return {"file": model.name, "sha256": model.sha256, "input": model.input.describe_size()}


__all__ = [
    "BASELINE",
    "activation_grid",
    "activations",
    "attribute",
    "cell_direction",
    "image_tensor",
    "layer_activations",
    "neuron_groups",
    "predict",
    "resolve_target",
]
