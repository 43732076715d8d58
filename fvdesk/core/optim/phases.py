"""One batch's render as an object whose phases can be run and tested one by one.

``BatchRender.run`` is the whole render of one batch (what ``render_batches`` drives):

* ``__init__``: the slots' seeds and names, the extractor cut after the objective's layers;
* ``freeze`` / ``restore``: weights without gradients (and CUDA's memory format and cuDNN
  autotuning) for the render's duration, put back afterwards;
* ``begin``: the octave plan, the parameterization, transforms, optimizer and input pipeline of
  the first canvas size (``setup``), the schedule (anneal, early stop, tail average);
* ``probe_dead_start``: dead units on the start image get the redirected ReLU gradient or a
  stronger random start; ``watch`` gives an image whose objective falls to 0 mid-run the same
  window, and ``_revive`` (the window's end) restarts the images still dead, once each;
* per step: ``before_step`` (learning rate, the end of the ReLU override, the next octave),
  ``step`` (one optimizer step, out-of-memory raised as ``_OutOfMemory``), ``report`` (the step's
  numbers, early stop, previews; on CUDA the numbers arrive one step late so the GPU never waits);
* ``finish``: the saved image (last or tail mean), its values, dead images, the ``RenderResult``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fvdesk.core.device import describe_device
from fvdesk.core.errors import RenderError
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim import regularizers as reg
from fvdesk.core.optim.events import (
    Event,
    NoticeEvent,
    PreviewEvent,
    RenderResult,
    StepEvent,
)
from fvdesk.core.optim.failures import _is_oom, _OutOfMemory
from fvdesk.core.optim.param import images_uint8
from fvdesk.core.optim.parameterizations import make_param
from fvdesk.core.optim.pipeline import _InputPipeline, canvas_size
from fvdesk.core.optim.relu import relu_override
from fvdesk.core.optim.schedule import EarlyStop, anneal_steps, learning_rate
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.slots import Slot
from fvdesk.core.optim.steepest import make_optimizer
from fvdesk.core.optim.transforms import RobustnessTransform

#: Start-latent standard deviation used when a dead unit is restarted ("stronger random start").
RESTART_SD = 0.2


def image_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed for one image from the render seed and its keys (unit, facet...)."""
    ss = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, *[(int(k) + 1) & 0xFFFFFFFF for k in keys]]
    )
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


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
        self.count += 1  # type: ignore[operator, assignment]  # set with sum just above

    def forget(self, indices: Sequence[int]) -> None:
        """Drop these images' iterates (they restarted from a new random image)."""
        if self.sum is not None and indices:
            self.sum[list(indices)] = 0
            self.count[list(indices)] = 0  # type: ignore[index]  # count is set together with sum

    def mean(self, final: torch.Tensor) -> torch.Tensor:
        """The mean including ``final``, the image after the last step done."""
        x = final.detach().float()
        if self.sum is None or self.sum.shape != x.shape:
            return x
        return (self.sum + x) / (self.count + 1)  # type: ignore[operator]  # count is set together with sum


@dataclass
class _CoreOut:
    result: RenderResult
    main_values: np.ndarray | None  # per-image uncoupled objective values on the final image
    slots: tuple[int, ...] = ()  # the slot of each image


def _check_finite(step: int, loss: float, values: np.ndarray) -> None:
    if not (np.isfinite(loss) and np.isfinite(values).all()):
        raise RenderError(
            f"The render diverged at step {step}: the objective became NaN or infinite "
            "(try a lower learning rate, or check the model's preprocessing)."
        )


