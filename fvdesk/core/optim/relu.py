"""Lucid's redirected ReLU gradient: the remedy for a dead unit's zero gradient on the start
image, applied per image through a copy of the extractor whose ReLUs take a ``redirect`` mask."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import fx, nn


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient is redirected for chosen images that it would block entirely (Lucid).

    For an image in ``redirect`` whose plain ReLU gradient is zero everywhere, the incoming
    gradient passes through except where it would push an input further out of the active
    range (a negative input lower, or for ReLU6 an input above 6 higher).  Other
    images get the plain gradient, so a live image renders the same whatever shares its batch.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, redirect: torch.Tensor, upper: float | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, redirect)
        ctx.upper = upper
        return x.clamp(min=0.0, max=upper)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]  # autograd.Function's backward takes *grad_outputs
        x, redirect = ctx.saved_tensors
        passes = x > 0
        if ctx.upper is not None:
            passes = passes & (x < ctx.upper)
        plain = torch.where(passes, g, torch.zeros_like(g))
        if g.dim() < 2 or not bool(redirect.any()):
            return plain, None, None
        # pass the gradient, except where descent would push an input further out of the
        # active range: below 0 (g > 0 lowers it) or, for ReLU6, above 6 (g < 0 raises it)
        away = (x < 0) & (g > 0)
        if ctx.upper is not None:
            away = away | ((x > ctx.upper) & (g < 0))
        redirected = torch.where(away, torch.zeros_like(g), g)
        blocked = (plain.flatten(1).abs().amax(1) == 0) & redirect
        blocked = blocked.view(-1, *([1] * (g.dim() - 1)))
        return torch.where(blocked, redirected, plain), None, None


def redirected_relu(x: torch.Tensor, redirect: torch.Tensor) -> torch.Tensor:
    """ReLU with the gradient redirected for the images where ``redirect`` (bool [B]) is set."""
    return _RedirectedReLU.apply(x, redirect, None)


def redirected_relu6(x: torch.Tensor, redirect: torch.Tensor) -> torch.Tensor:
    return _RedirectedReLU.apply(x, redirect, 6.0)


_OVERRIDDEN: weakref.WeakKeyDictionary[nn.Module, fx.GraphModule | None] = (
    weakref.WeakKeyDictionary()
)


def relu_override(ext: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of the extractor whose ``nn.ReLU``/``nn.ReLU6`` nodes redirect gradients:
    ``forward(x, redirect)`` with ``redirect`` a bool tensor [B] choosing the images.  Same
    weights; ``None`` when the extractor has no ReLU.  Cached per extractor."""
    if ext in _OVERRIDDEN:
        return _OVERRIDDEN[ext]
    mods = dict(ext.named_modules())
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    redirect: fx.Node | None = None
    replaced = 0
    for n in ext.graph.nodes:
        if n.op != "placeholder" and redirect is None:
            redirect = g.placeholder("redirect")
        m = mods.get(n.target) if n.op == "call_module" else None
        if isinstance(m, (nn.ReLU, nn.ReLU6)) and len(n.args) == 1 and not n.kwargs:
            fn = redirected_relu6 if isinstance(m, nn.ReLU6) else redirected_relu
            env[n] = g.call_function(fn, (env[n.args[0]], redirect))
            replaced += 1
        else:
            env[n] = g.node_copy(n, lambda a: env[a])
    gm = fx.GraphModule(ext, g, class_name="FvdeskReluOverride") if replaced else None
    if gm is not None:
        gm.eval()
    _OVERRIDDEN[ext] = gm
    return gm
