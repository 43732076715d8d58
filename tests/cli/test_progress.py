"""The time-left policy shared by the command line and the app."""

from __future__ import annotations

import io

import pytest

from fvdesk.cli import Progress
from fvdesk.core.progress import Estimate, EtaEstimator, format_duration


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 9.9, 65, 3599, 3600, 7322)] == [
        "0s", "9s", "1m05s", "59m59s", "1h00m", "2h02m",
    ]  # fmt: skip


def test_no_estimate_before_there_is_evidence() -> None:
    eta = EtaEstimator(start=0.0, min_fraction=0.05, min_elapsed=2.0)
    assert eta.update(0.01, now=5.0).remaining is None  # too little done
    assert eta.update(0.2, now=1.0).remaining is None  # too little time
    assert eta.update(0.2, now=2.0).remaining == pytest.approx(8.0)


def test_steady_work_is_estimated_exactly() -> None:
    eta = EtaEstimator(start=100.0)
    for t in range(1, 11):  # 10 % per second
        est = eta.update(done=t, total=10, now=100.0 + t)
        if t < 10:
            assert est.remaining == pytest.approx(10 - t, abs=1e-6)
    assert est.remaining == 0.0 and est.eta_text == "eta 0s"


def test_one_slow_step_does_not_swing_the_estimate() -> None:
    """A stall then a burst: the shown value moves by a fraction of the raw jump."""
    eta = EtaEstimator(start=0.0, smoothing=0.3)
    eta.update(0.5, now=10.0)  # 10 s left
    raw_jump = 30.0 * 0.4 / 0.6  # at 60 % after 30 s the average rate says 20 s left
    shown = eta.update(0.6, now=30.0).remaining
    assert shown is not None and 0.0 < shown < raw_jump


def test_backwards_restarts_and_resumed_work_does_not_count_as_speed() -> None:
    eta = EtaEstimator(start=0.0)
    eta.update(0.5, now=1.0)
    eta.update(0.5, now=5.0)
    est = eta.update(0.1, now=6.0)  # a new phase: start over from there
    assert est.remaining is None and est.elapsed == 0.0
    assert eta.update(0.2, now=8.0).remaining == pytest.approx(2.0 * 0.8 / 0.1)
    resumed = EtaEstimator(start=0.0, origin=0.9)  # an atlas resumed at 90 %
    est = resumed.update(0.95, now=10.0)  # 5 % in 10 s
    assert est.remaining == pytest.approx(10.0)  # not 0.5 s as 95 % in 10 s would say


def test_describe() -> None:
    assert Estimate(0.4, 12.0, 18.0).describe() == "40% · 12s elapsed · about 18s left"
    assert Estimate(0.4, 12.0, None).eta_text == ""


def test_cli_bar_shows_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 5.0, 10.0])
    monkeypatch.setattr("fvdesk.cli.terminal.time.monotonic", lambda: next(clock))
    stream = io.StringIO()
    bar = Progress(4, enabled=True, label="layer", stream=stream)
    bar.update(done=1, force=True)  # 25 % after 5 s: 15 s left at that rate
    assert stream.getvalue().rstrip().endswith("1/4 5s eta 15s")
    bar.update(done=2, force=True)  # 50 % after 10 s: 10 s left, and the count-down agrees
    assert stream.getvalue().rstrip().endswith("2/4 10s eta 10s")
