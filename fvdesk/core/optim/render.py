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
values -> fused Adam on ``-sum(values)`` plus optional regularizers.  Speed is measured against
the floor (forward to the target + backward to the input) by ``benchmarks/bench_render.py``.

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
import threading
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import fx, nn

from fvdesk.core.device import describe_device, pick_device
from fvdesk.core.errors import RenderError
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.events import (
    Event,
    NoticeEvent,
    PreviewEvent,
    RenderResult,
    StepEvent,
    UnitDoneEvent,
    UnitResult,
)
from fvdesk.core.optim.param import ImageParam
from fvdesk.core.optim.schedule import EarlyStop, anneal_steps, learning_rate
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.transforms import RobustnessTransform

CancelFlag = threading.Event | Callable[[], bool] | None
UnitKind = Literal["neuron", "channel", "deepdream", "logit", "prob"]

#: Start-latent standard deviation used when a dead unit is restarted ("stronger random start").
RESTART_SD = 0.2


@dataclass
class UnitJob:
    """Render ``units`` of ``layer`` (``facets`` images per unit, made diverse when facets > 1)."""

    layer: str
    units: list[int]
    kind: UnitKind = "channel"
    negative: bool = False
    facets: int = 1
    # Relative to the unit objective's magnitude (objectives.WithDiversity).  1.25 under the
    # default recipe (issue 12): its smoother, low-frequency images move the Gram-matrix term
    # easily, and at 3.0 (the previous recipe's value) one facet in four fell to 0.2-0.4 of the
    # unit's value on the demo model; much larger values let facets stop exciting the unit.
    diversity_weight: float = 1.25
    diversity_layer: str | None = (
        None  # default: the layer itself, or the last feature map before it
    )


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


def _cancel_fn(cancel: CancelFlag) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set  # type: ignore[union-attr]
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a threading.Event, a zero-argument callable or None")


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def _as_oom(e: Exception, batch: int) -> _OutOfMemory:
    """``e`` as an ``_OutOfMemory`` (raised anywhere in a render: setup, probe or step), else re-raise."""
    if isinstance(e, _OutOfMemory):
        return _OutOfMemory(e.batch, e.step)
    if _is_oom(e):
        return _OutOfMemory(batch, 0)
    raise e


def _resolve_device(device: torch.device | str | None, settings: RenderSettings) -> torch.device:
    dev = device if isinstance(device, torch.device) else pick_device(device or settings.device)
    if dev.type == "cuda" and dev.index is None:  # compare equal to the model's cuda:N
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient is redirected for chosen images that it would block entirely (Lucid).

    For an image in ``redirect`` whose plain ReLU gradient is zero everywhere, the incoming
    gradient passes through except where it would push an already-negative input lower.  Other
    images get the plain gradient, so a live image renders the same whatever shares its batch.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, redirect: torch.Tensor, upper: float | None
    ) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, redirect)
        ctx.upper = upper
        return x.clamp(min=0.0, max=upper)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        x, redirect = ctx.saved_tensors
        passes = x > 0
        if ctx.upper is not None:
            passes = passes & (x < ctx.upper)
        plain = torch.where(passes, g, torch.zeros_like(g))
        if g.dim() < 2 or not bool(redirect.any()):
            return plain, None, None
        redirected = torch.where((x < 0) & (g > 0), torch.zeros_like(g), g)
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


def _canvas(model: LoadedModel, settings: RenderSettings) -> tuple[int, int]:
    if settings.size is not None:
        return settings.size, settings.size
    return int(model.input.height), int(model.input.width)


def _penalties(x: torch.Tensor, settings: RenderSettings) -> torch.Tensor | None:
    """Per-image frequency penalties on the [0, 1] image (total variation, L1, L2 about grey)."""
    total = None
    if settings.tv > 0:
        tv = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
        tv = tv + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
        total = settings.tv * tv
    if settings.l1 > 0:
        v = settings.l1 * (x - 0.5).abs().flatten(1).mean(1)
        total = v if total is None else total + v
    if settings.l2 > 0:
        v = settings.l2 * (x - 0.5).pow(2).flatten(1).mean(1)
        total = v if total is None else total + v
    return total


