"""The provenance record: what made an image, enough to render the same pixels again.

``Provenance`` is the typed record every result and gallery item carries (``Job.provenance``
writes it; ``jobs.job_from_provenance`` reads it back into a job).  It is stored in
``gallery.json`` under the same keys as ever::

    {"format": "fvdesk-provenance", "version": 1, "model": {"file", "sha256", "path"},
     "job": {...JobSpec.to_dict()}, "slot", "unit", "facet", "batch": [...], "seed",
     "settings": {...RenderSettings.to_dict()}, "preprocessing": {...}, "device",
     "fvdesk_version"}

Records are read as they are: an item of a version-1 gallery has only ``settings``, a newer
fvdesk may add keys (kept in ``extra`` and written back), and a damaged record stays readable
(``complete`` is False; ``jobs.recorded_spec`` raises a ``ConfigError``).  Readers that still index it like the
dict it was (``record["job"]``) keep working: it is a read-only mapping of its JSON form.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT = "fvdesk-provenance"
VERSION = 1

#: The record's keys in the order they are written (then any ``extra``).
_KEYS = ("format", "version", "model", "job", "slot", "unit", "facet", "batch", "seed",
         "settings", "preprocessing", "device", "fvdesk_version")  # fmt: skip


def _as_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _as_int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, eq=False)
class Provenance(Mapping[str, Any]):
    """The record of one image (see the module docstring); a field left ``None`` was not in
    the record (it is not written back)."""

    format: str | None = None
    version: int | None = None
    model: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    slot: int | None = None
    unit: int | None = None
    facet: int | None = None
    batch: tuple[int, ...] | None = None
    seed: int | None = None
    settings: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None
    device: str | None = None
    fvdesk_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- reading and writing ---------------------------------------------------------------------
    @classmethod
    def of(cls, value: Any) -> Provenance:
        """``value`` as a record: a ``Provenance`` as is, a mapping (a manifest's JSON) read
        field by field (a malformed field reads as absent), anything else as an empty record."""
        if isinstance(value, Provenance):
            return value
        d = dict(value) if isinstance(value, Mapping) else {}
        batch = d.get("batch")
        ints = [_as_int(b) for b in batch] if isinstance(batch, list | tuple) else None
        return cls(
            format=d["format"] if isinstance(d.get("format"), str) else None,
            version=_as_int(d.get("version")),
            model=_as_dict(d.get("model")),
            job=_as_dict(d.get("job")),
            slot=_as_int(d.get("slot")),
            unit=_as_int(d.get("unit")),
            facet=_as_int(d.get("facet")),
            batch=tuple(ints) if ints is not None and None not in ints else None,  # type: ignore[arg-type]  # None excluded just before
            seed=_as_int(d.get("seed")),
            settings=_as_dict(d.get("settings")),
            preprocessing=_as_dict(d.get("preprocessing")),
            device=None if d.get("device") is None else str(d["device"]),
            fvdesk_version=None if d.get("fvdesk_version") is None else str(d["fvdesk_version"]),
            extra={k: v for k, v in d.items() if k not in _KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the keys galleries have always stored)."""
        out: dict[str, Any] = {}
        for key in _KEYS:
            v = getattr(self, key)
            if v is not None:
                out[key] = list(v) if key == "batch" else v
        out.update(self.extra)
        return out

    # -- a read-only mapping of the JSON form (readers of the former dict) -----------------------
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable on purpose

    # -- what it says ----------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Whether it is a full record (an item of a version-1 gallery is not)."""
        return self.format == FORMAT and self.job is not None

    @property
    def job_type(self) -> str | None:
        return str(self.job.get("type")) if self.job and self.job.get("type") else None

    def variant(self) -> str:
        """Which job an image belongs to when the job is not one unit's render (``""`` for
        unit renders): two interpolations or spectrum rows of one unit are different pictures.
        A short hash of the job, settings and preprocessing (the gallery's item key)."""
        if self.job is None or self.job.get("type") in (None, "units"):
            return ""
        what = {"job": self.job, "settings": self.settings, "preprocessing": self.preprocessing}
        text = json.dumps(what, ensure_ascii=False, sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]

    def strip_key(self) -> str:
        """What the images of one run of one job share (its job and seed): a saved strip's
        images come back as one strip."""
        return json.dumps([self.job, self.seed], sort_keys=True, default=str)


__all__ = ["FORMAT", "VERSION", "Provenance"]
