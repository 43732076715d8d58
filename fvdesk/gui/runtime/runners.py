"""Running model work for widgets off the GUI thread: the ``JobRunner`` protocol and the
app's one implementation, ``QueueRunner``.

``QueueRunner`` puts jobs on the app's one ``RenderQueue`` (so a dataset pass never competes with
a render for the cores; Cancel is the queue's) and plain functions on background calls; each job
is submitted with a sink made of its own callbacks, so nothing is looked up by task id.  Callbacks
arrive on the GUI thread; a failure is one sentence.  Tests drive the same runner over their own
queue.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any, Protocol

from PySide6.QtCore import QObject

EventFn = Callable[[Any], None]
DoneFn = Callable[[Any], None]
FailFn = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# Running work off the GUI thread
# ------------------------------------------------------------------------------------------------
class JobRunner(Protocol):
    """What the widgets need from the app: run a core job, or a plain function, off the GUI
    thread; the callbacks are called on the GUI thread."""

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        """Start ``run_job(model, job)``; returns a function that cancels it."""
        ...

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        """Run ``fn()``; its value goes to ``on_done``, a failure's message to ``on_failed``."""
        ...


class QueueRunner(QObject):
    """A ``JobRunner`` over the app's ``RenderQueue`` (jobs take their turn on the render thread,
    so a pass never competes with a render for the cores) and ``BackgroundCall`` (functions)."""

    def __init__(self, queue: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        def start(cancel: threading.Event) -> Any:
            from fvdesk.core.jobs.run import run_job

            return run_job(model, job, cancel)

        return self.run(job.title, start, on_event, on_done, on_failed, job=job, model=model)

    def run(self, title: str, start: Callable[[threading.Event], Any], on_event: EventFn,
            on_done: DoneFn, on_failed: FailFn, *, job: Any = None,
            model: Any = None) -> Callable[[], None]:  # fmt: skip
        """Queue any model work: ``start(cancel)`` returns the generator the render thread
        drives (e.g. clustering examples, which runs the model)."""
        from fvdesk.gui.runtime.worker import Task, TaskSink

        sink = TaskSink(event=lambda _t, ev: on_event(ev),
                        finished=lambda _t, result: on_done(result),
                        failed=lambda _t, message, _exc: on_failed(message),
                        dropped=lambda _t: on_failed("Cancelled before it ran."))  # fmt: skip
        task = self.queue.submit(Task(title, start, job=job, model=model, sink=sink))
        return lambda: self.queue.cancel_job(task)

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        from fvdesk.gui.runtime.worker import BackgroundCall

        bc = BackgroundCall(lambda _progress: fn(), name="fvdesk-examples")
        bc.done.connect(on_done)
        bc.failed.connect(lambda message, _exc: on_failed(message))
        bc.start()


def __getattr__(name: str) -> Any:
    if name == "ThreadRunner":  # removed: a second background mechanism only tests used
        warnings.warn(
            "fvdesk.gui.runtime.runners.ThreadRunner is removed; use QueueRunner(RenderQueue())",
            DeprecationWarning,
            stacklevel=2,
        )
        return _OwnQueueRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _OwnQueueRunner(QueueRunner):
    """What ``ThreadRunner`` callers get now: a ``QueueRunner`` over a render queue of its own."""

    def __init__(self, parent: QObject | None = None) -> None:
        from fvdesk.gui.runtime.worker import RenderQueue

        super().__init__(RenderQueue(), parent)

    def shutdown(self, timeout: float = 10.0) -> bool:
        return self.queue.shutdown(int(timeout * 1000))
