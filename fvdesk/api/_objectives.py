"""Objectives for scripts: ``unit`` and ``objective`` and the ``Objective`` they compose into.

An ``Objective`` is a weighted sum of unit objectives, kept as the user wrote it until it meets a
model: then a bare ``L:12`` becomes the layer's natural kind (a class logit on a vector layer, the
channel on a feature map) exactly as ``fvdesk render --objective`` reads it, and the terms become
the core's ``Term``s of one combination job.  Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.jobs.job import (
    Term,
    check_kind,
    combination_caption,
    default_kind,
    parse_objective,
)

__all__ = ["Objective", "objective", "unit"]


@dataclass(frozen=True)
class _Unit:
    layer: str
    index: int
    kind: str | None  # None: the layer's natural kind, known once a model is given
    x: int | None
    y: int | None

    def term(self, weight: float, kind: str) -> Term:
        return Term(self.layer, self.index, kind, weight, self.x, self.y)


_Part = tuple[float, str | _Unit]


class Objective:
    """What a render maximizes: a weighted sum of unit objectives.

    Made by ``unit(...)`` and ``objective("...")`` and combined with ``+``, ``-``, ``*`` and
    ``/`` by numbers (``unit("L", 3) - 0.5 * objective("L:7")``; ``sum(...)`` works too).
    ``str()`` is the caption the render gets.
    """

    __slots__ = ("_parts",)

    def __init__(self, parts: tuple[_Part, ...]) -> None:
        self._parts = tuple(parts)

    def terms(self, model: Any) -> tuple[Term, ...]:
        """The core's terms for ``model`` (a ``Model``): bare units get their layer's natural
        kind; a layer the model lacks raises ``RenderError`` naming the nearest ones."""
        out: list[Term] = []
        for weight, part in self._parts:
            if isinstance(part, str):
                terms = parse_objective(part, lambda name: default_kind(model.layer(name)))
                out += [replace(t, weight=t.weight * weight) for t in terms]
            else:
                kind = part.kind or default_kind(model.layer(part.layer))
                out.append(part.term(weight, kind))
        for t in out:
            model.layer(t.layer)
        return tuple(out)

    def _scaled(self, k: object) -> Objective:
        if not isinstance(k, Real) or isinstance(k, bool):
            return NotImplemented
        if not math.isfinite(float(k)):
            raise ConfigError(f"An objective's weight must be a finite number, got {k!r}.")
        return Objective(tuple((w * float(k), p) for w, p in self._parts))

    def __add__(self, other: object) -> Objective:
        if isinstance(other, Real) and not isinstance(other, bool) and other == 0:
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self._parts + other._parts)

    __radd__ = __add__  # sum([...]) starts from 0

    def __sub__(self, other: object) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, k: object) -> Objective:
        return self._scaled(k)

    __rmul__ = __mul__

    def __truediv__(self, k: object) -> Objective:
        if isinstance(k, Real) and not isinstance(k, bool) and k == 0:
            raise ConfigError("An objective cannot be divided by zero.")
        return self._scaled(1.0 / float(k)) if isinstance(k, Real) else NotImplemented

    def __neg__(self) -> Objective:
        return self._scaled(-1.0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Objective) and self._parts == other._parts

    def __hash__(self) -> int:
        return hash(self._parts)

    def __str__(self) -> str:
        terms: list[Term] = []
        for weight, part in self._parts:  # kinds as written: captions name only the explicit ones
            if isinstance(part, str):
                terms += [replace(t, weight=t.weight * weight) for t in parse_objective(part)]
            else:
                terms.append(part.term(weight, part.kind or "channel"))
        return combination_caption(terms)

    def __repr__(self) -> str:
        return f"<fvdesk.Objective {self}>"


def objective(text: str) -> Objective:
    """An objective from an expression as ``fvdesk render --objective`` takes it:
    ``"L:12 + 0.5*L:40 - L:7"``, ``L:12@3,4`` (the neuron at x=3, y=4), ``prob(L:3)`` (a kind
    named).  Terms are joined by `` + `` or `` - `` with spaces around them.  A malformed
    expression raises ``ConfigError`` saying what it could not read."""
    if not isinstance(text, str):
        raise ConfigError(f"An objective expression is text like 'L:12 + 0.5*L:40', not {text!r}.")
    parse_objective(text)  # the syntax is checked now; the kinds when a model is given
    return Objective(((1.0, text),))


def unit(
    layer: str, index: int, *, kind: str | None = None, x: int | None = None, y: int | None = None
) -> Objective:
    """The objective of one unit: ``index`` of ``layer`` as ``kind`` (``channel``, ``neuron``,
    ``logit``, ``prob``; default: the layer's natural kind, or ``neuron`` when ``x``/``y``
    place it)."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(f"A unit of {layer} is a whole number >= 0, got {index!r}.")
    if kind is not None:
        check_kind(kind)
    if kind is None and (x is not None or y is not None):
        kind = "neuron"
    return Objective(((1.0, _Unit(str(layer), index, kind, x, y)),))
