"""What to render: ``JobSpec`` (registered by its ``type`` name, so a provenance record names
its spec) and the render kinds: units of a layer, a combination, directions, an interpolation,
the article's spectrum row and steepest-descent view.  Every spec expands into ``Slot``s, one per
image, with the keys of its seed and the group of slots that must share its batch."""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from fvdesk.core.errors import ConfigError, RenderError
from fvdesk.core.jobs.terms import Term, check_kind, combination_caption
from fvdesk.core.optim.kinds import CLASS_KINDS
from fvdesk.core.optim.slots import Slot
from fvdesk.core.optim.variants import SPECTRUM, STEEPEST, Variant, variant

#: Diversity weight relative to the unit objective's magnitude (objectives.WithDiversity).  Under
#: the default recipe's smoother images the Gram term moves easily: at 3.0 (the earlier recipe's
#: value) one facet in four fell to 0.2-0.4 of the unit's value on the demo model.
DEFAULT_DIVERSITY = 1.25


_SPECS: dict[str, type[JobSpec]] = {}


class JobSpec:
    """What to render.  Subclasses are frozen dataclasses registered by their ``type`` name."""

    type: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type:
            _SPECS[cls.type] = cls

    # -- what every spec says about itself ------------------------------------------------------
    def slots(self) -> list[Slot]:
        raise NotImplementedError

    @property
    def layers(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def title(self) -> str:
        raise NotImplementedError

    def validate(self, graph: Any) -> None:
        """Raise an ``FvdeskError`` naming the first layer or unit ``graph`` does not have."""
        for name in self.layers:
            graph[name]  # RenderError with suggestions

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        for f in fields(self):  # type: ignore[arg-type]  # every spec class is a dataclass
            v = getattr(self, f.name)
            if isinstance(v, tuple) and v and isinstance(v[0], Term):
                v = [t.to_dict() for t in v]
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> JobSpec:
        if not isinstance(d, dict) or d.get("type") not in _SPECS:
            what = d.get("type") if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"Unknown job type {what!r}; known: {', '.join(sorted(_SPECS))}.")
        cls = _SPECS[d["type"]]
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # every spec class is a dataclass
        kw = {k: v for k, v in d.items() if k in names}
        try:
            return cls._from_kwargs(kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"Invalid {d['type']} job: {e}.") from None

    @classmethod
    def _from_kwargs(cls, kw: dict[str, Any]) -> JobSpec:
        return cls(**kw)


def _check_facets(facets: int) -> int:
    if isinstance(facets, bool) or not isinstance(facets, int) or facets < 1:
        raise ConfigError(f"A job needs at least one facet per unit, got {facets!r}.")
    return facets


@dataclass(frozen=True)
class UnitJob(JobSpec):
    """Units of one layer, ``facets`` images each (made diverse when facets > 1).

    ``x, y`` place a neuron objective (``None``: the centre).  ``diversity_layer`` defaults to the
    layer itself, or the last feature map before a vector layer.
    """

    type: ClassVar[str] = "units"

    layer: str
    units: tuple[int, ...] = ()
    kind: str = "channel"
    negative: bool = False
    facets: int = 1
    x: int | None = None
    y: int | None = None
    diversity_weight: float = DEFAULT_DIVERSITY
    diversity_layer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        check_kind(self.kind)
        _check_facets(self.facets)
        if not math.isfinite(float(self.diversity_weight)) or self.diversity_weight < 0:
            raise ConfigError(
                f"The diversity weight must be a finite number >= 0, got {self.diversity_weight!r}."
            )
        if self.kind != "deepdream" and not self.units:
            raise ConfigError(f"A {self.kind} job on {self.layer} needs at least one unit.")

    @property
    def unit_list(self) -> list[int]:
        return [-1] if self.kind == "deepdream" else list(self.units)

    @property
    def coupled(self) -> bool:
        return self.facets > 1 and self.diversity_weight > 0

    def slots(self) -> list[Slot]:
        out: list[Slot] = []
        for gi, u in enumerate(self.unit_list):
            for f in range(self.facets):
                out.append(Slot(len(out), u, f, (u, f), gi if self.coupled else len(out)))
        return out

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @property
    def title(self) -> str:
        if self.kind == "deepdream":
            return f"deepdream({self.layer})"
        n = len(self.units)
        return f"{self.layer}:{self.units[0]}" if n == 1 else f"{self.layer} ({n} units)"

    def validate(self, graph: Any) -> None:
        lay = graph[self.layer]
        if self.kind in CLASS_KINDS and lay.kind != "vector":
            raise RenderError(
                f"A {self.kind} objective needs a vector layer (class scores); "
                f"{self.layer} is a feature map."
            )
        n = lay.channels
        bad = [u for u in self.units if not 0 <= u < n] if self.kind != "deepdream" else []
        if bad and n:
            raise RenderError(
                f"Unit {bad[0]} does not exist: layer {self.layer} has {n} channels (0-{n - 1})."
            )
        _check_position(lay, self.x, self.y)


