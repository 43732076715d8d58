"""``load_generator``: an ONNX generator (latent -> image), the learned prior of a render.

A generator is loaded the way a model is (the same reading, graph repair, operator check and
onnx2torch conversion as ``load_model``), then checked for the one shape fvdesk can optimize
through: exactly one float latent input, ``N x Z`` or ``N x Z x 1 x 1``, and an image output,
``N x C x H x W`` or ``N x H x W x C`` with 1 or 3 channels.  Anything else is one
``FvdeskError`` sentence naming the file and what is wrong.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx

from fvdesk.core.errors import FvdeskError, ModelLoadError, UnsupportedModelError
from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model import cut as cutlib
from fvdesk.core.model.loading.context import LoadContext, cause
from fvdesk.core.model.loading.convert import convert, nothing_convertible
from fvdesk.core.model.loading.inputs import describe_input
from fvdesk.core.model.loading.read import read_model

_FLOAT = {1, 10, 11, 16}  # float32, float16, float64, bfloat16


@dataclass
class Generator:
    """A converted generator: ``image(z)`` maps latents (B, *latent_shape) to NCHW images."""

    path: Path
    sha256: str
    module: fx.GraphModule
    latent_shape: tuple[int, ...]  # without the batch dimension: (Z,) or (Z, 1, 1)
    layout: str  # NCHW or NHWC (of the output)
    channels: int
    height: int
    width: int
    max_batch: int | None  # None: any batch; 1: one latent per call

    @property
    def name(self) -> str:
        return self.path.name

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """Raw generator output as NCHW (the generator's own value range)."""
        if self.max_batch == 1 and z.shape[0] > 1:
            return torch.cat([self.image(z[i : i + 1]) for i in range(z.shape[0])])
        out = self.module(z)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.permute(0, 3, 1, 2) if self.layout == "NHWC" else out

    def to(self, device: torch.device | str) -> Generator:
        self.module.to(device)
        return self

    def describe(self) -> str:
        z = "x".join(map(str, self.latent_shape))
        return f"{self.name}: latent {z} -> {self.channels}x{self.height}x{self.width} image"


def load_generator(path: str | os.PathLike[str]) -> Generator:
    """Load, repair, convert and check a generator file (on the CPU)."""
    p = Path(path)
    ld = LoadContext(p, None)
    try:
        return _load(ld)
    except FvdeskError:
        raise
    except MemoryError:
        raise ModelLoadError(f"{p} is too large to load into memory.") from None
    except Exception as e:  # noqa: BLE001 - one FvdeskError sentence, never a traceback
        raise ModelLoadError(f"{p} could not be loaded as a generator while {ld.phase}: {cause(e)}.") from e  # fmt: skip


def _load(ld: LoadContext) -> Generator:
    p = ld.path
    model, sha = read_model(ld)
    ld.phase = "repairing the graph"
    report = canon.Report()
    canon.name_nodes(model, report)
    canon.check_and_sort(model, str(p), report)
    model = canon.canonicalize(model, where=str(p), report=report)
    inputs = list(model.graph.input)
    latent = _latent_shape(inputs)
    if latent is None:
        listed = ", ".join(describe_input(vi) for vi in inputs) or "none"
        raise UnsupportedModelError(
            f"{p} is not a generator fvdesk can use: it needs exactly one float latent input "
            f"(N x Z or N x Z x 1 x 1), and its inputs are {listed}."
        )
    ld.phase = "checking the operators"
    bad = cutlib.blockers(model)
    if bad:  # a generator is used whole: no partial conversion
        raise nothing_convertible(str(p), bad)
    ld.phase = "converting to torch"
    module = convert(ld, model)
    ld.phase = "probing the generator"
    out, max_batch = _probe(module, latent, p)
    layout, c, h, w = _image_layout(out, p)
    return Generator(p, sha, module, latent, layout, c, h, w, max_batch)


def _latent_shape(inputs: list[Any]) -> tuple[int, ...] | None:
    if len(inputs) != 1 or not inputs[0].type.HasField("tensor_type"):
        return None
    t = inputs[0].type.tensor_type
    if t.elem_type not in _FLOAT or not t.HasField("shape"):
        return None
    dims = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim
    ]
    if len(dims) == 2 and dims[1]:
        return (int(dims[1]),)
    if len(dims) == 4 and dims[1] and dims[2] == 1 and dims[3] == 1:
        return (int(dims[1]), 1, 1)
    return None


@torch.no_grad()
def _probe(module: fx.GraphModule, latent: tuple[int, ...], p: Path) -> tuple[Any, int | None]:
    g = torch.Generator().manual_seed(0)
    error: Exception | None = None
    for batch in (2, 1):
        z = torch.randn((batch, *latent), generator=g)
        try:
            out = module(z)
        except Exception as e:  # noqa: BLE001 - reported below if batch 1 fails too
            error = e
            continue
        out = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(out, torch.Tensor) and out.shape[0] == batch:
            return out, (None if batch == 2 else 1)
    why = cause(error) if error is not None else "its output has no batch dimension"
    raise ModelLoadError(f"{p} does not run on a latent of shape N x {'x'.join(map(str, latent))}: {why}.")  # fmt: skip


def _image_layout(out: Any, p: Path) -> tuple[str, int, int, int]:
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
    if isinstance(out, torch.Tensor) and out.is_floating_point() and len(shape) == 4:
        _, a, b, c = shape
        if a in (1, 3) and min(b, c) >= 8:
            return "NCHW", a, b, c
        if c in (1, 3) and min(a, b) >= 8:
            return "NHWC", c, a, b
    raise UnsupportedModelError(
        f"{p} is not a generator fvdesk can use: its output {shape or type(out).__name__} is not "
        "an image (N x C x H x W or N x H x W x C with 1 or 3 channels, at least 8 px)."
    )


_CACHE: dict[tuple[str, float, int], Generator] = {}
_LOCK = threading.Lock()


def generator_for(path: str | os.PathLike[str]) -> Generator:
    """``load_generator`` with the last file kept in memory (renders reuse it step after step)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise ModelLoadError(f"{p} does not exist, so there is no learned prior to use.") from None
    key = (str(p.resolve()), st.st_mtime, st.st_size)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    gen = load_generator(p)
    with _LOCK:
        _CACHE.clear()
        _CACHE[key] = gen
    return gen


__all__ = ["Generator", "generator_for", "load_generator"]
