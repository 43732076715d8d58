"""The one loop that runs a job: the app's worker, the CLI and the atlas all drive generators here.

Engine and job generators yield events and *return* their result (``StopIteration.value``);
``drive`` consumes one, hands each event to the caller's handler and returns the result.  Torch-free,
so the app's GUI thread can import it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from fvdesk.core.optim.events import StepEvent

R = TypeVar("R")
CancelFlag = threading.Event | Callable[[], bool] | None


def cancel_fn(cancel: CancelFlag) -> Callable[[], bool]:
    """``cancel`` (a ``threading.Event``, a zero-argument callable or ``None``) as a predicate."""
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a threading.Event, a zero-argument callable or None")


def drive(
    gen: Generator[Any, None, R],
    on_event: Callable[[Any], None] | None = None,
    *,
    step_hz: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> R:
    """Run ``gen`` to its end, calling ``on_event(ev)`` for each event; return its result.

    ``step_hz`` throttles ``StepEvent``s to that rate for displays (a batch's last step always
    goes through); every other event is delivered.  If ``on_event`` raises, the generator is
    closed (its ``finally`` blocks run) and the exception propagates.
    """
    last = -float("inf")
    gap = 1.0 / step_hz if step_hz else 0.0
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_event is None:
                continue
            if gap and isinstance(ev, StepEvent) and ev.step < ev.steps:
                now = clock()
                if now - last < gap:
                    continue
                last = now
            on_event(ev)
    finally:
        gen.close()
