"""The render loop: a plain generator (no Qt) that the GUI, the CLI and the tests all drive.

``render()`` optimizes a batch of images for one objective and yields ``StepEvent`` every step,
``PreviewEvent`` every ``preview_every`` steps (and at the end) and ``NoticeEvent`` for things the
user should know (dead units revived, batch halved after out-of-memory); its return value
(``StopIteration.value``, or ``result = yield from render(...)``) is the ``RenderResult``.
``render_units()`` renders many units of one layer in batches, one unit per image.

Per step: images from the parameterization (``param.py``) -> robustness transforms on the
model's device (``transforms.py``) -> the model's preprocessing (``LoadedModel.prepare_input``,
probed once as a per-pixel affine map and fused into the transform's sampling, so it costs one
pass) -> the extractor cut after the last target layer, weights frozen -> per-image objective
values -> fused Adam (or ``steepest.SteepestAscent``) on ``-sum(values)`` plus the penalties,
gradient transforms, image filters and octaves of ``regularizers.py``; the parameterization comes
from ``parameterizations.make_param`` (Fourier, pixels, MACO or a learned prior).  Speed is measured against
the floor (forward to the target + backward to the input) by ``benchmarks/bench_render.py``.
The saved image is the last one or, with ``settings.average``, the mean of the images after the
last steps (``_TailAverage``); its objective is the value reported, previews show the live image.

Dead units (zero activation and gradient on the near-grey start): a probe before step 1 finds
them; those images get Lucid's redirected ReLU gradient for ``relu_override_steps`` steps, then a
stronger random restart if still dead, and images whose objective gradient is still exactly zero
at the end are reported in ``RenderResult.dead`` / ``UnitResult.dead`` instead of passing as a
result.  The remedy is per image: live images render exactly as they would alone.

Reproducibility: every image has its own seed derived from ``settings.seed`` (and, in
``render_units``, the unit and facet); all random draws come from per-image CPU generators, so a
seed reproduces a render exactly on the same device (exactly on CPU; GPU kernels such as
``grid_sample``'s backward are not bit-deterministic) and an image does not depend on the other
images of its batch.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from fvdesk.core.device import describe_device, pick_device
from fvdesk.core.errors import RenderError
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim import regularizers as reg
from fvdesk.core.optim.drive import CancelFlag, cancel_fn
from fvdesk.core.optim.events import (
    Event,
    NoticeEvent,
    PreviewEvent,
    RenderResult,
    StepEvent,
)
from fvdesk.core.optim.jobs import Slot
from fvdesk.core.optim.param import images_uint8
from fvdesk.core.optim.parameterizations import make_param
from fvdesk.core.optim.schedule import EarlyStop, anneal_steps, learning_rate
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.steepest import make_optimizer
from fvdesk.core.optim.transforms import RobustnessTransform

#: Start-latent standard deviation used when a dead unit is restarted ("stronger random start").
RESTART_SD = 0.2


class _OutOfMemory(Exception):
    def __init__(self, batch: int, step: int) -> None:
        super().__init__(f"out of memory at batch {batch}, step {step}")
        self.batch, self.step = batch, step


# -- helpers ----------------------------------------------------------------------------------------
def image_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed for one image from the render seed and its keys (unit, facet...)."""
    ss = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, *[(int(k) + 1) & 0xFFFFFFFF for k in keys]]
    )
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


#: torch's words when a feature map has shrunk below a pooling or convolution window
_TOO_SMALL = (
    "output size is too small",
    "kernel size can't be greater than actual input size",
    "smaller than kernel size",
    "padding size should be less than the corresponding input dimension",
)


def _is_too_small(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in msg for w in _TOO_SMALL)


def _smallest_canvas(model: LoadedModel, start: int, device: torch.device) -> int | None:
    """The smallest canvas from ``start`` up to the model's own size at which the whole graph
    runs (one image, no gradient), so the refusal can say what to use; ``None`` if none does."""
    native = max(int(model.input.height), start)
    sizes = sorted({model.input.round_size(n) for n in (*range(start, native, 16), native)})
    for n in sizes:
        if n <= start:
            continue
        try:
            with torch.no_grad():
                model.forward(torch.full((1, model.input.channels, n, n), 0.5, device=device))
        except RuntimeError:
            continue
        return n
    return None


