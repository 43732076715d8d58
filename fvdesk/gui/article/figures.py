"""The specs of the article's figures that the app's actions start.

``spectrum_spec``/``steepest_spec`` build the specs of the "Regularization Spectrum" and
"Steepest Descent" actions on a unit (or a combination); submit them with the job controller.
How their tiles look (captions, labels, one strip per job) is the core's presentation
(``fvdesk.core.jobs.presentation``), as for every job kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fvdesk.core.jobs.job import SpectrumJob, SteepestJob, Term
from fvdesk.core.optim.variants import spectrum_keys


def spectrum_spec(terms: Sequence[Term], settings: Any) -> SpectrumJob:
    """The row for ``terms``; the learned prior's tile only when ``settings`` name a generator."""
    return SpectrumJob(tuple(terms), variants=spectrum_keys(settings))


def steepest_spec(terms: Sequence[Term]) -> SteepestJob:
    return SteepestJob(tuple(terms))


__all__ = ["spectrum_spec", "steepest_spec"]