def _affine_preprocessing(
    model: LoadedModel, channels: int, device: torch.device
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
        out = nchw(model.prepare_input(probe)).float()
        b = out[0, :, 0, 0]
        m = (out[1:, :, 0, 0] - b).T.contiguous()  # (C_out, C_in)
        check = torch.rand(2, channels, 3, 3, generator=torch.Generator().manual_seed(0)).to(device)
        want = nchw(model.prepare_input(check)).float()
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
        self, model: LoadedModel, tf: RobustnessTransform, channels: int, device: torch.device
    ) -> None:
        self.model, self.tf = model, tf
        self.nhwc = model.input.layout == "NHWC"
        aff = _affine_preprocessing(model, channels, device)
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
            return self.model.prepare_input(y)
        if params is None:
            if tf.out == tf.canvas and tf.view == tf.canvas:
                return self._layout(self._affine(x01, self.bias_full))
            params = torch.tensor(
                [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]] * x01.shape[0], dtype=torch.float64
            )
        if self.reflect:
            return self._layout(tf.warp(self._affine(x01, self.bias_full), params, reflect=True))
        return self._layout(tf.warp(self._affine(x01, self.bias_shift), params) + self.outside)


@dataclass
class _CoreOut:
    result: RenderResult
    main_values: np.ndarray | None  # per-image uncoupled objective values on the final image


# -- the core loop ----------------------------------------------------------------------------------
def _render_core(
    model: LoadedModel,
    objective: obj.Objective,
    settings: RenderSettings,
    seeds: Sequence[int],
    device: torch.device,
    cancelled: Callable[[], bool],
    *,
    units: tuple[int, ...] | None = None,
    offset: int = 0,
    facets: tuple[int, ...] | None = None,
) -> Generator[Event, None, _CoreOut]:
    t0 = time.perf_counter()
    b = len(seeds)
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
        h, w = _canvas(model, settings)
        param = ImageParam(
            b,
            h,
            w,
            channels=model.input.channels,
            kind=settings.param,
            decorrelate=settings.decorrelate,
            decay=settings.decay,
            color_matrix=settings.color_matrix,
            sd=settings.init_sd,
            seeds=seeds,
            shared=settings.shared,
            device=device,
        )
        out = (int(model.input.height), int(model.input.width)) if model.input.fixed_size else None
        tf = RobustnessTransform(
            settings.transforms,
            (h, w),
            out=out,
            fit=settings.fit,
            seeds=[image_seed(s, 7) for s in seeds],
        )
        fused = device.type in ("cpu", "cuda")  # one kernel per Adam step where torch has it
        opt = torch.optim.Adam(param.parameters(), lr=settings.lr, fused=fused)
        anneal = anneal_steps(settings.steps, settings.lr_anneal)
        stopper = EarlyStop(settings.early_stop, settings.early_stop_window)
        end = settings.steps  # the last step; moves earlier when the objective has converged
        main = objective.main()
        pipe = _InputPipeline(model, tf, model.input.channels, device)

        def forward(
            e: nn.Module, xin: torch.Tensor, redirect: torch.Tensor | None = None
        ) -> dict[str, torch.Tensor]:
            if cl and xin.dim() == 4:
                xin = xin.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                return e(xin) if redirect is None else e(xin, redirect)

        def probe(need_grad: bool) -> tuple[np.ndarray, np.ndarray | None, list[bool]]:
            """Values on the untransformed image; which images' objective has zero gradient."""
            with torch.no_grad():
                x = param().detach()
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
            names = [
                f"unit {units[i]}" if units is not None and units[i] >= 0 else f"image {offset + i}"
                for i in idx
            ]
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
                and stopper.update(step, values)
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
            yield StepEvent(
                step, settings.steps, float(arr[0]), arr[1:].copy(), units, offset, facets
            )
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
            try:
                x01 = param()
                xin = pipe(x01, None if tf.identity else tf.draw())
                acts = forward(ext_o, xin, redirect) if over else forward(ext, xin)  # type: ignore[arg-type]
                values = objective(acts)
                loss = -values.sum()
                pen = _penalties(x01, settings)
                if pen is not None:
                    loss = loss + pen.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if settings.blur_every and step % settings.blur_every == 0:
                    param.blur_(settings.blur_sigma)
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
                yield StepEvent(
                    step, settings.steps, float(arr[0]), arr[1:].copy(), units, offset, facets
                )
                yield from watch(step, arr[1:])
            if settings.preview_every and step % settings.preview_every == 0 and step != end:
                yield from flush()
                yield PreviewEvent(step, param.to_uint8(), units, offset, facets)
        yield from flush()
        images = param.to_uint8()
        yield PreviewEvent(steps_done, images, units, offset, facets)
        values_np, main_np, zero = probe(not was_cancelled)
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
            dead=[offset + i for i in dead],
            seconds=time.perf_counter() - t0,
            device=describe_device(device),
            batch=b,
        )
        return _CoreOut(result, main_np)
    finally:
        for p, r in zip(params, was, strict=True):
            p.requires_grad_(r)
        torch.backends.cudnn.benchmark = bench_flag


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _merge(a: _CoreOut, c: _CoreOut) -> _CoreOut:
    ra, rc = a.result, c.result
    r = RenderResult(
        images=np.concatenate([ra.images, rc.images]),
        values=np.concatenate([ra.values, rc.values]),
        steps_done=min(ra.steps_done, rc.steps_done),
        cancelled=ra.cancelled or rc.cancelled,
        dead=ra.dead + rc.dead,
        seconds=ra.seconds + rc.seconds,
        device=ra.device,
        batch=max(ra.batch, rc.batch),
    )
    mv = (
        None
        if a.main_values is None or c.main_values is None
        else np.concatenate([a.main_values, c.main_values])
    )
    return _CoreOut(r, mv)