def _terms(value: Any, what: str) -> tuple[Term, ...]:
    terms = tuple(t if isinstance(t, Term) else Term.from_dict(t) for t in value)
    if not terms:
        raise ConfigError(f"{what} needs at least one term.")
    return terms


def _validate_terms(terms: Sequence[Term], graph: Any) -> None:
    for t in terms:
        UnitJob(t.layer, (t.unit,), kind=t.kind, x=t.x, y=t.y).validate(graph)


class _OnTerms(JobSpec):
    """A spec about one weighted sum of unit objectives (``self.terms``)."""

    terms: tuple[Term, ...]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.layer for t in self.terms))

    def validate(self, graph: Any) -> None:
        _validate_terms(self.terms, graph)


@dataclass(frozen=True)
class CombinationJob(_OnTerms):
    """Neuron arithmetic: ``facets`` images of one weighted sum of unit objectives."""

    type: ClassVar[str] = "combination"

    terms: tuple[Term, ...]
    negative: bool = False
    facets: int = 1
    diversity_weight: float = DEFAULT_DIVERSITY
    diversity_layer: str | None = None

    def __post_init__(self) -> None:
        terms = tuple(t if isinstance(t, Term) else Term.from_dict(t) for t in self.terms)
        object.__setattr__(self, "terms", terms)
        if not terms:
            raise ConfigError("A combination needs at least one term.")
        _check_facets(self.facets)

    @property
    def coupled(self) -> bool:
        return self.facets > 1 and self.diversity_weight > 0

    def slots(self) -> list[Slot]:
        # seeds as plain ``render(batch=facets)`` draws them: one key, the image index
        return [Slot(f, -1, f, (f,), 0 if self.coupled else f) for f in range(self.facets)]

    @property
    def title(self) -> str:
        return combination_caption(self.terms)


@dataclass(frozen=True)
class DirectionJob(JobSpec):
    """Directions in a layer's channel space (the article's "random directions"), one image each.

    ``seeds``: seeded random unit vectors (``objectives.random_direction``); ``vectors``: explicit
    directions (the rows of a ``.npy`` file: ``source`` names it, ``sha256`` pins its bytes; the
    values themselves are recorded, so a provenance record needs no file to reproduce).
    """

    type: ClassVar[str] = "direction"

    layer: str
    seeds: tuple[int, ...] = ()
    vectors: tuple[tuple[float, ...], ...] = ()
    source: str = ""
    sha256: str = ""
    negative: bool = False
    facets: int = 1
    diversity_weight: float = DEFAULT_DIVERSITY
    diversity_layer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(v) for v in self.seeds))
        vecs = tuple(tuple(float(x) for x in v) for v in self.vectors)
        object.__setattr__(self, "vectors", vecs)
        _check_facets(self.facets)
        if bool(self.seeds) == bool(vecs):
            raise ConfigError("A direction job needs either random seeds or explicit vectors.")
        if any(not v or not all(math.isfinite(x) for x in v) for v in vecs):
            raise ConfigError(f"The directions from {self.source or 'the job'} must be finite.")
        if any(all(x == 0 for x in v) for v in vecs):
            raise ConfigError(f"A direction from {self.source or 'the job'} is all zeros.")

    @classmethod
    def from_file(cls, layer: str, path: str | os.PathLike[str], **kwargs: Any) -> DirectionJob:
        """Directions from a ``.npy`` file: one vector (C,) or one per row (K, C)."""
        import numpy as np

        p = Path(path)
        try:
            data = p.read_bytes()
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except FileNotFoundError:
            raise ConfigError(f"{p} does not exist, so it holds no direction.") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{p} is not a NumPy .npy array ({e}).") from None
        if a.ndim not in (1, 2) or a.size == 0 or not np.issubdtype(a.dtype, np.number):
            raise ConfigError(
                f"{p} holds an array of shape {a.shape} ({a.dtype}); a direction file holds "
                "numbers of shape (C,) or (K, C) for the layer's C channels."
            )
        rows = np.atleast_2d(a.astype(np.float64))
        if not np.isfinite(rows).all():
            raise ConfigError(f"{p} holds NaN or infinite values, so it is not a direction.")
        sha = hashlib.sha256(data).hexdigest()
        return cls(
            layer, vectors=tuple(map(tuple, rows.tolist())), source=str(p), sha256=sha, **kwargs
        )

    @property
    def count(self) -> int:
        return len(self.seeds) or len(self.vectors)

    @property
    def coupled(self) -> bool:
        return self.facets > 1 and self.diversity_weight > 0

    def slots(self) -> list[Slot]:
        # ``facet`` numbers the job's images (a gallery keys items by layer, unit and facet);
        # the seed keys hold (direction, facet)
        out: list[Slot] = []
        for d in range(self.count):
            for f in range(self.facets):
                n = len(out)
                out.append(Slot(n, -1, n, (d, f), d if self.coupled else n))
        return out

    def describe(self, d: int) -> str:
        """``dir(L, seed 3)`` or ``dir(L, file.npy #2)``: how direction ``d`` is named."""
        if self.seeds:
            what = f"seed {self.seeds[d]}"
        else:
            name = Path(self.source).name if self.source else "vector"
            what = name + (f" #{d}" if len(self.vectors) > 1 else "")
        return f"{'−' if self.negative else ''}dir({self.layer}, {what})"

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @property
    def title(self) -> str:
        if self.count == 1:
            return self.describe(0)
        kind = "random" if self.seeds else Path(self.source).name or "vectors"
        return f"dir({self.layer}, {self.count} {kind})"

    def validate(self, graph: Any) -> None:
        n = graph[self.layer].channels
        bad = [len(v) for v in self.vectors if len(v) != n]
        if bad:
            raise RenderError(
                f"The direction from {self.source or 'the job'} has {bad[0]} values, but layer "
                f"{self.layer} has {n} channels."
            )


