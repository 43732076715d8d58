"""Planning an atlas: which layers and units (``plan_atlas``, patterns matched against the
graph), which of them a shard renders (``parse_shard``, ``shard_work``), where each layer's
gallery lives, and which settings must match for a resume (``comparable``)."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fvdesk.core.errors import FvdeskError, GalleryError
from fvdesk.core.output.gallery import (
    GalleryItem,
    safe_stem,
)

ATLAS_FORMAT = "fvdesk-atlas"
ATLAS_VERSION = 1
ATLAS_JSON = "atlas.json"
INDEX = "index.html"
#: Settings that change speed, not the picture; a resume may differ in them.
IGNORED_SETTINGS = frozenset({"batch", "preview_every", "device", "channels_last"})
_THUMBS = 8


class LayerSelectionError(FvdeskError):
    """A requested layer name or pattern matches no layer (the CLI maps this to exit code 2)."""


class AtlasSettingsMismatch(GalleryError):
    """The atlas folder was rendered with other settings; resuming would mix renders."""


# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AtlasLayer:
    """One layer of the plan: where its gallery lives and which units it gets."""

    name: str
    op: str
    shape: tuple[int | None, ...]
    kind: str
    index: int
    folder: str
    units: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": self.folder,
            "op": self.op,
            "shape": list(self.shape),
            "kind": self.kind,
            "index": self.index,
            "units": len(self.units),
        }


def layer_folder(layer: Any) -> str:
    """``{index:03d}_{sanitized name}``: unique (the index is), sorted in model order, and the same
    on every shard and machine because it depends only on the model."""
    return f"{int(layer.index):03d}_{safe_stem(layer.name.lstrip('/'), 80)}"


def plan_atlas(
    model: Any, layers: Sequence[str] | None = None, units_per_layer: int | None = None
) -> list[AtlasLayer]:
    """The layers to render (default: every feature map and token layer) and their units, in order.

    ``layers`` holds names or glob patterns (``*relu*``); a name or pattern matching nothing raises
    ``LayerSelectionError`` with the nearest names.  ``units_per_layer`` keeps the first N units.
    """
    graph = model.graph
    if not layers:
        chosen = [x for x in graph if x.kind in ("feature", "tokens")]
    else:
        picked: dict[str, Any] = {}
        for pat in layers:
            if pat in graph:
                picked[pat] = graph[pat]
                continue
            hits = (
                [x for x in graph if fnmatch.fnmatchcase(x.name, pat)]
                if any(c in pat for c in "*?[")
                else []
            )
            if not hits:
                hint = graph.suggest(pat)
                more = (
                    f"; did you mean {', '.join(hint)}?"
                    if hint
                    else "; `fvdesk layers` lists them."
                )
                raise LayerSelectionError(
                    f"The model {model.name} has no layer named {pat!r}{more}"
                )
            picked.update((x.name, x) for x in hits)
        chosen = sorted(picked.values(), key=lambda x: x.index)
    plan = []
    for x in chosen:
        n = int(x.channels)
        if units_per_layer is not None:
            n = min(n, units_per_layer)
        plan.append(
            AtlasLayer(
                x.name, x.op, tuple(x.shape), x.kind, int(x.index), layer_folder(x), tuple(range(n))
            )
        )
    return plan


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)``; ``"auto"`` reads the launcher's environment; ``None`` -> no sharding.

    ``auto`` uses ``LOCAL_RANK``/``WORLD_SIZE`` (torchrun, one shard per process) or
    ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` (a SLURM array; ``SLURM_ARRAY_TASK_MIN`` is
    subtracted so arrays may start at 1) and means "unsharded" when neither is set.
    """
    if text is None:
        return None
    env = os.environ if env is None else env
    t = text.strip().lower()
    if t == "auto":
        if "WORLD_SIZE" in env and ("LOCAL_RANK" in env or "RANK" in env):
            i, n = _ints(
                env.get("RANK", env.get("LOCAL_RANK", "")), env["WORLD_SIZE"], "RANK/WORLD_SIZE"
            )
        elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            i, n = _ints(
                env["SLURM_ARRAY_TASK_ID"],
                env["SLURM_ARRAY_TASK_COUNT"],
                "SLURM_ARRAY_TASK_ID/COUNT",
            )
            i -= int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
        else:
            return None
    else:
        a, sep, b = t.partition("/")
        if not sep:
            raise ValueError(f"{text!r} is not a shard (use I/N, e.g. 0/4, or auto)")
        i, n = _ints(a, b, f"shard {text!r}")
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n} is out of range (I must be 0 to N-1)")
    return (i, n) if n > 1 else None


def _ints(a: str, b: str, what: str) -> tuple[int, int]:
    try:
        return int(a), int(b)
    except ValueError:
        raise ValueError(f"{what} must be whole numbers, got {a!r}/{b!r}") from None


def shard_work(
    plan: Sequence[AtlasLayer], shard: tuple[int, int] | None
) -> list[tuple[AtlasLayer, list[int]]]:
    """This shard's units per layer: every N-th job of the global (layer, unit) list from I."""
    i, n = shard or (0, 1)
    out = []
    k = 0
    for layer in plan:
        mine = []
        for u in layer.units:
            if k % n == i:
                mine.append(u)
            k += 1
        if mine:
            out.append((layer, mine))
    return out


def comparable(
    settings: Mapping[str, Any], preprocessing: Mapping[str, Any] | None, objective: str | None
) -> dict[str, Any]:
    """What changes the picture: settings (speed-only ones like ``batch`` dropped), the
    preprocessing (not where it came from) and the objective kind.  Records of fvdesk 0.1 kept
    the preprocessing inside the settings; both forms compare alike."""
    out = {k: v for k, v in settings.items() if k not in IGNORED_SETTINGS}
    pre = preprocessing if preprocessing is not None else out.get("preprocessing")
    out.pop("preprocessing", None)
    out.pop("facets", None)
    out["preprocessing"] = {k: v for k, v in (pre or {}).items() if k != "source"}
    out["objective"] = objective
    return out


def item_comparable(item: GalleryItem) -> dict[str, Any]:
    return comparable(item.settings, item.provenance.preprocessing, item.objective)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    parts = [
        f"{k}={_short(old.get(k))} (now {_short(new.get(k))})"
        for k in keys
        if old.get(k) != new.get(k)
    ]
    return ", ".join(parts[:6]) + (", …" if len(parts) > 6 else "")


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."
