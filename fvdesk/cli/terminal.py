"""A one-line progress bar with ETA on stderr, drawn only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from fvdesk.core.progress import EtaEstimator
from fvdesk.core.progress import format_duration as _duration


class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal (silent in logs and pipes)."""

    def __init__(
        self, total: int, *, enabled: bool, label: str = "", stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self.step = self.steps = 0
        self.start = time.monotonic()
        self._eta = EtaEstimator(start=self.start)
        self._last = 0.0
        self._width = 0

    @staticmethod
    def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
        s = stream or sys.stderr
        return not quiet and hasattr(s, "isatty") and s.isatty()

    def update(
        self,
        *,
        done: int | None = None,
        step: int | None = None,
        steps: int | None = None,
        label: str | None = None,
        force: bool = False,
    ) -> None:
        if done is not None:
            self.done = done
        if step is not None:
            self.step = step
        if steps is not None:
            self.steps = steps
        if label is not None:
            self.label = label
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        bar_w = 24
        filled = int(bar_w * frac)
        bar = "#" * filled + "." * (bar_w - filled)
        est = self._eta.update(frac, now=now)
        eta = f" {est.eta_text}" if est.eta_text and self.done < self.total else ""
        step_text = f" step {self.step}/{self.steps}" if self.steps else ""
        line = f"{self.label} [{bar}] {self.done}/{self.total}{step_text} {_duration(est.elapsed)}{eta}"
        self._draw(line)

    def resume(self, done: int) -> None:
        """Start counting at ``done`` units already finished (they say nothing about speed)."""
        self._eta.reset(time.monotonic(), done / self.total if self.total else 0.0)
        self.update(done=done, force=True)

    def message(self, text: str) -> None:
        """Print a line above the bar (notices), or plainly when the bar is off."""
        if self.enabled:
            self._draw("")
            self.stream.write("\r" + text + "\n")
            self._last = 0.0
            self.update(force=True)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)
