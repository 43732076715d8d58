"""The user's dataset choice for a model: which folder, how many examples, whether its colour
statistics drive the decorrelation.  Plain data the app persists per model (by sha256)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fvdesk.core.errors import ConfigError


@dataclass(frozen=True)
class DatasetChoice:
    """``root``: the image folder; ``top``/``bottom``: examples kept per unit; ``colours``:
    estimate the colour decorrelation matrix from the folder (``RenderSettings.color_matrix``,
    so it is in every provenance record)."""

    root: str
    top: int = 9
    bottom: int = 9
    colours: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or not self.root:
            raise ConfigError("A dataset choice needs a folder.")
        for name in ("top", "bottom"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 256:
                raise ConfigError(f"The dataset setting {name!r} must be 0-256, got {v!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> DatasetChoice | None:
        """The choice stored in ``d``, or ``None`` when ``d`` holds none or a damaged one."""
        if not isinstance(d, dict):
            return None
        try:
            return cls(str(d["root"]), int(d.get("top", 9)), int(d.get("bottom", 9)),
                       bool(d.get("colours", False)))  # fmt: skip
        except (KeyError, TypeError, ValueError, ConfigError):
            return None
