"""What every stage of a load shares: where progress goes, the phase named in errors, the timings
and the warnings collected on the way."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

ProgressFn = Callable[[float, str], None]

#: The seed of every random input the loader makes (the probes and the parity check).
PARITY_SEED = 0


class LoadContext:
    """One load's bookkeeping; ``phase`` is what an unexpected error says the loader was doing."""

    def __init__(self, path: Path, progress: ProgressFn | None) -> None:
        self.path = path
        self._progress = progress
        self.phase = "starting"
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()
        self.warnings: list[str] = []

    def report(self, fraction: float, message: str) -> None:
        if self._progress is not None:
            self._progress(float(min(max(fraction, 0.0), 1.0)), message)

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + (now - self._t)
        self._t = now


def cause(e: BaseException) -> str:
    """An exception as the end of one sentence: its type where that says something, no fx hints."""
    text = " ".join(str(e).split())
    text = text.split(" While executing %", 1)[0]  # torch.fx appends the node and a tlparse hint
    if not text:
        text = type(e).__name__
    elif not text.startswith(type(e).__name__) and type(e) not in (
        RuntimeError,
        ValueError,
        Exception,
    ):
        text = f"{type(e).__name__}: {text}"
    text = text.rstrip(".")
    return text if len(text) <= 300 else text[:297] + "..."
