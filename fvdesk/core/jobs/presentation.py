"""How each image of a job is shown: its layer, unit, kind, caption, label and strip, for every
front end alike.

A ``SlotView`` is plain data (no torch) derived from a spec and one of its slots.  The runner
files each result under the view of its slot (``fvdesk.core.jobs.run``), the app makes its tiles
from the same views before anything renders, and galleries save the result's caption; so a tile,
a saved item, its contact sheet and the CLI's gallery name an image the same way.  Captions keep
the full layer names (what ``--layer`` takes); front ends elide them, never rewrite them.

A spec type says how its slots look with ``register_view`` (the built-in kinds are below);
a type without one is shown by its title.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fvdesk.core.jobs.dataset_specs import ClusterJob
from fvdesk.core.jobs.job import Job
from fvdesk.core.jobs.specs import (
    CombinationJob,
    DirectionJob,
    InterpolationJob,
    JobSpec,
    SpectrumJob,
    SteepestJob,
    UnitJob,
)
from fvdesk.core.jobs.terms import Term, combination_caption, unit_caption
from fvdesk.core.optim.slots import Slot
from fvdesk.core.optim.variants import variant

#: ``label_of(layer, unit)``: the class name of a unit under the labels in force, or None.
Labeller = Callable[[str, int], "str | None"]


@dataclass(frozen=True)
class SlotView:
    """One image of a job as people see it.

    ``layer``/``unit`` say what it is filed under (``unit`` -1 when the image is not one unit's);
    ``kind`` is the objective kind results and gallery items report (``fvdesk.core.optim.kinds``);
    ``strip`` asks for the job's images on a row of their own (a spectrum, an interpolation).
    """

    slot: int
    layer: str
    unit: int
    facet: int
    kind: str
    negative: bool
    caption: str
    label: str | None = None
    strip: bool = False


Describer = Callable[[Any, Slot, Labeller], SlotView]
_DESCRIBERS: dict[type[JobSpec], Describer] = {}


def register_view(spec_type: type[JobSpec], describe: Describer) -> None:
    """Show the slots of ``spec_type`` jobs with ``describe(spec, slot, label_of)``."""
    _DESCRIBERS[spec_type] = describe


def _no_labels(_layer: str, _unit: int) -> None:
    return None


def slot_view(spec: JobSpec, slot: Slot, label_of: Labeller | None = None) -> SlotView:
    """The view of one slot of ``spec`` (``label_of`` names units; none: no labels)."""
    describe = _DESCRIBERS.get(type(spec))
    if describe is not None:
        return describe(spec, slot, label_of or _no_labels)
    layers = spec.layers
    return SlotView(slot.index, layers[0] if layers else "", slot.unit, slot.facet, spec.type,
                    bool(getattr(spec, "negative", False)),
                    unit_caption(spec.title, -1, facet=slot.facet))  # fmt: skip


def slot_views(spec: JobSpec, label_of: Labeller | None = None) -> list[SlotView]:
    """The views of all slots of ``spec``, in slot order."""
    return [slot_view(spec, s, label_of) for s in spec.slots()]


def labeller(graph: Any, labels: Sequence[str] | None) -> Labeller:
    """``label_of`` under ``labels`` (the core's one rule: ``LayerGraph.unit_label``)."""
    chosen = list(labels) if labels else None
    return lambda layer, unit: graph.unit_label(layer, unit, chosen) if unit >= 0 else None


def job_views(job: Job, graph: Any) -> list[SlotView]:
    """The views of ``job``'s slots, labelled with the labels the job captured."""
    return slot_views(job.spec, labeller(graph, job.labels))


# ------------------------------------------------------------------------------------------------
# The built-in kinds
# ------------------------------------------------------------------------------------------------
def _units(spec: UnitJob, slot: Slot, label_of: Labeller) -> SlotView:
    label = label_of(spec.layer, slot.unit) if slot.unit >= 0 else None
    caption = unit_caption(spec.layer, slot.unit, facet=slot.facet, negative=spec.negative,
                           kind=spec.kind)  # fmt: skip
    return SlotView(slot.index, spec.layer, slot.unit, slot.facet, spec.kind, spec.negative,
                    caption, label)  # fmt: skip


def _terms_label(terms: Sequence[Term], label_of: Labeller) -> str | None:
    return " + ".join(lab for t in terms if (lab := label_of(t.layer, t.unit))) or None


def _combination(spec: CombinationJob, slot: Slot, label_of: Labeller) -> SlotView:
    text = combination_caption(spec.terms)
    name = f"({text})" if spec.negative and len(spec.terms) > 1 else text
    return SlotView(slot.index, spec.terms[0].layer, -1, slot.facet, "combination", spec.negative,
                    unit_caption(name, -1, facet=slot.facet, negative=spec.negative),
                    _terms_label(spec.terms, label_of))  # fmt: skip


def _clusters(spec: ClusterJob, slot: Slot, label_of: Labeller) -> SlotView:
    caption = unit_caption(spec.layer, spec.unit, facet=slot.facet, kind=spec.kind)
    caption += f" (cluster {slot.facet + 1}/{spec.facets})"
    return SlotView(slot.index, spec.layer, spec.unit, slot.facet, "cluster", False, caption,
                    label_of(spec.layer, spec.unit))  # fmt: skip


def _direction(spec: DirectionJob, slot: Slot, _label_of: Labeller) -> SlotView:
    d, f = slot.seed_keys
    caption = spec.describe(d) + (f" #{f}" if f else "")
    return SlotView(slot.index, spec.layer, -1, slot.facet, "direction", spec.negative, caption,
                    strip=spec.count * spec.facets > 1)  # fmt: skip


def _interpolation(spec: InterpolationJob, slot: Slot, _label_of: Labeller) -> SlotView:
    return SlotView(slot.index, spec.a[0].layer, -1, slot.facet, "interpolation", False,
                    f"t={spec.t(slot.index):.2f}", spec.title, strip=True)  # fmt: skip


def _target(terms: Sequence[Term]) -> tuple[str, int]:
    """What a figure of one objective is filed under: its unit, or its first layer (-1)."""
    return terms[0].layer, terms[0].unit if len(terms) == 1 else -1


def _spectrum(spec: SpectrumJob, slot: Slot, _label_of: Labeller) -> SlotView:
    v = variant(spec.variants[slot.index])
    layer, unit = _target(spec.terms)
    return SlotView(slot.index, layer, unit, slot.facet, "spectrum", False, v.caption,
                    f"{v.family} · {v.reference}", strip=True)  # fmt: skip


def _steepest(spec: SteepestJob, slot: Slot, _label_of: Labeller) -> SlotView:
    v, step = spec.metric(slot.index)
    layer, unit = _target(spec.terms)
    caption = f"{v.caption} {'step' if step else 'render'}"
    return SlotView(slot.index, layer, unit, slot.facet, "steepest", False, caption, v.explain,
                    strip=True)  # fmt: skip


register_view(UnitJob, _units)
register_view(CombinationJob, _combination)
register_view(ClusterJob, _clusters)
register_view(DirectionJob, _direction)
register_view(InterpolationJob, _interpolation)
register_view(SpectrumJob, _spectrum)
register_view(SteepestJob, _steepest)


__all__ = [
    "Labeller",
    "SlotView",
    "job_views",
    "labeller",
    "register_view",
    "slot_view",
    "slot_views",
]