def _too_small_error(
    model: LoadedModel, settings: RenderSettings, device: torch.device
) -> RenderError:
    h, w = canvas_size(model, settings)
    least = _smallest_canvas(model, max(h, w), device)
    use = f"use a canvas of at least {least} px" if least else "use a larger canvas"
    return RenderError(
        f"{model.name} cannot run on a {w}x{h} canvas: its layers shrink it below a pooling or "
        f"convolution window; {use}."
    )


def _as_oom(e: Exception, batch: int) -> _OutOfMemory:
    """``e`` as an ``_OutOfMemory`` (raised anywhere in a render: setup, probe or step), else re-raise."""
    if isinstance(e, _OutOfMemory):
        return _OutOfMemory(e.batch, e.step)
    if _is_oom(e):
        return _OutOfMemory(batch, 0)
    raise e


def resolve_device(device: torch.device | str | None, settings: RenderSettings) -> torch.device:
    dev = device if isinstance(device, torch.device) else pick_device(device or settings.device)
    if dev.type == "cuda" and dev.index is None:  # compare equal to the model's cuda:N
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


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
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]  # autograd.Function's static signature
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


def canvas_size(model: LoadedModel, settings: RenderSettings) -> tuple[int, int]:
    """The canvas: ``settings.size`` or the model's size, rounded to the sizes a size-agnostic
    graph takes (``InputSpec.size_multiple``; the CLI refuses an explicit size that is off)."""
    if settings.size is not None:
        return model.input.round_view((settings.size, settings.size))
    return model.input.round_view((int(model.input.height), int(model.input.width)))


