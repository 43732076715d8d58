"""When a render changes its step size and when it stops: the learning-rate schedule and early stop.

Plain Python (no torch), so the settings dialog and tests can reason about it without the engine.

Learning rate.  Adam's step is about ``lr`` in every Fourier coefficient whatever the gradient's
size, so at a constant rate the image keeps moving by the same amount each step, towards the
response to *this* step's random transform.  What remains in the final image is partly the last
few steps' transform-specific detail: fine texture that a slightly shifted image no longer
answers to.  Annealing the rate over the last part of the render (cosine, to ``lr_final`` times
the rate) lets the image settle on what all transforms agree on, which raises the robust
objective and lowers the high-frequency share at no cost per step (``benchmarks/README.md``).

Early stop.  The objective under random transforms is noisy step to step, so convergence is
judged on window means: every ``window`` steps the mean per-image objective of the last window is
compared with the previous window's; when no image gained more than ``tol`` (relative) the render
is converged, and it then only anneals the learning rate (``anneal_steps``) before it stops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def anneal_steps(steps: int, anneal: float) -> int:
    """How many final steps of a ``steps``-step render anneal the learning rate."""
    return max(0, min(steps, round(steps * anneal)))


def learning_rate(step: int, end: int, lr: float, anneal: int, lr_final: float) -> float:
    """The rate at ``step`` (1-based) of a render that ends at step ``end``.

    Constant ``lr`` until the last ``anneal`` steps, then a half cosine down to ``lr * lr_final``
    reached at ``end``.
    """
    start = end - anneal
    if anneal <= 0 or step <= start:
        return lr
    t = min(1.0, (step - start) / anneal)
    return lr * (lr_final + (1.0 - lr_final) * 0.5 * (1.0 + math.cos(math.pi * t)))


class EarlyStop:
    """Decides, from per-image objective values step by step, when a render has converged."""

    def __init__(self, tol: float, window: int) -> None:
        if tol < 0 or window < 1:
            raise ValueError(f"early stop needs tol >= 0 and window >= 1, got {tol}, {window}")
        self.tol, self.window = float(tol), int(window)
        self._sum: list[float] | None = None
        self._count = 0
        self._previous: list[float] | None = None
        self.converged_at: int | None = None

    @property
    def enabled(self) -> bool:
        return self.tol > 0

    def update(self, step: int, values: Sequence[float]) -> bool:
        """Add one step's values; True (once, and from then on) when converged at this step."""
        if not self.enabled:
            return False
        if self.converged_at is not None:
            return True
        vals = [float(v) for v in values]
        if self._sum is None or len(self._sum) != len(vals):
            self._sum, self._count = [0.0] * len(vals), 0
        self._sum = [a + b for a, b in zip(self._sum, vals, strict=True)]
        self._count += 1
        if self._count < self.window:
            return False
        mean = [s / self._count for s in self._sum]
        self._sum, self._count = [0.0] * len(vals), 0
        previous, self._previous = self._previous, mean
        if previous is None:
            return False
        gains = [(m - p) / max(abs(m), 1e-12) for m, p in zip(mean, previous, strict=True)]
        if all(g <= self.tol for g in gains):
            self.converged_at = step
            return True
        return False