class BatchRender:
    """One batch, one image per slot; every event names the slots it is about.

    The phases share the render's state as attributes (the parameterization ``param``, its
    transform ``tf``, optimizer ``opt`` and input pipeline ``pipe``; ``end``, the last step, which
    moves earlier when the objective has converged), so each can be run and checked alone."""

    def __init__(
        self,
        model: LoadedModel,
        objective: obj.Objective,
        settings: RenderSettings,
        slots: Sequence[Slot],
        device: torch.device,
        cancelled: Callable[[], bool],
        pre: Preprocessing | None = None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.model, self.objective, self.settings = model, objective, settings
        self.device, self.cancelled, self.pre = device, cancelled, pre
        self.b = len(slots)
        self.seeds = [image_seed(settings.seed, *sl.seed_keys) for sl in slots]
        self.ids = tuple(sl.index for sl in slots)
        self.units = tuple(sl.unit for sl in slots)
        facets = tuple(sl.facet for sl in slots)
        self.where: dict[str, Any] = {"units": self.units, "offset": self.ids[0], "facets": facets,
                      "slots": self.ids}  # fmt: skip
        if not objective.layers:
            raise RenderError("The objective reads no layer, so there is nothing to render.")
        if model.device != device:
            model.to(device)
        self.ext = model.extractor(list(objective.layers))
        self._weights = list(self.ext.parameters())
        self._was = [p.requires_grad for p in self._weights]
        self.cuda = device.type == "cuda"
        self.amp = bool(settings.amp and self.cuda)
        self.cl = bool(settings.channels_last and self.cuda)
        self._bench_flag = torch.backends.cudnn.benchmark
        self.end = settings.steps  # the last step; moves earlier when the objective has converged
        self.override_until = 0  # the last step of the redirected ReLU gradient (0: none)
        self.restarted = False  # the stronger random start was used
        self.dead_start: list[int] = []
        self.ext_o: nn.Module | None = None  # the extractor with redirected ReLUs
        self.redirect = torch.zeros(self.b, dtype=torch.bool, device=device)
        self.died: set[int] = set()  # images redirected once already
        self.watched: list[int] = []  # images awaiting the override window's verdict
        self.fresh_start: set[int] = set()  # images restarted from a stronger start already
        self._pending: tuple[int, torch.Tensor, torch.cuda.Event] | None = None
        self.steps_done = 0
        self.was_cancelled = False

    # -- around the render --------------------------------------------------------------------------
    def freeze(self) -> None:
        """No weight gradients (only the image is optimized); CUDA's faster layouts."""
        for p in self._weights:
            p.requires_grad_(False)
        if self.cl:
            self.ext.to(memory_format=torch.channels_last)
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    def restore(self) -> None:
        for p, r in zip(self._weights, self._was, strict=True):
            p.requires_grad_(r)
        torch.backends.cudnn.benchmark = self._bench_flag

    def run(self, start: torch.Tensor | None = None) -> Generator[Event, None, _CoreOut]:
        """The whole render; ``start`` (NCHW in [0, 1], one per slot) replaces the random
        start images."""
        try:
            self.freeze()
            self.begin(start)
            yield from self.probe_dead_start()
            for step in range(1, self.settings.steps + 1):
                if step > self.end:
                    break
                if self.cancelled():
                    self.was_cancelled = True
                    break
                yield from self.before_step(step)
                stats = self.step(step)
                yield from self.report(step, stats)
            return (yield from self.finish())
        finally:
            self.restore()

    # -- setup ----------------------------------------------------------------------------------
    def setup(self, size: tuple[int, int], image: torch.Tensor | None) -> None:
        """Parameterization, transforms, optimizer and input pipeline for one canvas size (an
        octave), starting from ``image`` (resized) when given."""
        s, model, device = self.settings, self.model, self.device
        p = make_param(s, self.b, *size, channels=model.input.channels, seeds=self.seeds,
                       device=device)  # fmt: skip
        if image is not None:
            p.set_image_(F.interpolate(image, size=(p.height, p.width), mode="bilinear"))
        t = RobustnessTransform(s.transforms, (p.height, p.width), out=self.native_out,
                                fit=s.fit, seeds=[image_seed(x, 7) for x in self.seeds],
                                multiple=model.input.size_multiple)  # fmt: skip
        self.param, self.tf = p, t
        self.opt = make_optimizer(s, p.parameters(), device)
        self.pipe = _InputPipeline(model, t, model.input.channels, device, self.pre)

    def begin(self, start: torch.Tensor | None = None) -> None:
        """The octave plan, the first canvas's ``setup`` and the schedule."""
        s, inp = self.settings, self.model.input
        self.native_out = (int(inp.height), int(inp.width)) if inp.fixed_size else None
        self.octaves = reg.octave_plan(s.steps, canvas_size(self.model, s), s.octaves,
                                       s.octave_scale, multiple=inp.size_multiple)  # fmt: skip
        self.setup(self.octaves[0][1], start)
        self.grad_tf = reg.gradient_transform(s)
        self.anneal = anneal_steps(s.steps, s.lr_anneal)
        self.stopper = EarlyStop(s.early_stop, s.early_stop_window)
        # the saved image: the mean over the last steps (anneal_steps: the same share rule)
        self.tail = _TailAverage(anneal_steps(s.steps, s.average))
        self.main = self.objective.main()

    # -- the model ------------------------------------------------------------------------------
    def forward(
        self, e: nn.Module, xin: torch.Tensor, redirect: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if self.cl and xin.dim() == 4:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return e(xin) if redirect is None else e(xin, redirect)

    def probe(
        self, need_grad: bool, image: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, list[bool]]:
        """Values on the untransformed image (``image``, else the current one); which images'
        objective has zero gradient."""
        main = self.main
        with torch.no_grad():
            x = (self.param() if image is None else image).detach()
        x.requires_grad_(need_grad and main is not None)
        with torch.set_grad_enabled(x.requires_grad):
            acts = self.forward(self.ext, self.pipe(x, None))
            full = self.objective(acts)
            mv = main(acts) if main is not None else None
            zero = [False] * self.b
            if x.requires_grad and mv is not None:
                (g,) = torch.autograd.grad(mv.sum(), x)
                zero = (g.flatten(1).abs().amax(1) == 0).tolist()
        return (
            full.detach().float().cpu().numpy(),
            None if mv is None else mv.detach().float().cpu().numpy(),
            zero,
        )

    def who(self, idx: Sequence[int]) -> str:
        names = [
            f"unit {self.units[i]}" if self.units[i] >= 0 else f"image {self.ids[i]}" for i in idx
        ]
        return ", ".join(dict.fromkeys(names))

    # -- dead units -----------------------------------------------------------------------------
    def probe_dead_start(self) -> Generator[Event, None, None]:
        """Images with zero objective gradient on the start image: the redirected ReLU gradient
        for the first steps, or (no ReLU to redirect) a stronger random start."""
        s = self.settings
        if s.relu_override_steps > 0 and self.main is not None and s.steps > 0:
            _, _, zero = self.probe(True)
            dead = self.dead_start = [i for i, z in enumerate(zero) if z]
            if dead and relu_override(self.ext) is not None:
                self.override_until = s.relu_override_steps
                yield NoticeEvent(
                    f"{self.who(dead)}: zero gradient on the start image; redirecting ReLU "
                    f"gradients for the first {self.override_until} steps."
                )
            elif dead:  # no ReLU to override: only the stronger random start is left
                self.param.reinit_(dead, RESTART_SD)
                self.restarted = True
                yield NoticeEvent(
                    f"{self.who(dead)}: zero gradient on the start image; starting from a "
                    "stronger random image."
                )
        can_redirect = s.relu_override_steps > 0 and self.main is not None
        self.ext_o = relu_override(self.ext) if can_redirect else None
        self.redirect[self.dead_start] = True
        self.died = set(self.dead_start)
        self.watched = list(self.dead_start) if self.override_until else []
        self.fresh_start = set(self.dead_start) if self.restarted else set()

    def _died_mid_run(self, step: int, values: np.ndarray) -> Generator[Event, None, None]:
        """An image whose objective falls to exactly 0 mid-run has closed every gate on its way
        (a ReLU's or a hard sigmoid's): its gradient is gone, so it gets the redirected
        gradients for ``relu_override_steps`` steps, once, instead of ending dead."""
        n = self.settings.relu_override_steps
        fresh = [i for i in np.flatnonzero(values == 0.0).tolist() if i not in self.died]
        if fresh and self.ext_o is not None and step > 1:
            self.died.update(fresh)
            self.watched.extend(fresh)
            self.redirect[fresh] = True
            self.override_until = max(self.override_until, step + n)
            yield NoticeEvent(
                f"{self.who(fresh)}: zero objective at step {step}; redirecting gradients for "
                f"{n} steps."
            )

    def _revive(self, step: int) -> Generator[Event, None, None]:
        """The override window is over: the images it did not revive restart from a stronger
        start with another window, once per image; the others leave the redirect."""
        _, _, zero = self.probe(True)
        watched = self.watched
        revived = [i for i in watched if not zero[i]]
        still = [i for i in watched if zero[i] and i not in self.fresh_start]
        self.redirect[[i for i in watched if i not in still]] = False
        watched.clear()
        if revived:
            yield NoticeEvent(f"{self.who(revived)}: revived by the ReLU gradient override.")
        if still:  # one stronger random restart per image, with another window
            self.restarted = True
            self.fresh_start.update(still)
            watched.extend(still)
            self.param.reinit_(still, RESTART_SD)
            self.tail.forget(still)
            state = self.opt.state.get(self.param.separate, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][still] = 0
            self.override_until = step - 1 + self.settings.relu_override_steps
            self.redirect.zero_()
            self.redirect[still] = True
            yield NoticeEvent(
                f"{self.who(still)}: still no gradient; restarting from a stronger random image."
            )

    # -- one step -------------------------------------------------------------------------------
    def before_step(self, step: int) -> Generator[Event, None, None]:
        """The schedule before ``step``: learning rate, the override's end, the next octave."""
        s = self.settings
        if self.anneal:
            for group in self.opt.param_groups:
                group["lr"] = learning_rate(step, self.end, s.lr, self.anneal, s.lr_final)
        if self.watched and step == self.override_until + 1:
            yield from self._revive(step)
        octaves = self.octaves
        if len(octaves) > 1 and any(first == step > 1 for first, _ in octaves):
            size = next(hw for first, hw in octaves if first == step)  # the next octave
            with torch.no_grad():
                self.setup(size, self.param().detach())

    def step(self, step: int) -> torch.Tensor:
        """One optimizer step; returns [loss, value per image] (detached, float32)."""
        over = self.ext_o is not None and step <= self.override_until
        try:
            x01 = self.param()
            self.tail.add(step, self.end, x01)
            xg = x01 if self.grad_tf is None else self.grad_tf(x01)
            xin = self.pipe(xg, None if self.tf.identity else self.tf.draw())
            acts = (
                self.forward(self.ext_o, xin, self.redirect)  # type: ignore[arg-type]  # ext_o is set whenever the override runs
                if over
                else self.forward(self.ext, xin)
            )
            values = self.objective(acts)
            loss = -values.sum()
            pen = reg.penalties(x01, self.settings)
            if pen is not None:
                loss = loss + pen.sum()
            own = getattr(self.objective, "image_penalty", None)  # an objective's pixel term
            if own is not None:
                loss = loss + own(x01).sum()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            reg.filter_image_(self.param, step, self.settings)
            stats = torch.cat([loss.detach().reshape(1).float(), values.detach().float()])
        except Exception as ex:
            if _is_oom(ex):
                raise _OutOfMemory(self.b, step) from None
            raise
        self.steps_done = step
        return stats

    def report(self, step: int, stats: torch.Tensor) -> Generator[Event, None, None]:
        """The step's ``StepEvent`` (on CUDA the previous step's, while this one runs), the
        early stop and a preview when one is due."""
        s = self.settings
        if self.cuda:
            host = torch.empty(stats.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(stats, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            yield from self.flush()  # the previous step's numbers, while this step runs
            self._pending = (step, host, ev)
        else:
            yield from self._numbers(step, stats.numpy().astype(np.float64))
        if s.preview_every and step % s.preview_every == 0 and step != self.end:
            yield from self.flush()
            yield PreviewEvent(step, self.param.to_uint8(), **self.where)

    def flush(self) -> Generator[Event, None, None]:
        """The numbers of a step still on their way from the GPU."""
        if self._pending is None:
            return
        step, host, ev = self._pending
        self._pending = None
        ev.synchronize()
        yield from self._numbers(step, host.numpy().astype(np.float64))

    def _numbers(self, step: int, arr: np.ndarray) -> Generator[Event, None, None]:
        _check_finite(step, float(arr[0]), arr[1:])
        yield StepEvent(step, self.settings.steps, float(arr[0]), arr[1:].copy(), **self.where)
        yield from self.watch(step, arr[1:])

    def watch(self, step: int, values: np.ndarray) -> Generator[Event, None, None]:
        """A mid-run death (``_died_mid_run``); early stop: once converged, only the
        learning-rate anneal is left to run."""
        s = self.settings
        yield from self._died_mid_run(step, values)
        if (
            self.end == s.steps
            and self.stopper.update(step, values)  # type: ignore[arg-type]  # a float ndarray reads as a Sequence
            and step + self.anneal < s.steps
        ):
            self.end = step + self.anneal
            yield NoticeEvent(
                f"Converged at step {step} (no image gained more than {s.early_stop:g} "
                f"of its objective over {s.early_stop_window} steps); stopping after "
                f"step {self.end} of {s.steps}."
            )

    # -- the result -----------------------------------------------------------------------------
    def finish(self) -> Generator[Event, None, _CoreOut]:
        """The saved image (the last, or the mean of the last steps), its values, dead images."""
        yield from self.flush()
        with torch.no_grad():
            final = self.tail.mean(self.param()) if self.tail.n > 1 else None
        images = self.param.to_uint8() if final is None else images_uint8(final)
        yield PreviewEvent(self.steps_done, images, **self.where)
        values_np, main_np, zero = self.probe(not self.was_cancelled, final)
        dead = [i for i, z in enumerate(zero) if z] if not self.was_cancelled else []
        if dead:
            yield NoticeEvent(
                f"{self.who(dead)}: dead (zero gradient on the final image); the image is not "
                "a result."
            )
        result = RenderResult(
            images=images,
            values=values_np,
            steps_done=self.steps_done,
            cancelled=self.was_cancelled,
            dead=[self.ids[i] for i in dead],
            seconds=time.perf_counter() - self.t0,
            device=describe_device(self.device),
            batch=self.b,
        )
        return _CoreOut(result, main_np, self.ids)


def _render_core(*args: Any, **kw: Any) -> Generator[Event, None, _CoreOut]:
    """The old entry point: ``BatchRender(model, objective, settings, slots, device, cancelled,
    pre).run(start)`` with ``start`` the eighth argument."""
    start = kw.pop("start", args[7] if len(args) > 7 else None)
    return (yield from BatchRender(*args[:7], **kw).run(start))
