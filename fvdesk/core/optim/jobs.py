"""Jobs: *what* to render and *how*, and the provenance record that reproduces every image.

A ``Job`` is plain data (no torch): a spec saying what to render (``UnitJob``: units of one layer;
``CombinationJob``: a weighted sum of unit objectives; later kinds register themselves the same
way) plus how (``RenderSettings``, the ``Preprocessing`` in force, the labels in force).  The app,
the CLI and the atlas build the same jobs; ``fvdesk.core.jobs.run.run_job`` runs any of them and
``fvdesk.core.optim.drive.drive`` is the one loop that consumes the events.

Every job expands into ``Slot``s, one per image.  A slot knows its unit, facet and the keys of its
own seed, and which slots must share its batch (a ``group``: facets coupled by the diversity term).
The runner fills batches from whole groups; each finished image carries a provenance record (the
job, its slot, the slots that shared its batch, settings, preprocessing, model hash) from which
``run_job(..., only=batch)`` renders the same batch again, so a saved item reproduces to the same
pixels on CPU.

Objective expressions (``parse_objective``) are how a user writes a combination on the command
line: ``"L:12 + 0.5*L:40 - L:7"``; ``L:12@3,4`` is the neuron at x=3, y=4; ``prob(L:3)`` names a
kind.  Terms are separated by `` + `` or `` - `` with spaces around them (layer names may contain
``-`` and ``+``).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from fvdesk.core.errors import ConfigError, RenderError
from fvdesk.core.model.preprocessing import Preprocessing, parse_preprocessing
from fvdesk.core.optim.kinds import CLASS_KINDS, MEASURES, UNIT_KINDS
from fvdesk.core.optim.provenance import FORMAT as PROVENANCE_FORMAT
from fvdesk.core.optim.provenance import VERSION as PROVENANCE_VERSION
from fvdesk.core.optim.provenance import Provenance
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.variants import SPECTRUM, STEEPEST, Variant, variant

UnitKind = Literal["neuron", "channel", "deepdream", "logit", "prob"]
# UNIT_KINDS (a unit's objective kinds) and CLASS_KINDS (those reading class scores) are the
# vocabulary of fvdesk.core.optim.kinds, re-exported here.
#: Diversity weight relative to the unit objective's magnitude (objectives.WithDiversity).  Under
#: the default recipe's smoother images the Gram term moves easily: at 3.0 (the earlier recipe's
#: value) one facet in four fell to 0.2-0.4 of the unit's value on the demo model.
DEFAULT_DIVERSITY = 1.25


def check_kind(kind: str) -> str:
    if kind not in UNIT_KINDS:
        raise ConfigError(f"Unknown objective kind {kind!r}; use one of {', '.join(UNIT_KINDS)}.")
    return kind


def default_kind(layer: Any) -> str:
    """The natural objective of a layer's units: a class logit for vectors, else the channel."""
    return "logit" if getattr(layer, "kind", "feature") == "vector" else "channel"


# ------------------------------------------------------------------------------------------------
# Terms, slots, captions
# ------------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Slot:
    """One image of a job: its unit and facet, the keys of its seed, and its batch group."""

    index: int
    unit: int
    facet: int
    seed_keys: tuple[int, ...]
    group: int


# ------------------------------------------------------------------------------------------------
# Job specs (what to render)
# ------------------------------------------------------------------------------------------------
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
        for f in fields(self):  # type: ignore[arg-type]  # a mixin of dataclasses
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
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # a mixin of dataclasses
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


#: Weight of the cosine term that steers a cluster facet toward its centroid, relative to the
#: unit objective's magnitude (objectives.Steered).  On the demo model 3 makes every facet the
#: one closest to its own centroid at a cost of 5-30 % of the unit's value; 1 often does not.
DEFAULT_CLUSTER_WEIGHT = 3.0
#: What a dataset-examples pass measures per unit (``kinds.MEASURES``).
EXAMPLE_KINDS: tuple[str, ...] = MEASURES