def _render_split(
    model: LoadedModel,
    objective: obj.Objective,
    settings: RenderSettings,
    seeds: Sequence[int],
    device: torch.device,
    cancelled: Callable[[], bool],
    *,
    units: tuple[int, ...] | None,
    offset: int,
    max_batch: int | None,
    facets: tuple[int, ...] | None = None,
) -> Generator[Event, None, _CoreOut]:
    """Run the batch whole, or in halves when it does not fit (each image keeps its own seed)."""
    b = len(seeds)
    oom: _OutOfMemory | None = None
    if max_batch is None or b <= max_batch:
        try:
            return (
                yield from _render_core(
                    model,
                    objective,
                    settings,
                    seeds,
                    device,
                    cancelled,
                    units=units,
                    offset=offset,
                    facets=facets,
                )  # fmt: skip
            )
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            oom = _as_oom(e, b)
    # outside the except block, so the failed attempt's tensors can be freed
    _free(device)
    if b == 1:
        raise RenderError(
            f"Out of {device.type} memory even for one image; use a smaller canvas or another device."
        )
    if objective.coupled or settings.shared:
        what = objective.describe() if objective.coupled else "the shared parameterization"
        raise RenderError(
            f"Out of {device.type} memory at batch {b}, and {what} needs all images "
            "in one batch; use fewer images or a smaller canvas."
            if oom is not None
            else f"This model only accepts batch {max_batch}, but {what} needs {b} images in one batch."
        )
    half = (b + 1) // 2
    if oom is not None:
        yield NoticeEvent(
            f"Out of {device.type} memory at batch {b} (step {oom.step}); retrying in batches of {half}."
        )
    oom = None
    first = yield from _render_split(
        model, objective.subset(0, half), settings, seeds[:half], device, cancelled,
        units=units[:half] if units else None, offset=offset, max_batch=max_batch,
        facets=facets[:half] if facets else None,
    )  # fmt: skip
    if first.result.cancelled:
        return first
    second = yield from _render_split(
        model, objective.subset(half, b), settings, seeds[half:], device, cancelled,
        units=units[half:] if units else None, offset=offset + half, max_batch=max_batch,
        facets=facets[half:] if facets else None,
    )  # fmt: skip
    return _merge(first, second)


def render(
    model: LoadedModel,
    objective: obj.Objective,
    settings: RenderSettings | None = None,
    *,
    batch: int | None = None,
    cancel: CancelFlag = None,
    device: torch.device | str | None = None,
) -> Generator[Event, None, RenderResult]:
    """Optimize ``batch`` (default ``settings.batch``) images for ``objective``.

    A generator: drive it with ``for ev in gen`` / ``yield from``; the ``RenderResult`` is its
    return value.  ``cancel`` (a ``threading.Event`` or zero-argument callable) is checked every
    step; a cancelled render returns the images as they are.  ``device`` overrides
    ``settings.device``; the model is moved there.  NaN/Inf raises ``RenderError`` naming the
    step; out-of-memory halves the batch and retries (a ``NoticeEvent`` says so).
    """
    settings = settings or RenderSettings()
    settings.validate()
    b = int(batch or settings.batch)
    if b < 1:
        raise RenderError(f"A render needs at least one image, got batch {b}.")
    for name in objective.layers:
        model.graph[name]  # unknown layer -> RenderError with suggestions
    dev = _resolve_device(device, settings)
    seeds = [image_seed(settings.seed, i) for i in range(b)]
    mb = model.input.max_batch
    out = yield from _render_split(
        model,
        objective,
        settings,
        seeds,
        dev,
        _cancel_fn(cancel),
        units=None,
        offset=0,
        max_batch=mb,
    )
    return out.result


# -- many units of one layer --------------------------------------------------------------------------
def _diversity_layer(model: LoadedModel, layer: str) -> str:
    lay = model.graph[layer]
    if lay.kind == "feature":
        return layer
    before = [x for x in model.graph if x.kind == "feature" and x.index < lay.index]
    return before[-1].name if before else layer


