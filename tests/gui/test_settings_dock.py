"""The settings dock is generated from the core's options: every option is a control, in its
section or, when the core lists it as expert-only, in the collapsed "Advanced" section; the
conversion to ``RenderSettings`` and the canvas-size rule are the core's, shared with the CLI."""

from __future__ import annotations

import pytest

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim import options
from fvdesk.core.optim.settings import MIN_SIZE, RenderSettings, canvas_setting, size_refusal


def test_every_option_has_a_look_and_a_place() -> None:
    names = [o.name for o in options.OPTIONS]
    assert len(set(options.EXPERT)) == len(options.EXPERT) and set(options.EXPERT) <= set(names)
    for o in options.OPTIONS + options.SWITCHES:
        assert o.look is not None and o.label and o.tip, o.name
        assert o.widget in ("int", "float", "bool", "choice", "file", "list"), o.name
        if o.name in options.EXPERT:
            assert o.section == options.ADVANCED
        else:  # a basic option names a section of its own, not Advanced
            assert o.look.section in options.SECTIONS and o.section != options.ADVANCED, o.name
        if o.choices:
            assert len(o.look.texts) in (0, len(o.choices)), o.name
    placed = [o.name for o in options.dock_options()]
    assert sorted(placed) == sorted(names + [o.name for o in options.SWITCHES])  # none missing
    assert placed[-len(options.EXPERT) :] == [n for n in names if n in options.EXPERT]


def test_settings_from_is_the_one_conversion() -> None:
    s = options.settings_from({"size": 0, "prior": "", "steps": 9, "jitter": 4,
                               "scales": (1.0, 0.9), "device": "cpu", "preview_every": 3})  # fmt: skip
    assert (s.size, s.prior, s.steps, s.device, s.preview_every) == (None, None, 9, "cpu", 3)
    assert s.transforms.jitter == 4 and s.transforms.scales == (1.0, 0.9)
    off = options.settings_from({"transforms": False, "jitter": 4, "size": 3, "stale_key": 1})
    assert off.transforms is None and off.size == MIN_SIZE
    with pytest.raises(ConfigError, match="steps"):
        options.settings_from({"steps": -1})
    assert canvas_setting(0) is None and canvas_setting(None) is None and canvas_setting(200) == 200

    class Spec:  # an InputSpec's rule
        def size_refusal(self, n: int, who: str) -> str | None:
            return None if n % 32 == 0 else f"{who} takes multiples of 32."

    assert (
        size_refusal(RenderSettings(size=48), Spec(), "m.onnx") == "m.onnx takes multiples of 32."
    )
    assert size_refusal(RenderSettings(size=64), Spec(), "m") is None
    assert size_refusal(RenderSettings(), Spec(), "m") is None


def test_the_dock_shows_every_option_and_the_experts_under_advanced(qtbot) -> None:
    from fvdesk.gui.settings.panel import FIELDS, RenderSettingsPanel, to_render_settings

    panel = RenderSettingsPanel()
    qtbot.addWidget(panel)
    panel.show()
    body = panel.advanced.body
    assert not panel.advanced.is_open() and not body.isVisible()
    for o in options.OPTIONS:
        w = panel.widgets[o.name]  # a control for every option
        inside = body.isAncestorOf(w)
        assert inside == (o.name in options.EXPERT), o.name
        assert w.toolTip() == o.tip
    panel.advanced.toggle.click()
    assert panel.advanced.is_open() and body.isVisible()
    assert [f.key for f in FIELDS if not f.key.startswith("ui:")] == [
        o.name for o in options.dock_options()]  # fmt: skip
    # expert values reach the engine's settings
    panel.set_value("jitter", 3)
    scales = panel.widgets["scales"]
    scales.setText("1, 0.9")
    scales.editingFinished.emit()
    s = to_render_settings(panel.values())
    assert s.transforms.jitter == 3 and s.transforms.scales == (1.0, 0.9)
    refused: list[str] = []
    panel.rejected.connect(refused.append)
    scales.setText("big")
    scales.editingFinished.emit()
    assert refused and "--scales" in refused[0] and panel.value("scales") == (1.0, 0.9)
    assert scales.text() == "1,0.9"
    panel.restore_defaults()
    assert (
        to_render_settings(panel.values()).transforms.scales == RenderSettings().transforms.scales
    )


def test_the_app_refuses_a_canvas_the_model_cannot_take(qtbot, window, tmp_path) -> None:
    from fvdesk.core.model.loader import load_model
    from tests import models as test_models
    from tests.gui.support import fast_settings, wait_idle

    model = load_model(test_models.needs_multiple_onnx(tmp_path, 32), check_parity=False)
    w = window
    w.session.set_model(model)
    assert w.settings_panel.widgets["size"].singleStep() == 32
    assert "multiple of 32" in w.settings_panel.widgets["size"].toolTip()
    layer = model.graph.layers[0].name
    fast_settings(w, steps=2, size=48)
    assert w.jobs.render_units(layer, [0]) is None and w.tiles.rowCount() == 0
    assert w.errors and "multiples of 32; use 32 or 64" in w.errors[-1][1]
    fast_settings(w, steps=2, size=64)
    assert w.jobs.render_units(layer, [0]) is not None
    wait_idle(qtbot, w)
