"""Deprecated path: the render engine module before the core moved into folders.  Its names now
live in ``fvdesk.core.optim`` (``render`` the engine, ``settings``, ``events``, ``jobs``,
``run``); scripts are better served by ``fvdesk.render`` (docs/API.md).  Every old name still
works, with a ``DeprecationWarning``, until fvdesk 0.3.

``fvdesk.core.render`` is also the core's lazy ``render`` function; once this module is imported
the attribute is the module, so the module can be called as that function (no warning: calling
it is today's API).
"""

from __future__ import annotations

from fvdesk.core._forward import moved

_OPTIM = "fvdesk.core.optim"
moved(
    __name__,
    {
        "CancelFlag": f"{_OPTIM}.drive",
        "UnitKind": f"{_OPTIM}.jobs",
        "UnitJob": f"{_OPTIM}.jobs",
        "RESTART_SD": f"{_OPTIM}.render",
        "image_seed": f"{_OPTIM}.render",
        "redirected_relu": f"{_OPTIM}.render",
        "redirected_relu6": f"{_OPTIM}.render",
        "relu_override": f"{_OPTIM}.render",
        "render": f"{_OPTIM}.render",
        "render_units": f"{_OPTIM}.run",
        "RenderSettings": f"{_OPTIM}.settings",
        "TransformSettings": f"{_OPTIM}.settings",
        "StepEvent": f"{_OPTIM}.events",
        "PreviewEvent": f"{_OPTIM}.events",
        "NoticeEvent": f"{_OPTIM}.events",
        "RenderResult": f"{_OPTIM}.events",
        "UnitResult": f"{_OPTIM}.events",
        "UnitDoneEvent": f"{_OPTIM}.events",
        "Event": f"{_OPTIM}.events",
    },
    call=f"{_OPTIM}.render.render",
)
