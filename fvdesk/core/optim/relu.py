"""Lucid's redirected ReLU gradient: the remedy for a dead unit's zero gradient on the start
image, applied per image through a copy of the extractor whose ReLUs (and ReLU6, Hardswish and
hard-sigmoid gates) take a ``redirect`` mask."""

from __future__ import annotations

import operator
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

#: The value a closed hard-sigmoid gate reads for an image whose gradients are redirected.
GATE_FLOOR = 0.1


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


def redirected_hardsigmoid(
    x: torch.Tensor, redirect: torch.Tensor, alpha: float = 1.0 / 6.0, beta: float = 0.5
) -> torch.Tensor:
    """``clip(alpha x + beta, 0, 1)`` with the gradient redirected as for ReLU6: the gates of
    squeeze-excitation blocks (MobileNetV3, PP-LCNet) are hard sigmoids, and a closed gate
    (0 everywhere) blocks its channel's gradient both ways, through the gate and the product.

    For the chosen images a closed gate also reads ``GATE_FLOOR`` (its gradient unchanged): a
    gate at 0 passes no gradient to the features it multiplies, and while they average below
    zero the gate's own gradient points to closing it, so only a slightly open gate lets the
    image grow features that open it.  Live images and the final scoring see the plain gate.
    """
    y = _RedirectedReLU.apply(x * alpha + beta, redirect, 1.0)
    if y.dim() < 1 or not bool(redirect.any()):
        return y
    chosen = redirect.view(-1, *([1] * (y.dim() - 1)))
    lift = torch.where(chosen & (y < GATE_FLOOR), GATE_FLOOR - y, torch.zeros_like(y))
    return y + lift.detach()


class _RedirectedHardswish(torch.autograd.Function):
    """Hardswish ``x relu6(x + 3) / 6`` whose gradient is redirected for chosen images it blocks
    entirely (every input at or below -3): there the gradient passes unless it would push the
    input further down.  Not a ReLU6 redirect: below -3 the product's own sign points the
    ReLU6's gradient down, so only passing the gradient to ``x`` itself revives the unit."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, redirect: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, redirect)
        return F.hardswish(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]  # autograd.Function's backward takes *grad_outputs
        x, redirect = ctx.saved_tensors
        plain = torch.ops.aten.hardswish_backward(g, x)
        if g.dim() < 2 or not bool(redirect.any()):
            return plain, None
        redirected = torch.where((x <= -3.0) & (g > 0), torch.zeros_like(g), g)
        blocked = (plain.flatten(1).abs().amax(1) == 0) & redirect
        blocked = blocked.view(-1, *([1] * (g.dim() - 1)))
        return torch.where(blocked, redirected, plain), None


def redirected_hardswish(x: torch.Tensor, redirect: torch.Tensor) -> torch.Tensor:
    """Hardswish with the gradient redirected for the images where ``redirect`` is set."""
    return _RedirectedHardswish.apply(x, redirect)


def _hard_sigmoid(m: nn.Module) -> tuple[float, float] | None:
    """(alpha, beta) of a hard-sigmoid module: torch's, or onnx2torch's ``HardSigmoid``."""
    if isinstance(m, nn.Hardsigmoid):
        return 1.0 / 6.0, 0.5
    a, b = getattr(m, "alpha", None), getattr(m, "beta", None)
    if "hardsigmoid" in type(m).__name__.lower() and isinstance(a, float) and isinstance(b, float):
        return a, b
    return None


def redirected_hardswish6(x: torch.Tensor, redirect: torch.Tensor) -> torch.Tensor:
    """``x relu6(x + 3)``: a Hardswish exported as Add, Clip, Mul, Div (PaddlePaddle), up to
    its Div."""
    return 6.0 * _RedirectedHardswish.apply(x, redirect)


def _binary(n: fx.Node, mods: dict[str, nn.Module], fns: tuple[Any, ...]) -> bool:
    """Whether ``n`` applies one of ``fns`` to two arguments (as a function or onnx2torch's
    binary-operation module)."""
    if len(n.args) != 2 or n.kwargs:
        return False
    if n.op == "call_function":
        return n.target in fns
    m = mods.get(n.target) if n.op == "call_module" else None  # type: ignore[arg-type]  # a call_module's target is a name
    return getattr(m, "math_op_function", None) in fns


def _constant(n: Any, ext: fx.GraphModule) -> float | None:
    if isinstance(n, (int, float)):
        return float(n)
    if isinstance(n, fx.Node) and n.op == "get_attr":
        t = ext
        for part in str(n.target).split("."):
            t = getattr(t, part, None)  # type: ignore[assignment]  # a module path ends at a tensor
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            return float(t)
    return None


def _hardswish_input(n: fx.Node, mods: dict[str, nn.Module], ext: fx.GraphModule) -> Any:
    """``a`` when ``n`` is ``a * relu6(a + 3)`` (a decomposed Hardswish), else ``None``."""
    if not _binary(n, mods, (torch.mul, operator.mul)):
        return None
    for a, r in (n.args, n.args[::-1]):
        m = mods.get(r.target) if isinstance(r, fx.Node) and r.op == "call_module" else None  # type: ignore[arg-type]  # a call_module's target is a name
        if not isinstance(m, nn.ReLU6) or len(r.args) != 1:  # type: ignore[union-attr]  # r is a Node: m is a module
            continue
        add = r.args[0]  # type: ignore[union-attr]  # r is a Node: m is a module
        if isinstance(add, fx.Node) and _binary(add, mods, (torch.add, operator.add)):
            x, c = add.args if add.args[0] is a else add.args[::-1]
            if x is a and _constant(c, ext) == 3.0:
                return a
    return None


_OVERRIDDEN: weakref.WeakKeyDictionary[nn.Module, fx.GraphModule | None] = (
    weakref.WeakKeyDictionary()
)


def relu_override(ext: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of the extractor whose ReLU, ReLU6, hard-sigmoid and Hardswish nodes redirect
    gradients:
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
        single = m is not None and len(n.args) == 1 and not n.kwargs
        hs = _hard_sigmoid(m) if single else None  # type: ignore[arg-type]  # single: m is a module
        if single and isinstance(m, (nn.ReLU, nn.ReLU6)):
            fn = redirected_relu6 if isinstance(m, nn.ReLU6) else redirected_relu
            env[n] = g.call_function(fn, (env[n.args[0]], redirect))
            replaced += 1
        elif n.op in ("call_module", "call_function") and _hardswish_input(n, mods, ext):
            a = _hardswish_input(n, mods, ext)
            env[n] = g.call_function(redirected_hardswish6, (env[a], redirect))
            replaced += 1
        elif single and isinstance(m, nn.Hardswish):
            env[n] = g.call_function(redirected_hardswish, (env[n.args[0]], redirect))
            replaced += 1
        elif hs is not None:
            env[n] = g.call_function(redirected_hardsigmoid, (env[n.args[0]], redirect, *hs))
            replaced += 1
        else:
            env[n] = g.node_copy(n, lambda a: env[a])
    gm = fx.GraphModule(ext, g, class_name="FvdeskReluOverride") if replaced else None
    if gm is not None:
        gm.eval()
    _OVERRIDDEN[ext] = gm
    return gm
