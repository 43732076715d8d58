"""The objective kinds: one vocabulary for the core, the CLI and the app.

Every result, gallery item and tile says which kind of objective made it
(``presentation.SlotView.kind``): one unit's own objective (``UNIT_KINDS``: what ``--objective``
and the app's menus ask for) or a job's (a combination, a dataset-cluster facet, a figure).  What
a front end may do with an image follows from its kind, and is said here once: whether the
article's figures of its unit apply, what a dataset pass measures for it, and whether its value
is that measure (a probability is not the logit a pass ranks images by).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """What an objective kind is and what may be done with its images."""

    name: str
    unit: bool = False  # one unit's own objective (a kind a user asks for)
    classes: bool = False  # reads class scores: needs a vector layer
    figures: bool = False  # the article's figures of its unit apply (spectrum, steepest)
    measure: str = "channel"  # what a dataset pass measures for its unit: channel or neuron
    comparable: bool = False  # its value is that measure (shown beside the examples)


KINDS: tuple[Kind, ...] = (
    Kind("channel", unit=True, figures=True, comparable=True),
    Kind("neuron", unit=True, measure="neuron", comparable=True),
    Kind("deepdream", unit=True),
    Kind("logit", unit=True, classes=True, figures=True, comparable=True),
    Kind("prob", unit=True, classes=True, figures=True),
    Kind("cluster", comparable=True),
    Kind("combination"),
    Kind("direction"),
    Kind("interpolation"),
    Kind("spectrum"),
    Kind("steepest"),
)
_BY_NAME = {k.name: k for k in KINDS}

#: The objective kinds of a single unit, in the order menus and help texts list them.
UNIT_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if k.unit)
#: Kinds that read class scores (a vector layer).
CLASS_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if k.classes)
#: Kinds of one unit's own image, to which the article's figures of that unit apply.
FIGURE_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if k.figures)
#: Kinds whose value is the measure a dataset pass ranks images by.
COMPARABLE_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if k.comparable)
#: What a dataset-examples pass can measure per unit.
MEASURES: tuple[str, ...] = tuple(dict.fromkeys(k.measure for k in KINDS))


def kind_info(name: str) -> Kind:
    """The ``Kind`` called ``name``; a kind registered elsewhere (a new job type) gets none of
    the capabilities, so nothing is offered for it by mistake."""
    return _BY_NAME.get(name) or Kind(name)


def measure_of(kind: str, spec: Any = None) -> tuple[str, int | None, int | None]:
    """What a dataset pass measures for an image of ``kind``: ``(measure, x, y)``, a neuron at
    its spec's position (``None``: the centre), else the channel (class logits included)."""
    if kind_info(kind).measure == "neuron":
        return "neuron", getattr(spec, "x", None), getattr(spec, "y", None)
    return "channel", None, None


__all__ = [
    "CLASS_KINDS",
    "COMPARABLE_KINDS",
    "FIGURE_KINDS",
    "KINDS",
    "Kind",
    "MEASURES",
    "UNIT_KINDS",
    "kind_info",
    "measure_of",
]
