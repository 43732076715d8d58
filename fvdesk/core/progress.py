"""Time-left estimates for long work, shared by the command line and the app (no Qt, no torch).

One policy everywhere, so the terminal bar and the window never disagree about what "about a
minute left" means:

* No estimate until there is evidence: at least ``min_fraction`` of the work done and
  ``min_elapsed`` seconds spent (the first steps of a render or a load include warm-up and say
  little about the rest).
* The raw estimate is the average rate since the start, ``elapsed * (1 - f) / f``: it is exact for
  steady work and does not swing with one slow step the way an instantaneous rate does.
* Shown values are smoothed: between two updates the previous estimate counts down with the wall
  clock and is blended with the new raw one, so the text does not jump back and forth.
* Progress that goes backwards (a retried phase, a new job) restarts the estimate there, and work
  that was done before the estimate started (``origin``: a resumed atlas) does not count as speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


def format_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: compact enough for a status bar or a terminal line."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


@dataclass(frozen=True)
class Estimate:
    """Where a piece of work stands at one moment."""

    fraction: float  # 0..1
    elapsed: float  # seconds since the start
    remaining: float | None  # seconds left; None while there is too little evidence

    @property
    def eta_text(self) -> str:
        """``eta 1m05s``, or an empty string when there is no estimate yet."""
        return "" if self.remaining is None else f"eta {format_duration(self.remaining)}"

    def describe(self) -> str:
        """``40% · 12s elapsed · about 18s left`` (what a status bar or tooltip shows)."""
        parts = [f"{self.fraction:.0%}", f"{format_duration(self.elapsed)} elapsed"]
        if self.remaining is not None:
            parts.append(f"about {format_duration(self.remaining)} left")
        return " · ".join(parts)


class EtaEstimator:
    """Turns (fraction done, time) pairs into ``Estimate``s following the module's policy."""

    def __init__(
        self,
        *,
        start: float | None = None,
        origin: float = 0.0,
        min_fraction: float = 0.01,
        min_elapsed: float = 1.0,
        smoothing: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError("smoothing must be in (0, 1]")
        self._clock = clock
        self.min_fraction = float(min_fraction)
        self.min_elapsed = float(min_elapsed)
        self.smoothing = float(smoothing)
        self.reset(start, origin)

    def reset(self, start: float | None = None, origin: float = 0.0) -> None:
        """Start over at ``origin`` (the fraction already done: a resumed job)."""
        self.start = self._clock() if start is None else float(start)
        self._origin = min(max(float(origin), 0.0), 1.0)
        self._fraction = self._origin
        self._shown: float | None = None
        self._last = self.start

    def update(
        self,
        fraction: float | None = None,
        *,
        done: float | None = None,
        total: float | None = None,
        now: float | None = None,
    ) -> Estimate:
        """Record progress, given as ``fraction`` or as ``done`` of ``total``; returns the estimate."""
        if fraction is None:
            if done is None or total is None:
                raise TypeError("give fraction=, or done= and total=")
            fraction = (done / total) if total > 0 else 1.0
        t = self._clock() if now is None else float(now)
        f = min(max(float(fraction), 0.0), 1.0)
        if f < self._fraction:
            self.reset(t, f)
        elapsed = max(0.0, t - self.start)
        self._fraction = f
        if f >= 1.0:
            self._shown, self._last = 0.0, t
            return Estimate(1.0, elapsed, 0.0)
        gained = f - self._origin
        if gained < self.min_fraction or gained <= 0.0 or elapsed < self.min_elapsed:
            self._last = t
            return Estimate(f, elapsed, None)
        raw = elapsed * (1.0 - f) / gained
        if self._shown is None:
            shown = raw
        else:
            counted_down = max(0.0, self._shown - (t - self._last))
            shown = self.smoothing * raw + (1.0 - self.smoothing) * counted_down
        self._shown, self._last = shown, t
        return Estimate(f, elapsed, shown)
