"""What every graph repair shares: the ``Report`` of what was done and the standard domains."""

from __future__ import annotations

from dataclasses import dataclass, field

STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class Report:
    """What canonicalization did (shown in the model info and the benchmark)."""

    steps: list[str] = field(default_factory=list)
    folded_nodes: set[str] = field(default_factory=set)  # original node names now constants
    warnings: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # names of the passes that changed something

    def add(self, line: str) -> None:
        self.steps.append(line)


def short_error(e: BaseException) -> str:
    """The first line of an error, short enough for a report line."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
