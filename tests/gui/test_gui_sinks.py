"""Per-task event sinks: the render queue hands each task's life to the sink it was submitted
with, so no controller sees (or filters out) another's tasks."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from fvdesk.gui.runtime.worker import RenderQueue, Task, TaskSink  # noqa: E402

GUI = Path(__file__).resolve().parents[2] / "fvdesk" / "gui"


def _work(tag: str, n: int, gate: threading.Event | None = None):
    def start(cancel: threading.Event):
        def gen():
            if gate is not None:
                gate.wait(30)
            for i in range(n):
                yield (tag, i)
            return f"{tag} done"

        return gen()

    return start


def _recorder(log: list):
    return TaskSink(event=lambda t, ev: log.append(("event", t.title, ev)),
                    finished=lambda t, r: log.append(("finished", t.title, r)),
                    failed=lambda t, m, _e: log.append(("failed", t.title, m)),
                    dropped=lambda t: log.append(("dropped", t.title)),
                    started=lambda t: log.append(("started", t.title)))  # fmt: skip


def test_each_task_reaches_only_its_own_sink(qtbot) -> None:
    queue = RenderQueue()
    try:
        a_log: list = []
        b_log: list = []
        gate = threading.Event()
        queue.submit(Task("a", _work("a", 3, gate)), _recorder(a_log))
        queue.submit(Task("b", _work("b", 2)), _recorder(b_log))
        dropped = queue.submit(Task("c", _work("c", 1)), _recorder(b_log))
        queue.cancel_job(dropped)
        gate.set()
        qtbot.waitUntil(lambda: not queue.busy(), timeout=30_000)
        assert a_log == [("started", "a"), *[("event", "a", ("a", i)) for i in range(3)],
                         ("finished", "a", "a done")]  # fmt: skip
        assert b_log[0] == ("dropped", "c")
        assert b_log[1:] == [("started", "b"), ("event", "b", ("b", 0)), ("event", "b", ("b", 1)),
                             ("finished", "b", "b done")]  # fmt: skip
    finally:
        assert queue.shutdown(30_000)


def test_a_failure_goes_to_the_failing_tasks_sink(qtbot) -> None:
    queue = RenderQueue()
    try:
        log: list = []

        def start(cancel):
            raise ValueError("no such layer")

        queue.submit(Task("bad", start), _recorder(log))
        qtbot.waitUntil(lambda: any(e[0] == "failed" for e in log), timeout=30_000)
        assert log[-1] == ("failed", "bad", "Unexpected ValueError: no such layer")
    finally:
        assert queue.shutdown(30_000)


def test_no_gui_module_routes_by_listening_to_every_task() -> None:
    """The queue's ``job_*`` signals are for observers; controllers take their tasks' sinks."""
    broadcast = re.compile(r"\.job_(started|event|finished|failed|dropped)\.connect\(")
    offenders = [str(p.relative_to(GUI)) for p in GUI.rglob("*.py")
                 if broadcast.search(p.read_text(encoding="utf-8"))]  # fmt: skip
    assert offenders == []


def test_the_removed_thread_runner_name_warns_and_gives_the_queue_runner(qtbot) -> None:
    from fvdesk.gui.runtime import runners

    with pytest.warns(DeprecationWarning, match="QueueRunner"):
        cls = runners.ThreadRunner
    r = cls()
    assert isinstance(r, runners.QueueRunner) and isinstance(r.queue, RenderQueue)
    assert r.shutdown(30)