@dataclass(frozen=True)
class ExamplesJob(JobSpec):
    """Dataset examples: one activation pass over the images under ``root`` for ``targets``
    (layers), keeping each unit's ``top`` highest and ``bottom`` lowest images and a histogram.

    ``kind`` ``channel`` ranks images by the unit's spatial max (and min); ``neuron`` by the
    value at grid position ``x, y`` (the centre when ``None``).  It renders no image (no slots);
    ``fvdesk.core.jobs.passes.run_examples`` is its runner.
    """

    type: ClassVar[str] = "examples"

    root: str
    targets: tuple[str, ...]
    kind: str = "channel"
    x: int | None = None
    y: int | None = None
    top: int = 9
    bottom: int = 9
    batch: int = 32
    engine: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root))
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        if not self.targets:
            raise ConfigError("A dataset-examples job needs at least one layer.")
        if self.kind not in EXAMPLE_KINDS:
            raise ConfigError(
                f"Dataset examples measure {' or '.join(EXAMPLE_KINDS)}, not {self.kind!r}."
            )
        for name in ("top", "bottom", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "batch" else 0):
                raise ConfigError(
                    f"The examples setting {name!r} must be a whole number, got {v!r}."
                )

    def slots(self) -> list[Slot]:
        return []

    @property
    def layers(self) -> tuple[str, ...]:
        return self.targets

    @property
    def title(self) -> str:
        what = self.targets[0] if len(self.targets) == 1 else f"{len(self.targets)} layers"
        return f"examples of {what} in {self.root}"

    def validate(self, graph: Any) -> None:
        for name in self.targets:
            lay = graph[name]
            if self.kind == "neuron":
                if lay.kind != "feature":
                    raise RenderError(
                        f"Layer {name} has no spatial grid, so a neuron position is moot."
                    )
                _check_position(lay, self.x, self.y)


@dataclass(frozen=True)
class ClusterJob(JobSpec):
    """Facets from dataset clusters (the article, after Wei et al. 2015): the unit's top
    examples were clustered by their activation vectors on ``cluster_layer`` (at the unit's
    max position, or spatially averaged when ``pooled``); facet ``f`` maximizes the unit plus a
    cosine term toward ``centroids[f]``.  The centroids are stored here, so a provenance record
    reproduces the facets without the images; ``dataset`` and ``members`` (each cluster's
    example files, relative to ``dataset``) say where they came from."""

    type: ClassVar[str] = "clusters"

    layer: str
    unit: int
    centroids: tuple[tuple[float, ...], ...]
    cluster_layer: str
    kind: str = "channel"
    pooled: bool = False
    weight: float = DEFAULT_CLUSTER_WEIGHT
    dataset: str = ""
    members: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        cents = tuple(tuple(float(v) for v in c) for c in self.centroids)
        object.__setattr__(self, "centroids", cents)
        object.__setattr__(self, "members", tuple(tuple(str(p) for p in m) for m in self.members))
        object.__setattr__(self, "unit", int(self.unit))
        check_kind(self.kind)
        if (
            not cents
            or len({len(c) for c in cents}) != 1
            or not all(math.isfinite(v) for c in cents for v in c)
        ):
            raise ConfigError(
                "A cluster job needs at least one centroid, all of one length and finite."
            )
        if not math.isfinite(float(self.weight)) or self.weight < 0:
            raise ConfigError(
                f"The cluster weight must be a finite number >= 0, got {self.weight!r}."
            )

    @property
    def facets(self) -> int:
        return len(self.centroids)

    def slots(self) -> list[Slot]:
        return [Slot(f, self.unit, f, (self.unit, f), f) for f in range(self.facets)]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.layer, self.cluster_layer)))

    @property
    def title(self) -> str:
        return f"{self.layer}:{self.unit} ({self.facets} dataset clusters)"

    def validate(self, graph: Any) -> None:
        UnitJob(self.layer, (self.unit,), kind=self.kind).validate(graph)
        lay = graph[self.cluster_layer]
        if lay.channels and lay.channels != len(self.centroids[0]):
            raise RenderError(
                f"The cluster centroids have {len(self.centroids[0])} values but layer "
                f"{self.cluster_layer} has {lay.channels} channels."
            )


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


# ------------------------------------------------------------------------------------------------
# The job: what + how
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """Which model a job is for: the hash is what galleries compare; the path is a hint."""

    file: str
    sha256: str
    path: str = ""

    @classmethod
    def of(cls, model: Any) -> ModelRef:
        return cls(str(model.path.name), str(model.sha256), str(model.path))

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256, "path": self.path}


