"""Error types: every user-facing failure is one ``FvdeskError`` with a one-sentence message.

The GUI shows ``str(err)`` in a dialog and the CLI prints it on stderr, so messages must name the
file (or the thing) and the problem in one sentence, without a traceback.
"""

from __future__ import annotations


class FvdeskError(Exception):
    """Base class of every error fvdesk reports to a user."""


class ModelLoadError(FvdeskError):
    """The model file cannot be read, parsed or converted."""


class UnsupportedModelError(ModelLoadError):
    """The file is valid ONNX but not a model fvdesk can visualize (no image input, unknown ops)."""


class AmbiguousInputError(ModelLoadError):
    """Several graph inputs look like images and the caller did not say which one to use."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class ConfigError(FvdeskError):
    """A sidecar, labels or settings file is malformed."""


class RenderError(FvdeskError):
    """An optimization could not run or diverged (NaN/Inf, unknown layer, bad unit)."""


class ChannelMismatchError(RenderError, ValueError):
    """An objective's vector does not match its layer's channels (a ``ValueError`` too, as it was
    before it became a one-sentence render error)."""


class GalleryError(FvdeskError):
    """A gallery folder cannot be written or read."""


class DatasetError(ConfigError):
    """An image folder cannot be used (missing, empty, vanished mid-pass) or its cache is damaged."""


class ImageError(FvdeskError):
    """An image to inspect cannot be used (missing, not an image, truncated, changed since a job
    was made)."""
