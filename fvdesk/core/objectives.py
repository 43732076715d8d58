"""Deprecated path: the objectives live in ``fvdesk.core.optim.objectives`` since the core moved
into folders; scripts are better served by ``fvdesk.unit`` and ``fvdesk.objective``
(docs/API.md).  Every old name still works, with a ``DeprecationWarning``, until fvdesk 0.3."""

from __future__ import annotations

from fvdesk.core._forward import moved

_HOME = "fvdesk.core.optim.objectives"
moved(
    __name__,
    dict.fromkeys(
        (
            "UnitKind",
            "Activations",
            "Objective",
            "Linear",
            "Zero",
            "Unit",
            "neuron",
            "channel",
            "deepdream",
            "logit",
            "probability",
            "negative",
            "unit",
            "Direction",
            "direction",
            "random_direction",
            "Diversity",
            "diversity",
            "WithDiversity",
            "with_diversity",
            "Alignment",
            "alignment",
            "Interpolate",
            "interpolate",
            "check_finite_weight",
        ),
        _HOME,
    ),  # fmt: skip
)
