"""Renders of units kept per model, layer, unit, settings and preprocessing, so looking at an
image's top units a second time (or another image sharing them) costs nothing.

A unit's render depends only on those (its seed comes from the settings and the unit; batch
neighbours change at most the rounding of some kernels), so a render is reused wherever they
match: from this session, or from a gallery or atlas on disk whose items' provenance records say
they were made so (``add_gallery``).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fvdesk.core.jobs.job import Job, UnitJob
from fvdesk.core.optim.events import UnitResult

Key = str


def _key(model_sha: str, layer: str, unit: int, kind: str, x: Any, y: Any,
         settings: Mapping[str, Any], pre: Mapping[str, Any]) -> Key:  # fmt: skip
    pre = {k: v for k, v in pre.items() if k != "source"}
    what = [model_sha, layer, int(unit), kind, x, y, dict(settings), pre]
    return json.dumps(what, sort_keys=True, default=str)


def _pinned(job: Job) -> Job:
    """The settings a run records (file hashes pinned), which a saved record is compared with."""
    from fvdesk.core.optim.parameterizations import pin_settings

    return replace(job, settings=pin_settings(job.settings))


def _record_key(prov: Any) -> Key | None:
    """The key of a saved single-facet, positive unit render, or None for anything else."""
    spec, model = prov.job or {}, prov.model or {}
    if spec.get("type") != "units" or int(spec.get("facets", 1)) != 1 or spec.get("negative"):
        return None
    if prov.settings is None or prov.preprocessing is None or prov.unit is None:
        return None
    return _key(str(model.get("sha256", "")), str(spec.get("layer")), int(prov.unit),
                str(spec.get("kind", "channel")), spec.get("x"), spec.get("y"), prov.settings,
                prov.preprocessing)  # fmt: skip


class RenderCache:
    """The most recent ``limit`` unit renders (an LRU), each a ``UnitResult``."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._items: OrderedDict[Key, UnitResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def _job_key(self, job: Job, unit: int) -> Key:
        spec = job.spec
        if not isinstance(spec, UnitJob):
            raise TypeError("only unit renders are cached")
        pinned = _pinned(job)
        return _key(job.model.sha256, spec.layer, unit, spec.kind, spec.x, spec.y,
                    pinned.settings.to_dict(), job.preprocessing.to_dict())  # fmt: skip

    def get(self, job: Job, unit: int) -> UnitResult | None:
        """The cached render of ``unit`` under ``job``'s model, spec kind, settings and
        preprocessing, or None."""
        if not isinstance(job.spec, UnitJob) or job.spec.facets != 1 or job.spec.negative:
            return None
        key = self._job_key(job, unit)
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, result: UnitResult) -> bool:
        """Keep a finished render (dead, cancelled and multi-facet renders are not kept)."""
        key = _record_key(result.provenance)
        if key is None or result.dead or result.cancelled:
            return False
        self._items[key] = result
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        return True

    def missing(self, job: Job) -> Job | None:
        """``job`` without the units already cached (None when every unit is)."""
        spec = job.spec
        if not isinstance(spec, UnitJob):
            return job
        left = tuple(u for u in spec.units if self.get(job, u) is None)
        if not left:
            return None
        return job if left == spec.units else replace(job, spec=replace(spec, units=left))

    def merge(self, other: RenderCache) -> None:
        """Take ``other``'s renders (e.g. a gallery indexed off the GUI thread), newest last."""
        for result in other._items.values():
            self.put(result)

    def add_gallery(self, folder: str | os.PathLike[str]) -> int:
        """Index the unit renders of a gallery, or of every layer gallery of an atlas, on disk;
        returns how many were added."""
        from fvdesk.core.output.gallery import is_gallery, read_gallery

        root = Path(folder)
        folders = [root] if is_gallery(root) else sorted(p for p in root.iterdir() if is_gallery(p))
        return sum(self.add_items(read_gallery(f)[1]) for f in folders)

    def add_items(self, pairs: Iterable[tuple[Any, np.ndarray | None]]) -> int:
        """Index ``(GalleryItem, image)`` pairs already read (a gallery the app just opened);
        returns how many were added."""
        added = 0
        for item, image in pairs:
            if image is None or item.dead:
                continue
            r = UnitResult(item.layer, item.unit, item.facet, item.label, item.objective,
                           item.negative, float(item.value or 0.0), np.asarray(image),
                           False, int(item.seed or 0), int(item.steps or 0),
                           caption=item.caption, provenance=item.provenance)  # fmt: skip
            added += self.put(r)
        return added


__all__ = ["RenderCache"]
