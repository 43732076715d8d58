"""A gallery's items (one image and what reproduces it) and the model they belong to."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fvdesk.core.errors import GalleryError
from fvdesk.core.optim.provenance import Provenance


@dataclass(frozen=True)
class ModelInfo:
    """Which model a gallery belongs to; galleries refuse to mix models (compared by sha256)."""

    file: str  # the model's file name (display only)
    sha256: str

    @classmethod
    def from_model(cls, model: Any) -> ModelInfo:
        """From a ``LoadedModel`` (anything with ``.path`` and ``.sha256``)."""
        return cls(Path(model.path).name, str(model.sha256))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ModelInfo:
        """Hash a model file (for tools that have not loaded it)."""
        p = Path(path)
        h = hashlib.sha256()
        try:
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise GalleryError(f"Cannot read the model file {p}: {e.strerror or e}.") from None
        return cls(p.name, h.hexdigest())

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256}


ItemKey = tuple[str, int, int, str, bool, str]


@dataclass(frozen=True)
class GalleryItem:
    """One rendered image and everything needed to reproduce it.

    ``objective`` is the objective kind (channel, neuron, deepdream, logit, prob, combination);
    ``facet`` the index among renders of the same unit; ``provenance`` the record that reproduces
    it (empty for items of version-1 galleries, which kept only ``settings``).  ``file`` is filled
    in by ``Gallery.add`` when left empty.
    """

    layer: str
    unit: int
    facet: int = 0
    label: str | None = None
    objective: str = "channel"
    negative: bool = False
    value: float | None = None
    dead: bool = False
    seed: int | None = None
    steps: int | None = None
    provenance: Provenance = field(default_factory=Provenance)
    caption: str = ""
    timestamp: str = ""
    device: str = ""
    seconds: float | None = None
    file: str = ""
    examples: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, Provenance):  # a manifest's JSON, or a caller's dict
            object.__setattr__(self, "provenance", Provenance.of(self.provenance))

    @property
    def display_caption(self) -> str:
        """The caption the job gave it; for items saved without one (version 1), the core's
        caption of its unit."""
        if self.caption:
            return self.caption
        from fvdesk.core.jobs.job import unit_caption

        return unit_caption(self.layer, self.unit, facet=self.facet, negative=self.negative,
                            kind=self.objective)  # fmt: skip

    @property
    def settings(self) -> dict[str, Any]:
        """The render settings it was made with (from the provenance record)."""
        return dict(self.provenance.settings or {})

    @property
    def key(self) -> ItemKey:
        variant = self.provenance.variant()
        return item_key(self.layer, self.unit, self.facet, self.objective, self.negative, variant)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["provenance"] = self.provenance.to_dict()
        d["value"] = _finite_or_none(self.value)
        d["seconds"] = _finite_or_none(self.seconds)
        return {"file": d.pop("file"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GalleryItem:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if not isinstance(kw.get("layer"), str) or not isinstance(kw.get("file", ""), str):
            raise ValueError("its layer or file is not a string")
        if "provenance" not in kw and isinstance(d.get("settings"), dict):  # version 1
            kw["provenance"] = {"settings": dict(d["settings"])}
        for name in ("objective", "timestamp", "device", "caption"):  # compared and shown as text
            if name in kw:
                kw[name] = "" if kw[name] is None else str(kw[name])
        if "label" in kw and kw["label"] is not None:
            kw["label"] = str(kw["label"])
        kw["value"] = _finite_or_none(kw.get("value"))
        kw["seconds"] = _finite_or_none(kw.get("seconds"))
        kw["unit"] = int(kw["unit"])
        kw["facet"] = int(kw.get("facet") or 0)
        kw["negative"] = bool(kw.get("negative", False))
        kw["dead"] = bool(kw.get("dead", False))
        kw["provenance"] = Provenance.of(kw.get("provenance"))
        kw["examples"] = _clean_examples(kw.get("examples"))
        return cls(**kw)

    @property
    def example_files(self) -> list[str]:
        """The crops this item's examples name (relative to the gallery folder)."""
        return [e["file"] for part in ("top", "bottom") for e in self.examples.get(part, [])]

    @classmethod
    def from_result(
        cls, result: Any, *, device: str = "", seconds: float | None = None
    ) -> GalleryItem:
        """From a job's ``UnitResult``; it carries its own provenance record."""
        return cls(
            layer=str(result.layer),
            unit=int(result.unit),
            facet=int(getattr(result, "facet", 0) or 0),
            label=getattr(result, "label", None),
            objective=str(getattr(result, "kind", "channel")),
            negative=bool(getattr(result, "negative", False)),
            value=_finite_or_none(getattr(result, "value", None)),
            dead=bool(getattr(result, "dead", False)),
            seed=_int_or_none(getattr(result, "seed", None)),
            steps=_int_or_none(getattr(result, "steps", None)),
            provenance=Provenance.of(getattr(result, "provenance", None)),
            caption=str(getattr(result, "caption", "") or ""),
            device=device,
            seconds=seconds if seconds is not None else getattr(result, "seconds", None),
        )


def item_key(
    layer: str,
    unit: int,
    facet: int = 0,
    objective: str = "channel",
    negative: bool = False,
    variant: str = "",
) -> ItemKey:
    """The identity of an item within a gallery (one PNG per key)."""
    return (str(layer), int(unit), int(facet), str(objective), bool(negative), str(variant))


def job_variant(provenance: Provenance | dict[str, Any]) -> str:
    """Which job an item belongs to, for jobs that are not one unit's render: two
    interpolations, direction files or spectrum rows on the same unit are different pictures
    and must not replace each other.  Unit renders keep ``""``, so a unit rendered again (or an
    atlas resumed) replaces its earlier image (``Provenance.variant``)."""
    return Provenance.of(provenance).variant()


EXAMPLES_DIR = "examples"


def _clean_examples(value: Any) -> dict:
    """An item's examples as read from a manifest: entries whose crop is not a plain file in
    ``examples/`` are dropped (a manifest never makes fvdesk touch files elsewhere)."""
    if not isinstance(value, dict) or not value:
        return {}
    out = dict(value)
    for part in ("top", "bottom"):
        entries = value.get(part)
        out[part] = [
            dict(e)
            for e in (entries if isinstance(entries, list) else [])
            if isinstance(e, dict)
            and isinstance(e.get("file"), str)
            and e["file"].startswith(EXAMPLES_DIR + "/")
            and Path(e["file"]).name == e["file"][len(EXAMPLES_DIR) + 1 :]
            and Path(e["file"]).name not in ("", ".", "..")
        ]
    return out


def _finite_or_none(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
