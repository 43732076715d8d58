"""Slots in batches, and the one out-of-memory policy: a batch that does not fit is retried at
half the size (whole groups), the rest of the work keeps the smaller size; a canvas too small for
the graph is refused with the size that works."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fvdesk.core.device import describe_device
from fvdesk.core.errors import RenderError
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.events import Event, NoticeEvent, RenderResult
from fvdesk.core.optim.failures import _as_oom, _free, _is_too_small, _OutOfMemory
from fvdesk.core.optim.phases import BatchRender, _CoreOut
from fvdesk.core.optim.pipeline import canvas_size
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.slots import Slot


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
            one = BatchRender(model, build(chunk), settings, chunk, device, cancelled, pre)
            out = yield from one.run(first)
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
