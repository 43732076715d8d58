"""``Slot``: one image of a batch, as the engine sees it: its index in the job, its unit and
facet, the keys of its seed, and its group (slots that must share a batch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """One image of a job: its unit and facet, the keys of its seed, and its batch group."""

    index: int
    unit: int
    facet: int
    seed_keys: tuple[int, ...]
    group: int
