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

The vocabulary lives in ``terms`` (terms, captions, objective expressions), ``specs`` (the
render kinds), ``dataset_specs`` (examples, clusters) and ``fvdesk.core.optim.slots`` (``Slot``);
this module holds the ``Job`` and its provenance, and gives the whole vocabulary in one import
(the old ``fvdesk.core.optim.jobs`` is this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.jobs.dataset_specs import (  # noqa: F401 - the job vocabulary in one import
    DEFAULT_CLUSTER_WEIGHT,
    EXAMPLE_KINDS,
    ClusterJob,
    ExamplesJob,
)
from fvdesk.core.jobs.specs import (  # noqa: F401
    _SPECS,
    DEFAULT_DIVERSITY,
    CombinationJob,
    DirectionJob,
    InterpolationJob,
    JobSpec,
    SpectrumJob,
    SteepestJob,
    UnitJob,
    _check_facets,
    _check_position,
    _OnTerms,
    _terms,
    _validate_terms,
)
from fvdesk.core.jobs.terms import (  # noqa: F401
    _SPLIT,
    _TERM,
    _UNIT,
    Term,
    UnitKind,
    _parse_term,
    _pos,
    check_kind,
    combination_caption,
    default_kind,
    parse_objective,
    unit_caption,
)
from fvdesk.core.model.preprocessing import Preprocessing, parse_preprocessing
from fvdesk.core.optim.kinds import CLASS_KINDS, MEASURES, UNIT_KINDS  # noqa: F401
from fvdesk.core.optim.provenance import FORMAT as PROVENANCE_FORMAT
from fvdesk.core.optim.provenance import VERSION as PROVENANCE_VERSION
from fvdesk.core.optim.provenance import Provenance
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.slots import Slot
from fvdesk.core.optim.variants import SPECTRUM, STEEPEST, Variant, variant  # noqa: F401


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