@dataclass(frozen=True)
class Job:
    """A spec plus how to run it.  Everything a run reads is captured here, at submission, so
    changing the app's settings, preprocessing or labels never changes a job already queued."""

    spec: JobSpec
    settings: RenderSettings
    preprocessing: Preprocessing
    model: ModelRef
    labels: tuple[str, ...] | None = None
    title: str = ""

    @classmethod
    def for_model(cls, model: Any, spec: JobSpec, settings: RenderSettings | None = None,
                  *, title: str = "", choices: Any = None) -> Job:  # fmt: skip
        """A job for a ``LoadedModel`` under ``choices`` (``fvdesk.core.model.choices.Choices``:
        the preprocessing and labels a front end has in force), by default the model's own."""
        pre = choices.preprocessing if choices is not None else model.preprocessing
        labels = choices.labels if choices is not None else model.labels
        return cls(spec, settings or RenderSettings(), pre, ModelRef.of(model),
                   tuple(labels) if labels else None, title or spec.title)  # fmt: skip

    def with_settings(self, **changes: Any) -> Job:
        return replace(self, settings=replace(self.settings, **changes))

    def provenance_key(self) -> dict[str, Any]:
        """What determines the pixels (two jobs with equal keys render the same images)."""
        pre = {k: v for k, v in self.preprocessing.to_dict().items() if k != "source"}
        return {"job": self.spec.to_dict(), "settings": self.settings.to_dict(), "pre": pre}

    def label(self, graph: Any, layer: str, unit: int) -> str | None:
        return graph.unit_label(layer, unit, self.labels)

    def provenance(self, slot: Slot, batch: Sequence[int], *, device: str) -> Provenance:
        """The record a gallery item stores: enough to render the same pixels again."""
        from fvdesk import __version__

        return Provenance(
            format=PROVENANCE_FORMAT,
            version=PROVENANCE_VERSION,
            model=self.model.to_dict(),
            job=self.spec.to_dict(),
            slot=slot.index,
            unit=slot.unit,
            facet=slot.facet,
            batch=tuple(int(i) for i in batch),
            seed=self.settings.seed,
            settings=self.settings.to_dict(),
            preprocessing=self.preprocessing.to_dict(),
            device=device,
            fvdesk_version=__version__,
        )


@dataclass(frozen=True)
class Reproduction:
    """A job rebuilt from a provenance record, and which slots to render to get the item back."""

    job: Job
    slot: int
    batch: tuple[int, ...]


def recorded_spec(record: Provenance | dict[str, Any]) -> JobSpec:
    """The spec that made a recorded image (``ConfigError`` when the record names no job, or
    one this fvdesk does not know)."""
    job = Provenance.of(record).job
    if job is None:
        raise ConfigError("The provenance record names no job.")
    return JobSpec.from_dict(job)


def job_from_provenance(record: Provenance | dict[str, Any], *,
                        where: str = "the record") -> Reproduction:  # fmt: skip
    """Inverse of ``Job.provenance``; raises ``ConfigError`` naming ``where`` when it cannot."""
    rec = Provenance.of(record)
    if rec.format != PROVENANCE_FORMAT:
        raise ConfigError(
            f"{where} has no provenance record (saved by an fvdesk older than 0.2?), "
            "so it cannot be reproduced."
        )
    if (rec.version or 0) > PROVENANCE_VERSION:
        raise ConfigError(f"{where} was written by a newer fvdesk; update fvdesk to reproduce it.")
    try:
        if rec.job is None or rec.settings is None or rec.preprocessing is None:
            raise KeyError("job" if rec.job is None else "settings" if rec.settings is None
                           else "preprocessing")  # fmt: skip
        if rec.model is None or rec.slot is None:
            raise KeyError("model" if rec.model is None else "slot")
        spec = JobSpec.from_dict(rec.job)
        settings = RenderSettings.from_dict(rec.settings)
        pre = parse_preprocessing(rec.preprocessing, str(rec.preprocessing.get("source", "user")),
                                  where)  # fmt: skip
        m = rec.model
        model = ModelRef(str(m["file"]), str(m["sha256"]), str(m.get("path", "")))
        slot = rec.slot
        batch = rec.batch or (slot,)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where} has a damaged provenance record ({e}).") from None
    if slot not in batch:
        raise ConfigError(f"{where} has a damaged provenance record (slot not in its batch).")
    return Reproduction(Job(spec, settings, pre, model), slot, batch)


# ------------------------------------------------------------------------------------------------
# Objective expressions
# ------------------------------------------------------------------------------------------------
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


__all__ = [
    "CLASS_KINDS",
    "ClusterJob",
    "EXAMPLE_KINDS",
    "ExamplesJob",
    "UNIT_KINDS",
    "CombinationJob",
    "DirectionJob",
    "InterpolationJob",
    "SpectrumJob",
    "SteepestJob",
    "Job",
    "JobSpec",
    "ModelRef",
    "Provenance",
    "Reproduction",
    "Slot",
    "Term",
    "UnitJob",
    "combination_caption",
    "job_from_provenance",
    "parse_objective",
    "recorded_spec",
    "unit_caption",
]