def _unit_label(model: LoadedModel, layer: str, unit: int) -> str | None:
    # The same rule as the app's tree: the logits layer, or any vector layer as wide as the labels
    # (e.g. a softmax output), so saved galleries carry the labels the canvas shows.
    lay = model.graph[layer]
    is_class_layer = layer == model.graph.logits_name or lay.kind == "vector"
    if unit < 0 or not is_class_layer or not model.labels or len(model.labels) != lay.channels:
        return None
    return model.label(unit)


def render_units(
    model: LoadedModel,
    job: UnitJob,
    settings: RenderSettings | None = None,
    cancel: CancelFlag = None,
    *,
    device: torch.device | str | None = None,
) -> Generator[Event, None, list[UnitResult]]:
    """Render every unit of ``job`` in batches of ``settings.batch`` images (each its own unit).

    Facets of one unit stay in one batch (the diversity term compares them).  Yields the events
    of ``render`` (with ``units`` set) plus a ``UnitDoneEvent`` per finished image; returns all
    ``UnitResult``s in order.  Out-of-memory halves the batch for the rest of the job.
    """
    settings = settings or RenderSettings()
    settings.validate()
    lay = model.graph[job.layer]
    if job.kind not in ("neuron", "channel", "deepdream", "logit", "prob"):
        raise RenderError(
            f"Unknown unit kind {job.kind!r}; use neuron, channel, deepdream, logit or prob."
        )
    facets = int(job.facets)
    if facets < 1:
        raise RenderError(f"A unit job needs at least one facet, got {facets}.")
    if job.kind == "deepdream":
        unit_list = [-1]
    else:
        unit_list = [int(u) for u in job.units]
        n = lay.channels
        bad = [u for u in unit_list if not 0 <= u < n]
        if bad and n:
            raise RenderError(
                f"Unit {bad[0]} does not exist: layer {job.layer} has {n} channels (0-{n - 1})."
            )
    dev = _resolve_device(device, settings)
    cancelled = _cancel_fn(cancel)
    weight = obj.check_finite_weight(job.diversity_weight, "diversity")
    mb = model.input.max_batch
    use_div = facets > 1 and weight > 0
    if use_div and mb is not None and mb < facets:
        yield NoticeEvent(
            f"This model only accepts batch {mb}: facets are rendered without the diversity term."
        )
        use_div = False
    div_layer = job.diversity_layer or _diversity_layer(model, job.layer)
    items = [(u, f) for u in unit_list for f in range(facets)]
    group = facets if use_div else 1  # images that must share a batch
    cap = settings.batch if mb is None else min(settings.batch, mb)
    per = max(group, (cap // group) * group)
    results: list[UnitResult] = []
    i = 0
    while i < len(items):
        pairs = items[i : i + per]
        seeds = [image_seed(settings.seed, u, f) for u, f in pairs]
        img_units = tuple(u for u, _ in pairs)
        if job.kind == "deepdream":
            main: obj.Objective = obj.deepdream(job.layer)
        else:
            main = obj.Unit(job.layer, job.kind, list(img_units))
        if job.negative:
            main = -main
        objective = main
        if use_div:
            groups = [list(range(k, k + facets)) for k in range(0, len(pairs), facets)]
            objective = obj.with_diversity(main, div_layer, weight, groups)
        oom: _OutOfMemory | None = None
        try:
            out = yield from _render_core(
                model, objective, settings, seeds, dev, cancelled,
                units=img_units, facets=tuple(f for _, f in pairs),
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            oom = _as_oom(e, len(pairs))
        if oom is not None:  # outside the except block so the failed attempt's tensors are freed
            _free(dev)
            if per <= group:
                raise RenderError(
                    f"Out of {dev.type} memory even at batch {per}; use a smaller canvas or another device."
                )
            per = max(group, ((per // 2) // group) * group)
            yield NoticeEvent(
                f"Out of {dev.type} memory at batch {oom.batch}; continuing in batches of {per}."
            )
            continue
        r = out.result
        mv = out.main_values if out.main_values is not None else r.values
        for k, (u, f) in enumerate(pairs):
            value = float(mv[k])
            ur = UnitResult(
                layer=job.layer,
                unit=u,
                facet=f,
                label=_unit_label(model, job.layer, u),
                kind=job.kind,
                negative=job.negative,
                value=-value if job.negative else value,
                image=r.images[k],
                dead=k in r.dead,
                seed=settings.seed,
                steps=r.steps_done,
            )
            results.append(ur)
            yield UnitDoneEvent(ur)
        if r.cancelled:
            break
        i += len(pairs)
    return results
