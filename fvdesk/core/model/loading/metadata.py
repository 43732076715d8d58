"""Preprocessing and labels, in the one precedence of ``fvdesk.core.model.choices``: the user's
(the argument, else the sidecar's saved choice), then the file's metadata, then the default."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.fileio import parse_json
from fvdesk.core.model.choices import first_choice, resolve_labels
from fvdesk.core.model.labels import labels_from_metadata, read_labels_file
from fvdesk.core.model.loading.context import LoadContext
from fvdesk.core.model.preprocessing import (
    DEFAULT_PRESET,
    PRESETS,
    Preprocessing,
    parse_preprocessing,
)
from fvdesk.core.model.sidecar import Sidecar


def choose_preprocessing(
    ctx: LoadContext,
    given: Preprocessing | str | None,
    metadata: dict[str, str],
    sidecar: Sidecar | None,
) -> Preprocessing:
    if isinstance(given, Preprocessing):
        return given
    if isinstance(given, str):
        value: Any = given
        if given.lstrip().startswith("{"):
            try:
                value = parse_json(given)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"The preprocessing argument is not valid JSON ({e.msg})."
                ) from None
        return parse_preprocessing(value, "user", "The preprocessing argument")
    # The user's saved choice beats what the file says: they chose it knowing the model.
    return first_choice(None, sidecar.preprocessing if sidecar is not None else None,
                        lambda: preprocessing_from_metadata(metadata, str(ctx.path)),
                        replace(PRESETS[DEFAULT_PRESET], source="default"))  # fmt: skip


def choose_labels(
    ctx: LoadContext, metadata: dict[str, str], sidecar: Sidecar | None, num_classes: int | None
) -> tuple[list[str] | None, str]:
    saved = None
    if sidecar is not None and sidecar.labels is not None:
        try:
            saved = read_labels_file(sidecar.labels)
        except ConfigError as e:
            ctx.warnings.append(str(e))
    labels, source = resolve_labels(saved, labels_from_metadata(metadata), num_classes)
    if source in ("sidecar", "metadata"):
        labels = check_count(ctx, labels, num_classes, source)  # type: ignore[arg-type]  # these sources always come with labels
    return labels, source


def check_count(ctx: LoadContext, labels: list[str], n: int | None, source: str) -> list[str]:
    if n is not None and len(labels) != n:
        ctx.warnings.append(
            f"The {source} labels of {ctx.path.name} list {len(labels)} classes but the logits have {n}."
        )
    return labels


_WINML_RANGE = {
    "NominalRange_0_255": (0.0, 255.0),
    "Normalized_0_1": (0.0, 1.0),
    "Normalized_1_1": (-1.0, 1.0),
    "NominalRange_16_235": (16.0, 235.0),
}


def preprocessing_from_metadata(
    metadata: dict[str, str], where: str = "the model"
) -> Preprocessing | None:
    """``fvdesk.preprocessing`` (JSON object or preset name), else Windows ML image metadata."""
    raw = metadata.get("fvdesk.preprocessing")
    if raw:
        try:
            value = parse_json(raw)
        except json.JSONDecodeError as e:
            if e.msg == "nested too deeply":
                raise ConfigError(
                    f"The metadata of {where} has an fvdesk.preprocessing that is not valid JSON "
                    "(nested too deeply)."
                ) from None
            value = raw.strip()
        return parse_preprocessing(value, "metadata", f"The metadata of {where}")
    if metadata.get("author", "").startswith("Ultralytics") or {"imgsz", "stride", "names"} <= set(
        metadata
    ):
        # Ultralytics feeds RGB in [0, 1] with no mean/std (its classify transforms use 0 and 1).
        return replace(PRESETS["unit"], source="metadata")
    fmt = metadata.get("Image.BitmapPixelFormat")
    rng = metadata.get("Image.NominalPixelRange")
    if fmt or rng:
        lo, hi = _WINML_RANGE.get(rng or "", (0.0, 255.0))
        bgr = (fmt or "").lower().startswith("bgr")
        return Preprocessing("custom", lo, hi, bgr=bgr, source="metadata")
    return None
