"""Run core jobs off the GUI thread and hand their events to the view that asked for them.

The article's views (``qt_figures``, ``qt_combination``, ``qt_position``, ``qt_direction``) never
render: they build a job *spec* and call a ``Submit`` callable, ``submit(spec, sink) -> cancel``.
Whoever implements it (the window's job controller, or ``JobRunner`` below) turns the spec into a
``Job`` with the open model, the settings dock's settings and the model's preprocessing, runs it
on a worker thread, and calls the sink's methods on the GUI thread:

* ``sink.feed(event)`` for every ``StepEvent``/``PreviewEvent``/``NoticeEvent``/``UnitDoneEvent``;
* ``sink.finished(result)`` with the ``JobResult`` (``result.cancelled`` when cancelled);
* ``sink.failed(message)`` with one sentence when the job could not run.

``cancel()`` stops the job between two steps.  ``JobRunner`` is a complete implementation for
tests and for a window without a controller of its own; torch is imported on its worker only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal


class JobSink(Protocol):
    """What a view gives the job controller to receive one job's progress (GUI thread)."""

    def feed(self, event: Any) -> None: ...

    def finished(self, result: Any) -> None: ...

    def failed(self, message: str) -> None: ...


#: ``submit(spec, sink) -> cancel``: run a job spec for the open model and current settings.
Submit = Callable[[Any, JobSink], Callable[[], None]]


class JobRunner(QObject):
    """One job at a time on a worker thread; events are delivered to sinks on the GUI thread.

    ``model()`` and ``settings()`` are read when a spec is submitted (the job captures them), so
    later changes never alter a queued job.  ``step_hz`` throttles step events for displays.
    """

    _event = Signal(object, object)  # sink, event
    _finished = Signal(object, object)  # sink, JobResult
    _failed = Signal(object, str)  # sink, message

    def __init__(
        self,
        model: Callable[[], Any],
        settings: Callable[[], Any],
        parent: QObject | None = None,
        *,
        step_hz: float = 20.0,
    ) -> None:
        super().__init__(parent)
        self._model, self._settings, self._hz = model, settings, step_hz
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fvdesk-figure")
        self._flags: set[threading.Event] = set()
        self._futures: set[Future] = set()
        self._closed = False
        self._event.connect(lambda sink, ev: sink.feed(ev))
        self._finished.connect(lambda sink, res: sink.finished(res))
        self._failed.connect(lambda sink, msg: sink.failed(msg))

    def submit(self, spec: Any, sink: JobSink) -> Callable[[], None]:
        """Queue ``spec``; returns the function that cancels it."""
        from fvdesk.core.optim.jobs import Job

        if self._closed:
            sink.failed("The renderer has shut down.")
            return lambda: None
        model = self._model()
        if model is None:
            sink.failed("Open a model first.")
            return lambda: None
        try:
            job = Job.for_model(model, spec, self._settings())
        except Exception as exc:  # noqa: BLE001 - settings rejected: one sentence, no job
            from fvdesk.gui.qt_worker import error_text

            sink.failed(error_text(exc))
            return lambda: None
        flag = threading.Event()
        self._flags.add(flag)
        fut = self._pool.submit(self._work, model, job, flag, sink)
        self._futures.add(fut)
        fut.add_done_callback(self._futures.discard)
        return flag.set

    def busy(self) -> bool:
        return any(not f.done() for f in self._futures)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Cancel everything and wait for the worker; True when it stopped."""
        self._closed = True
        for flag in list(self._flags):
            flag.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for f in list(self._futures):
            with contextlib.suppress(Exception):  # errors already went to the sink
                f.result(timeout=timeout)
        return not self.busy()

    def _work(self, model: Any, job: Any, flag: threading.Event, sink: JobSink) -> None:
        try:
            if flag.is_set():
                return
            from fvdesk.core.optim.drive import drive
            from fvdesk.core.optim.run import run_job

            result = drive(
                run_job(model, job, flag), lambda ev: self._event.emit(sink, ev), step_hz=self._hz
            )
        except Exception as exc:  # noqa: BLE001 - every failure is one sentence for the view
            from fvdesk.gui.qt_worker import error_text

            self._failed.emit(sink, error_text(exc))
            return
        finally:
            self._flags.discard(flag)
        self._finished.emit(sink, result)
