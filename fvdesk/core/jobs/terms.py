"""The terms of an objective and how people write them: ``Term`` (one unit's objective, weighted),
the one caption of a unit or a combination, and objective expressions (``parse_objective``):
``"L:12 + 0.5*L:40 - L:7"``; ``L:12@3,4`` is the neuron at x=3, y=4; ``prob(L:3)`` names a kind.
Terms are separated by `` + `` or `` - `` with spaces around them (layer names may contain ``-``
and ``+``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.kinds import UNIT_KINDS

UnitKind = Literal["neuron", "channel", "deepdream", "logit", "prob"]
# UNIT_KINDS (a unit's objective kinds) and CLASS_KINDS (those reading class scores) are the
# vocabulary of fvdesk.core.optim.kinds, re-exported here.


def check_kind(kind: str) -> str:
    if kind not in UNIT_KINDS:
        raise ConfigError(f"Unknown objective kind {kind!r}; use one of {', '.join(UNIT_KINDS)}.")
    return kind


def default_kind(layer: Any) -> str:
    """The natural objective of a layer's units: a class logit for vectors, else the channel."""
    return "logit" if getattr(layer, "kind", "feature") == "vector" else "channel"


@dataclass(frozen=True)
class Term:
    """One weighted unit objective: ``weight * kind(layer, unit)`` (at ``x, y`` for a neuron)."""

    layer: str
    unit: int
    kind: str = "channel"
    weight: float = 1.0
    x: int | None = None
    y: int | None = None

    def __post_init__(self) -> None:
        check_kind(self.kind)
        if not math.isfinite(float(self.weight)):
            raise ConfigError(f"The weight of {self.layer}:{self.unit} must be finite.")

    def caption(self, *, signed: bool = False) -> str:
        """``0.5·layer:12@3,4`` (``+``/``−`` in front when ``signed``)."""
        w = abs(self.weight) if signed else self.weight
        scale = "" if w == 1 else "−" if w == -1 else f"{w:g}·"
        body = f"{self.layer}:{self.unit}" if self.unit >= 0 else self.layer
        if self.x is not None or self.y is not None:
            body += f"@{_pos(self.x)},{_pos(self.y)}"
        if self.kind not in ("channel", "logit", "neuron"):
            body = f"{self.kind}({body})"
        if not signed:
            return scale + body
        return f"{'−' if self.weight < 0 else '+'} {scale}{body}"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Term:
        try:
            return cls(
                layer=str(d["layer"]),
                unit=int(d["unit"]),
                kind=str(d.get("kind", "channel")),
                weight=float(d.get("weight", 1.0)),
                x=None if d.get("x") is None else int(d["x"]),
                y=None if d.get("y") is None else int(d["y"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"Invalid objective term {d!r}: {e}.") from None


def _pos(v: int | None) -> str:
    return "c" if v is None else str(v)


def combination_caption(terms: Sequence[Term]) -> str:
    """``a:1 + 0.5·b:2 − c:3``: the one way a combination is written for people."""
    text = " ".join(t.caption(signed=True) for t in terms)
    return text[2:] if text.startswith("+ ") else text.replace("− ", "−", 1)


def unit_caption(layer: str, unit: int, *, label: str | None = None, facet: int = 0,
                 negative: bool = False, kind: str = "channel") -> str:  # fmt: skip
    """The one caption of a rendered unit (tiles, galleries, contact sheets, the atlas)."""
    name = layer if unit < 0 else f"{layer}:{unit}"
    if kind == "deepdream":
        name = f"deepdream({layer})"
    parts = [("−" if negative else "") + name]
    if label:
        parts.append(label)
    if facet:
        parts.append(f"#{facet}")
    return " ".join(parts)


_SPLIT = re.compile(r"\s+([+-])\s+")
_TERM = re.compile(
    r"^(?:(?P<w>[0-9.]+(?:e[+-]?\d+)?)\s*\*\s*)?"
    r"(?:(?P<kind>[a-z]+)\((?P<inner>.+)\)|(?P<plain>.+))$",
    re.IGNORECASE,
)
_UNIT = re.compile(r"^(?P<layer>.+):(?P<unit>\d+)(?:@(?P<x>\d+),(?P<y>\d+))?$")


def parse_objective(text: str, resolve_kind: Any = None) -> tuple[Term, ...]:
    """``"L:12 + 0.5*L:40 - L:7"`` -> terms.  ``resolve_kind(layer) -> kind`` picks the kind of
    a bare ``L:u`` (channel for feature maps, logit for vectors); ``L:u@x,y`` is a neuron."""
    src = text.strip()
    if not src:
        raise ConfigError("The objective expression is empty.")
    sign = 1.0
    if src[0] in "+-" and (len(src) == 1 or not src[1].isdigit()):
        sign, src = (-1.0 if src[0] == "-" else 1.0), src[1:].lstrip()
    pieces = _SPLIT.split(src)
    signs = [sign] + [(-1.0 if op == "-" else 1.0) for op in pieces[1::2]]
    terms = []
    for s, raw in zip(signs, pieces[0::2], strict=True):
        terms.append(_parse_term(raw.strip(), s, text, resolve_kind))
    return tuple(terms)


def _parse_term(raw: str, sign: float, text: str, resolve_kind: Any) -> Term:
    m = _TERM.match(raw)
    bad = ConfigError(
        f"Cannot read {raw!r} in the objective {text!r}; write terms like "
        "LAYER:UNIT, 0.5*LAYER:UNIT, LAYER:UNIT@X,Y or prob(LAYER:UNIT), joined by ' + ' or ' - '."
    )
    if not m:
        raise bad
    weight = sign * (float(m["w"]) if m["w"] else 1.0)
    body = (m["inner"] or m["plain"]).strip()
    u = _UNIT.match(body)
    if not u or any(c.isspace() for c in body):
        raise bad
    layer = u["layer"]
    x = None if u["x"] is None else int(u["x"])
    y = None if u["y"] is None else int(u["y"])
    kind = (m["kind"] or "").lower()
    if not kind:
        kind = "neuron" if x is not None else (resolve_kind(layer) if resolve_kind else "channel")
    try:
        return Term(layer, int(u["unit"]), kind, weight, x, y)
    except ConfigError as e:
        raise ConfigError(f"In the objective {text!r}: {e}") from None