def _affine_preprocessing(
    model: LoadedModel, channels: int, device: torch.device, pre: Preprocessing | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``prepare_input`` as ``x -> M x + b`` per pixel (NCHW), measured by probing it.

    Every preset (range, mean/std, BGR, grayscale) is affine per pixel, so the renderer can fold
    it into the transform step (one pass instead of four); ``prepare_input`` stays the single
    definition.  ``None`` when the probe shows it is not affine (then it is called as is).
    """

    def nchw(y: torch.Tensor) -> torch.Tensor:
        return y.permute(0, 3, 1, 2) if model.input.layout == "NHWC" else y

    with torch.no_grad():
        eye = torch.eye(channels, device=device).view(channels, channels, 1, 1)
        probe = torch.cat([torch.zeros(1, channels, 1, 1, device=device), eye])
        out = nchw(model.prepare_input(probe, pre)).float()
        b = out[0, :, 0, 0]
        m = (out[1:, :, 0, 0] - b).T.contiguous()  # (C_out, C_in)
        check = torch.rand(2, channels, 3, 3, generator=torch.Generator().manual_seed(0)).to(device)
        want = nchw(model.prepare_input(check, pre)).float()
        got = torch.einsum("oc,bchw->bohw", m, check) + b.view(1, -1, 1, 1)
        if want.shape != got.shape or not torch.allclose(
            want, got, rtol=1e-4, atol=1e-4 * (1 + float(want.abs().max()))
        ):
            return None
    return m, b


class _InputPipeline:
    """Canvas images in [0, 1] -> the graph's input: robustness transforms, then the model's
    preprocessing and layout, fused into as few passes over the batch as possible."""

    def __init__(
        self,
        model: LoadedModel,
        tf: RobustnessTransform,
        channels: int,
        device: torch.device,
        pre: Preprocessing | None = None,
    ) -> None:
        self.model, self.tf, self.pre = model, tf, pre
        self.nhwc = model.input.layout == "NHWC"
        aff = _affine_preprocessing(model, channels, device, pre)
        self.affine = aff is not None
        if aff is None:
            return
        m, b = aff
        c = tf.outside_value()
        self.reflect = c is None
        # outside the canvas the model sees prep(c) = M c + b; sampling (M x - M c) with zeros
        # outside and adding prep(c) afterwards gives exactly that, and prep(x) inside
        outside = m @ torch.full((m.shape[1],), 0.0 if c is None else c, device=device) + b
        self.m = m
        self.diag = m.shape[0] == m.shape[1] and bool(
            (m - torch.diag(torch.diagonal(m))).abs().max() == 0
        )
        self.scale = torch.diagonal(m).view(1, -1, 1, 1).contiguous() if self.diag else None
        self.bias_full = b.view(1, -1, 1, 1)  # identity transform / reflection: M x + b
        self.bias_shift = (b - outside).view(1, -1, 1, 1)  # = -M c
        self.outside = outside.view(1, -1, 1, 1)

    def _affine(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            return torch.addcmul(bias, x, self.scale)
        return torch.nn.functional.conv2d(x, self.m[:, :, None, None], bias.flatten())

    def _layout(self, y: torch.Tensor) -> torch.Tensor:
        return y.permute(0, 2, 3, 1).contiguous() if self.nhwc else y

    def __call__(self, x01: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """Transform with ``params`` (``None``: the identity/fit only) and prepare."""
        tf = self.tf
        if not self.affine:
            y = tf.fit_only(x01) if params is None else tf.apply(x01, params)
            return self.model.prepare_input(y, self.pre)
        if params is None:
            if tf.out == tf.canvas and tf.view == tf.canvas:
                return self._layout(self._affine(x01, self.bias_full))
            params = torch.tensor(
                [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]] * x01.shape[0], dtype=torch.float64
            )
        if self.reflect:
            return self._layout(tf.warp(self._affine(x01, self.bias_full), params, reflect=True))
        return self._layout(tf.warp(self._affine(x01, self.bias_shift), params) + self.outside)


class _TailAverage:
    """The mean image over a render's last ``n`` steps (Polyak averaging of the iterates).

    Each step moves the image towards what that step's random transform rewards; the part of a
    step that only one transform asks for changes from step to step, so it cancels in the mean
    while what all transforms agree on stays.  Fed the image each step is taken on (the image
    after the previous step, so it costs no extra forward pass) and then the final image: the
    mean covers the images after the last ``n`` steps.  Per image, so a restarted image forgets
    its old iterates without touching the others; started afresh when the canvas changes size
    (octaves).  An early stop only moves the end earlier, so the images already in the mean stay
    in the new window; the window's images before that moment are missing from it.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.sum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def add(self, step: int, end: int, x01: torch.Tensor) -> None:
        """Add the image step ``step`` starts from, if it is one of the last ``n`` before ``end``."""
        if self.n <= 1 or step <= end - self.n + 1:
            return
        x = x01.detach().float()
        if self.sum is None or self.sum.shape != x.shape:
            self.sum = torch.zeros_like(x)
            self.count = torch.zeros(x.shape[0], 1, 1, 1, device=x.device)
        self.sum += x
        self.count += 1  # type: ignore[assignment, operator]  # set with sum above

    def forget(self, indices: Sequence[int]) -> None:
        """Drop these images' iterates (they restarted from a new random image)."""
        if self.sum is not None and indices:
            self.sum[list(indices)] = 0
            self.count[list(indices)] = 0  # type: ignore[index]  # set with sum

    def mean(self, final: torch.Tensor) -> torch.Tensor:
        """The mean including ``final``, the image after the last step done."""
        x = final.detach().float()
        if self.sum is None or self.sum.shape != x.shape:
            return x
        return (self.sum + x) / (self.count + 1)  # type: ignore[operator]  # set with sum


@dataclass
class _CoreOut:
    result: RenderResult
    main_values: np.ndarray | None  # per-image uncoupled objective values on the final image
    slots: tuple[int, ...] = ()  # the slot of each image


# -- the core loop ----------------------------------------------------------------------------------
def _render_core(
    model: LoadedModel,
    objective: obj.Objective,
    settings: RenderSettings,
    slots: Sequence[Slot],
    device: torch.device,
    cancelled: Callable[[], bool],
    pre: Preprocessing | None = None,
    start: torch.Tensor | None = None,
) -> Generator[Event, None, _CoreOut]:
    """Optimize one batch, one image per slot; every event names the slots it is about.

    ``start`` (NCHW in [0, 1], one per slot) replaces the random start images."""
    t0 = time.perf_counter()
    b = len(slots)
    seeds = [image_seed(settings.seed, *sl.seed_keys) for sl in slots]
    ids = tuple(sl.index for sl in slots)
    units = tuple(sl.unit for sl in slots)
    facets = tuple(sl.facet for sl in slots)
    offset = ids[0]
    where: dict[str, Any] = {"units": units, "offset": offset, "facets": facets, "slots": ids}
    if not objective.layers:
        raise RenderError("The objective reads no layer, so there is nothing to render.")
    if model.device != device:
        model.to(device)
    ext = model.extractor(list(objective.layers))
    params = list(ext.parameters())
    was = [p.requires_grad for p in params]
    cuda = device.type == "cuda"
    amp = bool(settings.amp and cuda)
    cl = bool(settings.channels_last and cuda)
    bench_flag = torch.backends.cudnn.benchmark
    try:
        for p in params:
            p.requires_grad_(False)  # no weight gradients: only the image is optimized
        if cl:
            ext.to(memory_format=torch.channels_last)
        if cuda:
            torch.backends.cudnn.benchmark = True
        out = (int(model.input.height), int(model.input.width)) if model.input.fixed_size else None
        octaves = reg.octave_plan(settings.steps, canvas_size(model, settings), settings.octaves,
                                  settings.octave_scale,
                                  multiple=model.input.size_multiple)  # fmt: skip

        def setup(size: tuple[int, int], image: torch.Tensor | None) -> tuple[Any, ...]:
            """Parameterization, transforms, optimizer and input pipeline for one canvas size
            (an octave), starting from ``image`` (resized) when given."""
            p = make_param(settings, b, *size, channels=model.input.channels, seeds=seeds,
                           device=device)  # fmt: skip
            if image is not None:
                p.set_image_(F.interpolate(image, size=(p.height, p.width), mode="bilinear"))
            t = RobustnessTransform(settings.transforms, (p.height, p.width), out=out,
                                    fit=settings.fit, seeds=[image_seed(s, 7) for s in seeds],
                                    multiple=model.input.size_multiple)  # fmt: skip
            return (
                p,
                t,
                make_optimizer(settings, p.parameters(), device),
                _InputPipeline(model, t, model.input.channels, device, pre),
            )

        param, tf, opt, pipe = setup(octaves[0][1], start)
        grad_tf = reg.gradient_transform(settings)
        anneal = anneal_steps(settings.steps, settings.lr_anneal)
        stopper = EarlyStop(settings.early_stop, settings.early_stop_window)
        # the saved image: the mean over the last steps (anneal_steps: the same share rule)
        tail = _TailAverage(anneal_steps(settings.steps, settings.average))
        end = settings.steps  # the last step; moves earlier when the objective has converged
        main = objective.main()

        def forward(
            e: nn.Module, xin: torch.Tensor, redirect: torch.Tensor | None = None
        ) -> dict[str, torch.Tensor]:
            if cl and xin.dim() == 4:
                xin = xin.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                return e(xin) if redirect is None else e(xin, redirect)

        def probe(
            need_grad: bool, image: torch.Tensor | None = None
        ) -> tuple[np.ndarray, np.ndarray | None, list[bool]]:
            """Values on the untransformed image (``image``, else the current one); which
            images' objective has zero gradient."""
            with torch.no_grad():
                x = (param() if image is None else image).detach()
            x.requires_grad_(need_grad and main is not None)
            with torch.set_grad_enabled(x.requires_grad):
                acts = forward(ext, pipe(x, None))
                full = objective(acts)
                mv = main(acts) if main is not None else None
                zero = [False] * b
                if x.requires_grad and mv is not None:
                    (g,) = torch.autograd.grad(mv.sum(), x)
                    zero = (g.flatten(1).abs().amax(1) == 0).tolist()
            return (
                full.detach().float().cpu().numpy(),
                None if mv is None else mv.detach().float().cpu().numpy(),
                zero,
            )

        def who(idx: Sequence[int]) -> str:
            names = [f"unit {units[i]}" if units[i] >= 0 else f"image {ids[i]}" for i in idx]
            return ", ".join(dict.fromkeys(names))

        def check_finite(step: int, loss: float, values: np.ndarray) -> None:
            if not (np.isfinite(loss) and np.isfinite(values).all()):
                raise RenderError(
                    f"The render diverged at step {step}: the objective became NaN or infinite "
                    "(try a lower learning rate, or check the model's preprocessing)."
                )

        override_until = 0
        restarted = False
        dead_start: list[int] = []
        if settings.relu_override_steps > 0 and main is not None and settings.steps > 0:
            _, _, zero = probe(True)
            dead_start = [i for i, z in enumerate(zero) if z]
            if dead_start and relu_override(ext) is not None:
                override_until = settings.relu_override_steps
                yield NoticeEvent(
                    f"{who(dead_start)}: zero gradient on the start image; redirecting ReLU "
                    f"gradients for the first {override_until} steps."
                )
            elif dead_start:  # no ReLU to override: only the stronger random start is left
                param.reinit_(dead_start, RESTART_SD)
                restarted = True
                yield NoticeEvent(
                    f"{who(dead_start)}: zero gradient on the start image; starting from a "
                    "stronger random image."
                )
        ext_o = relu_override(ext) if override_until else None
        redirect = torch.zeros(b, dtype=torch.bool, device=device)
        redirect[dead_start] = True

        def watch(step: int, values: np.ndarray) -> Generator[Event, None, None]:
            """Early stop: once converged, only the learning-rate anneal is left to run."""
            nonlocal end
            if (
                end == settings.steps
                and stopper.update(step, values)  # type: ignore[arg-type]  # an array of floats
                and step + anneal < settings.steps
            ):
                end = step + anneal
                yield NoticeEvent(
                    f"Converged at step {step} (no image gained more than {settings.early_stop:g} "
                    f"of its objective over {settings.early_stop_window} steps); stopping after "
                    f"step {end} of {settings.steps}."
                )

        pending: tuple[int, torch.Tensor, torch.cuda.Event] | None = None

        def flush() -> Generator[Event, None, None]:
            nonlocal pending
            if pending is None:
                return
            step, host, ev = pending
            pending = None
            ev.synchronize()
            arr = host.numpy().astype(np.float64)
            check_finite(step, float(arr[0]), arr[1:])
            yield StepEvent(step, settings.steps, float(arr[0]), arr[1:].copy(), **where)
            yield from watch(step, arr[1:])

        steps_done = 0
        was_cancelled = False
        step = 0
        for step in range(1, settings.steps + 1):
            if step > end:
                break
            if cancelled():
                was_cancelled = True
                break
            if anneal:
                for group in opt.param_groups:
                    group["lr"] = learning_rate(step, end, settings.lr, anneal, settings.lr_final)
            if override_until and step == override_until + 1 and not restarted:
                restarted = True
                _, _, zero = probe(True)
                still = [i for i in dead_start if zero[i]]
                revived = [i for i in dead_start if not zero[i]]
                if revived:
                    yield NoticeEvent(f"{who(revived)}: revived by the ReLU gradient override.")
                if still:
                    param.reinit_(still, RESTART_SD)
                    tail.forget(still)
                    state = opt.state.get(param.separate, {})
                    for key in ("exp_avg", "exp_avg_sq"):
                        if key in state:
                            state[key][still] = 0
                    override_until = step - 1 + settings.relu_override_steps
                    redirect.zero_()
                    redirect[still] = True
                    yield NoticeEvent(
                        f"{who(still)}: still no gradient; restarting from a stronger random image."
                    )
            over = ext_o is not None and step <= override_until
            if len(octaves) > 1 and any(first == step > 1 for first, _ in octaves):
                size = next(hw for first, hw in octaves if first == step)  # the next octave
                with torch.no_grad():
                    param, tf, opt, pipe = setup(size, param().detach())
            try:
                x01 = param()
                tail.add(step, end, x01)
                xg = x01 if grad_tf is None else grad_tf(x01)
                xin = pipe(xg, None if tf.identity else tf.draw())
                acts = forward(ext_o, xin, redirect) if over else forward(ext, xin)  # type: ignore[arg-type]  # ext_o is set whenever over is true
                values = objective(acts)
                loss = -values.sum()
                pen = reg.penalties(x01, settings)
                if pen is not None:
                    loss = loss + pen.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                reg.filter_image_(param, step, settings)
                stats = torch.cat([loss.detach().reshape(1).float(), values.detach().float()])
            except Exception as ex:
                if _is_oom(ex):
                    raise _OutOfMemory(b, step) from None
                raise
            steps_done = step
            if cuda:
                host = torch.empty(stats.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(stats, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record()
                yield from flush()  # the previous step's numbers, while this step runs
                pending = (step, host, ev)
            else:
                arr = stats.numpy().astype(np.float64)
                check_finite(step, float(arr[0]), arr[1:])
                yield StepEvent(step, settings.steps, float(arr[0]), arr[1:].copy(), **where)
                yield from watch(step, arr[1:])
            if settings.preview_every and step % settings.preview_every == 0 and step != end:
                yield from flush()
                yield PreviewEvent(step, param.to_uint8(), **where)
        yield from flush()
        with torch.no_grad():
            final = tail.mean(param()) if tail.n > 1 else None
        images = param.to_uint8() if final is None else images_uint8(final)
        yield PreviewEvent(steps_done, images, **where)
        values_np, main_np, zero = probe(not was_cancelled, final)
        dead = [i for i, z in enumerate(zero) if z] if not was_cancelled else []
        if dead:
            yield NoticeEvent(
                f"{who(dead)}: dead (zero gradient on the final image); the image is not a result."
            )
        result = RenderResult(
            images=images,
            values=values_np,
            steps_done=steps_done,
            cancelled=was_cancelled,
            dead=[ids[i] for i in dead],
            seconds=time.perf_counter() - t0,
            device=describe_device(device),
            batch=b,
        )
        return _CoreOut(result, main_np, ids)
    finally:
        for p, r in zip(params, was, strict=True):
            p.requires_grad_(r)
        torch.backends.cudnn.benchmark = bench_flag


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class BatchDone:
    """Internal to the engine's callers: one batch finished (``render_batches`` yields it)."""

    out: _CoreOut


def _chunks(slots: Sequence[Slot], per: int) -> list[list[Slot]]:
    """Consecutive slots, ``per`` at most, never splitting a group (a group may exceed ``per``)."""
    out: list[list[Slot]] = []
    cur: list[Slot] = []
    groups: list[list[Slot]] = []
    for sl in slots:
        if groups and groups[-1][0].group == sl.group:
            groups[-1].append(sl)
        else:
            groups.append([sl])
    for g in groups:
        if cur and len(cur) + len(g) > per:
            out.append(cur)
            cur = []
        cur = cur + g
    if cur:
        out.append(cur)
    return out


def render_batches(
    model: LoadedModel,
    slots: Sequence[Slot],
    build: Callable[[Sequence[Slot]], obj.Objective],
    settings: RenderSettings,
    *,
    per: int,
    device: torch.device,
    cancelled: Callable[[], bool],
    pre: Preprocessing | None = None,
    what: Callable[[], str] = lambda: "this objective",
    start: Callable[[Sequence[Slot]], torch.Tensor | None] | None = None,
) -> Generator[Event | BatchDone, None, None]:
    """Render ``slots`` in batches of at most ``per`` images, whole groups at a time.

    The one out-of-memory policy: a batch that does not fit is retried in batches of half the
    size (whole groups), and the rest of the work keeps the smaller size; a group that cannot be
    split (images coupled by diversity, interpolation or a shared parameterization) and does not
    fit is a ``RenderError``.  Yields the engine's events and a ``BatchDone`` after each batch;
    stops after a cancelled batch.
    """
    mb = model.input.max_batch
    widest = max(
        (sum(1 for s in slots if s.group == g) for g in {s.group for s in slots}), default=1
    )
    if mb is not None and widest > mb:
        raise RenderError(
            f"This model only accepts batch {mb}, but {what()} needs {widest} images in one batch."
        )
    per = max(1, min(per, mb) if mb is not None else per)
    i = 0
    while i < len(slots):
        chunk = _chunks(slots[i:], per)[0]
        oom: _OutOfMemory | None = None
        try:
            first = start(chunk) if start is not None else None
            out = yield from _render_core(
                model, build(chunk), settings, chunk, device, cancelled, pre, first
            )
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if _is_too_small(e) and not model.input.fixed_size:
                raise _too_small_error(model, settings, device) from e
            oom = _as_oom(e, len(chunk))
        if oom is not None:  # outside the except block so the failed attempt's tensors are freed
            _free(device)
            if len(chunk) == 1:
                raise RenderError(
                    f"Out of {device.type} memory even for one image; use a smaller canvas or "
                    "another device."
                )
            if len({s.group for s in chunk}) == 1:
                raise RenderError(
                    f"Out of {device.type} memory at batch {len(chunk)}, and {what()} needs all "
                    "its images in one batch; use fewer images or a smaller canvas."
                )
            per = max(1, len(chunk) // 2)
            yield NoticeEvent(
                f"Out of {device.type} memory at batch {oom.batch} (step {oom.step}); "
                f"continuing in batches of {per}."
            )
            continue
        yield BatchDone(out)
        if out.result.cancelled:
            return
        i += len(chunk)


def _merge(outs: Sequence[_CoreOut], device: torch.device) -> RenderResult:
    rs = [o.result for o in outs]
    if not rs:
        return RenderResult(np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0), 0, True, [], 0.0,
                            describe_device(device), 0)  # fmt: skip
    return RenderResult(
        images=np.concatenate([r.images for r in rs]),
        values=np.concatenate([r.values for r in rs]),
        steps_done=min(r.steps_done for r in rs),
        cancelled=any(r.cancelled for r in rs),
        dead=[d for r in rs for d in r.dead],
        seconds=sum(r.seconds for r in rs),
        device=rs[0].device,
        batch=max(r.batch for r in rs),
    )


def render(
    model: LoadedModel,
    objective: obj.Objective,
    settings: RenderSettings | None = None,
    *,
    batch: int | None = None,
    cancel: CancelFlag = None,
    device: torch.device | str | None = None,
    preprocessing: Preprocessing | None = None,
) -> Generator[Event, None, RenderResult]:
    """Optimize ``batch`` (default ``settings.batch``) images for ``objective``.

    A generator: drive it with ``for ev in gen`` / ``yield from``; the ``RenderResult`` is its
    return value.  ``cancel`` (a ``threading.Event`` or zero-argument callable) is checked every
    step; a cancelled render returns the images as they are.  ``device`` overrides
    ``settings.device``; the model is moved there.  NaN/Inf raises ``RenderError`` naming the
    step; out-of-memory halves the batch and retries (a ``NoticeEvent`` says so).  Jobs
    (``fvdesk.core.jobs.run.run_job``) are the way front ends render; this is the engine's API
    for arbitrary objectives.
    """
    settings = settings or RenderSettings()
    settings.validate()
    b = int(batch or settings.batch)
    if b < 1:
        raise RenderError(f"A render needs at least one image, got batch {b}.")
    for name in objective.layers:
        model.graph[name]  # unknown layer -> RenderError with suggestions
    dev = resolve_device(device, settings)
    one = objective.coupled or bool(settings.shared)
    slots = [Slot(i, -1, i, (i,), 0 if one else i) for i in range(b)]

    def what() -> str:
        return objective.describe() if objective.coupled else "the shared parameterization"

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        start, stop = chunk[0].index, chunk[-1].index + 1
        return objective if (start, stop) == (0, b) else objective.subset(start, stop)

    outs: list[_CoreOut] = []
    for ev in render_batches(
        model, slots, build, settings,
        per=b, device=dev, cancelled=cancel_fn(cancel), pre=preprocessing, what=what,
    ):  # fmt: skip
        if isinstance(ev, BatchDone):
            outs.append(ev.out)
        else:
            yield ev
    return _merge(outs, dev)
