"""How the article's job kinds appear on the canvas, and the actions that start them.

Importing this module registers tile describers (``runtime.jobs.register_tiles``) for directions,
interpolations, the regularization spectrum row and the steepest-descent view; the last three
lay their tiles out as a strip of their own (one row per job), which is the article's figure
for the user's own model.  The job controller then routes events and results by slot as for any
job, and galleries save and reopen them (``tile_fields`` is the one describer lookup).

``spectrum_spec``/``steepest_spec`` build the specs of the "Regularization Spectrum" and
"Steepest Descent" actions on a unit (or a combination); submit them with the job controller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fvdesk.core.optim.jobs import (
    DirectionJob,
    InterpolationJob,
    Slot,
    SpectrumJob,
    SteepestJob,
    Term,
    combination_caption,
)
from fvdesk.core.optim.variants import STEEPEST, spectrum_keys, variant
from fvdesk.gui.canvas.tiles import caption_layer as short
from fvdesk.gui.runtime.jobs import register_tiles

Labeller = Callable[[str, int], "str | None"]


def _target(terms: Sequence[Term]) -> tuple[str, int]:
    return terms[0].layer, terms[0].unit if len(terms) == 1 else -1


def _spectrum_tiles(spec: SpectrumJob, slot: Slot, _label_of: Labeller) -> dict[str, Any]:
    v = variant(spec.variants[slot.index])
    layer, unit = _target(spec.terms)
    return {"layer": layer, "unit": unit, "kind": "spectrum", "caption": v.caption,
            "label": f"{v.family} · {v.reference}", "strip": True}  # fmt: skip


def _steepest_tiles(spec: SteepestJob, slot: Slot, _label_of: Labeller) -> dict[str, Any]:
    v = STEEPEST[slot.index % 3]
    what = "step" if slot.index < 3 else "render"
    layer, unit = _target(spec.terms)
    return {"layer": layer, "unit": unit, "kind": "steepest", "caption": f"{v.caption} {what}",
            "label": v.explain, "strip": True}  # fmt: skip


def _interpolation_tiles(spec: InterpolationJob, slot: Slot, _label_of: Labeller) -> dict[str, Any]:
    a = combination_caption([Term(short(t.layer), t.unit, t.kind, t.weight) for t in spec.a])
    b = combination_caption([Term(short(t.layer), t.unit, t.kind, t.weight) for t in spec.b])
    return {"layer": spec.a[0].layer, "unit": -1, "kind": "interpolation",
            "caption": f"t={spec.t(slot.index):.2f}", "label": f"{a} → {b}", "strip": True}  # fmt: skip


def _direction_tiles(spec: DirectionJob, slot: Slot, _label_of: Labeller) -> dict[str, Any]:
    d, f = slot.seed_keys
    caption = spec.describe(d).replace(spec.layer, short(spec.layer)) + (f" #{f}" if f else "")
    return {"layer": spec.layer, "unit": -1, "kind": "direction", "caption": caption,
            "strip": spec.count * spec.facets > 1}  # fmt: skip


register_tiles(SpectrumJob, _spectrum_tiles)
register_tiles(SteepestJob, _steepest_tiles)
register_tiles(InterpolationJob, _interpolation_tiles)
register_tiles(DirectionJob, _direction_tiles)


def spectrum_spec(terms: Sequence[Term], settings: Any) -> SpectrumJob:
    """The row for ``terms``; the learned prior's tile only when ``settings`` name a generator."""
    return SpectrumJob(tuple(terms), variants=spectrum_keys(settings))


def steepest_spec(terms: Sequence[Term]) -> SteepestJob:
    return SteepestJob(tuple(terms))


__all__ = ["spectrum_spec", "steepest_spec"]