@dataclass(frozen=True)
class InterpolationJob(JobSpec):
    """``frames`` images from objective ``a`` to ``b`` (the article's interpolation).

    Frame ``i`` maximizes ``(1 - t) a + t b`` with ``t = i / (frames - 1)``, plus a small
    alignment term (neighbouring frames' activations in a lower layer alike) and, with
    ``shared``, Lucid's shared low-resolution image components, so the frames line up.  All
    frames are optimized in one batch.
    """

    type: ClassVar[str] = "interpolation"

    a: tuple[Term, ...]
    b: tuple[Term, ...]
    frames: int = 6
    alignment_weight: float = 0.3
    alignment_layer: str | None = None
    shared: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _terms(self.a, "The start of an interpolation"))
        object.__setattr__(self, "b", _terms(self.b, "The end of an interpolation"))
        f = self.frames
        if isinstance(f, bool) or not isinstance(f, int) or f < 2:
            raise ConfigError(f"An interpolation needs at least 2 frames, got {f!r}.")
        w = self.alignment_weight
        if not math.isfinite(float(w)) or w < 0:
            raise ConfigError(f"The alignment weight must be a finite number >= 0, got {w!r}.")

    def slots(self) -> list[Slot]:
        return [Slot(i, -1, i, (i,), 0) for i in range(self.frames)]

    def t(self, i: int) -> float:
        return i / (self.frames - 1)

    @property
    def layers(self) -> tuple[str, ...]:
        names = [t.layer for t in self.a + self.b]
        return tuple(
            dict.fromkeys(names + ([self.alignment_layer] if self.alignment_layer else []))
        )

    @property
    def title(self) -> str:
        return f"{combination_caption(self.a)} → {combination_caption(self.b)}"

    def validate(self, graph: Any) -> None:
        _validate_terms(self.a + self.b, graph)
        if self.alignment_layer:
            graph[self.alignment_layer]


@dataclass(frozen=True)
class SpectrumJob(_OnTerms):
    """The regularization spectrum row: one objective rendered once per variant
    (``fvdesk.core.optim.variants.SPECTRUM``), each with the job's settings turned into the
    variant's."""

    type: ClassVar[str] = "spectrum"

    terms: tuple[Term, ...]
    variants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", _terms(self.terms, "A spectrum row"))
        keys = tuple(self.variants) or tuple(v.key for v in SPECTRUM if v.key != "prior")
        for k in keys:
            variant(k)
        object.__setattr__(self, "variants", keys)

    def slots(self) -> list[Slot]:
        # one seed for the whole row (every variant starts from the same randomness), each
        # variant its own batch (their settings differ) and its own facet (gallery key)
        return [Slot(i, -1, i, (0,), i) for i in range(len(self.variants))]

    @property
    def title(self) -> str:
        return f"spectrum of {combination_caption(self.terms)}"


@dataclass(frozen=True)
class SteepestJob(_OnTerms):
    """The steepest-descent view: from one start image, the first step under the L2, L-infinity
    and decorrelated-Fourier metrics (slots 0-2) and the renders after the settings' steps of
    each (slots 3-5)."""

    type: ClassVar[str] = "steepest"

    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", _terms(self.terms, "A steepest-descent view"))

    def slots(self) -> list[Slot]:
        return [Slot(i, -1, i, (0,), i) for i in range(2 * len(STEEPEST))]

    @staticmethod
    def metric(index: int) -> tuple[Variant, bool]:
        """(the metric of ``variants.STEEPEST``, whether it is a first step) of slot ``index``:
        the one statement of the view's layout (the runner and the captions read it)."""
        return STEEPEST[index % len(STEEPEST)], index < len(STEEPEST)

    @property
    def title(self) -> str:
        return f"steepest descent for {combination_caption(self.terms)}"


def _check_position(layer: Any, x: int | None, y: int | None) -> None:
    spatial = getattr(layer, "spatial", None)
    if x is None and y is None:
        return
    if not spatial:
        raise RenderError(f"Layer {layer.name} has no spatial grid, so a neuron position is moot.")
    h, w = spatial
    for name, v, n in (("x", x, w), ("y", y, h)):
        if v is not None and n and not 0 <= v < n:
            raise RenderError(
                f"Neuron position {name}={v} is outside layer {layer.name} ({w} wide, {h} high)."
            )
