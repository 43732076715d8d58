"""The app shows the core's views as they are: a tile's caption is its saved gallery caption, and
the CLI names the same request the same way."""

from __future__ import annotations

import pytest

from fvdesk.core.jobs.job import UnitJob
from fvdesk.core.jobs.presentation import job_views, slot_view
from tests.core.optim.test_presentation import BLOCK3, every_kind
from tests.gui.support import CONV1, fast_settings, wait_idle


def test_tiles_show_the_views_their_gallery_saves(qtbot, demo_window, tmp_path) -> None:
    from fvdesk.core.output.gallery import read_gallery

    w = demo_window
    fast_settings(w, steps=2, size=16)
    for spec in every_kind():
        task = w.jobs.submit(spec)
        assert task is not None, w.errors
        views = job_views(task.job, w.model.graph)
        mine = [t for t in w.tiles.tiles() if t.job_id == task.id]
        assert [(t.caption, t.label, t.kind, t.layer, t.unit, t.facet) for t in mine] == [
            (v.caption, v.label, v.kind, v.layer, v.unit, v.facet) for v in views], spec  # fmt: skip
        assert {t.row for t in mine} == ({task.id} if views[0].strip else {0})
    wait_idle(qtbot, w)
    tiles = w.tiles.tiles()
    assert all(t.state == "done" for t in tiles), [(t.caption, t.message) for t in tiles]
    folder = tmp_path / "all"
    with qtbot.waitSignal(w.galleries.saved, timeout=60_000):
        w.galleries.save_gallery(folder)
    _, pairs = read_gallery(folder, images=False)
    assert sorted(it.caption for it, _ in pairs) == sorted(t.caption for t in tiles)
    saved = {(it.caption, it.label, it.objective) for it, _ in pairs}
    assert saved == {(t.caption, t.label, t.kind) for t in tiles}
    with qtbot.waitSignal(w.galleries.opened, timeout=60_000):
        w.galleries.open_gallery(folder)
    opened = w.tiles.tiles()[len(tiles) :]
    assert sorted((t.caption, t.kind) for t in opened) == sorted((t.caption, t.kind) for t in tiles)


def test_the_cli_names_a_request_as_the_app_does(qtbot, demo_window, tmp_path, capsys) -> None:
    from fvdesk.cli import main
    from fvdesk.core.output.gallery import read_gallery

    w = demo_window
    fast_settings(w, steps=2, size=16)
    w.jobs.render_units(CONV1, [2, 3])
    w.jobs.submit(UnitJob("/classifier/Gemm", (1,), kind="logit", negative=True))
    w.article.spectrum(BLOCK3, 1)
    app = sorted((t.caption, t.label) for t in w.tiles.tiles())
    wait_idle(qtbot, w)
    fast = ["--steps", "2", "--size", "16", "--device", "cpu", "--quiet"]
    out = tmp_path / "cli"
    assert main(["render", "--layer", CONV1, "--units", "2,3", "--out", str(out), *fast]) == 0
    assert main(["render", "--objective", "logit", "--units", "1", "--negative",
                 "--out", str(out), *fast]) == 0  # fmt: skip
    assert main(["render", "--layer", BLOCK3, "--units", "1", "--spectrum",
                 "--out", str(out), *fast]) == 0  # fmt: skip
    capsys.readouterr()
    _, pairs = read_gallery(out, images=False)
    assert sorted((it.caption, it.label) for it, _ in pairs) == app


def test_the_old_app_describers_still_work_with_a_warning() -> None:
    from fvdesk.gui.canvas.tiles import caption_layer
    from fvdesk.gui.runtime.jobs import register_tiles, tile_fields

    with pytest.warns(DeprecationWarning):
        assert caption_layer("/features/block3/relu/Relu") == "block3/relu"
    spec = UnitJob(CONV1, (1,))
    fields = tile_fields(spec, spec.slots()[0], lambda _l, _u: None, row=7)
    assert fields["caption"] == f"{CONV1}:1" and fields["row"] == 0

    class OddJob(UnitJob):
        type = "test-odd"

    with pytest.warns(DeprecationWarning):
        register_tiles(OddJob, lambda s, slot, _lab: {"layer": s.layer, "unit": slot.unit,
                       "kind": "odd", "caption": "odd one", "strip": True})  # fmt: skip
    odd = OddJob(CONV1, (1,))
    view = slot_view(odd, odd.slots()[0])
    assert (view.caption, view.kind, view.strip) == ("odd one", "odd", True)


def test_the_app_asks_the_core_which_kinds_have_figures_and_comparable_values(
    qtbot, demo_window
) -> None:
    from fvdesk.core.optim.kinds import COMPARABLE_KINDS, FIGURE_KINDS
    from fvdesk.gui.canvas.tiles import DONE, Tile
    from fvdesk.gui.dataset import controller as qt_dataset
    from fvdesk.gui.shell import menus as qt_menus

    w = demo_window
    offered = {}
    for kind in ("channel", "neuron", "logit", "prob", "cluster", "combination"):
        tile = Tile(layer=BLOCK3, unit=1, kind=kind, caption="t", state=DONE)
        menu = qt_menus.tile_menu(w, tile, w.jobs, w.actions_by_key, lambda *_: None, w.article)
        offered[kind] = "Regularization Spectrum" in [a.text() for a in menu.actions()]
    assert offered == {k: k in FIGURE_KINDS for k in offered}
    with pytest.warns(DeprecationWarning):
        assert qt_menus.UNIT_KINDS == FIGURE_KINDS
    with pytest.warns(DeprecationWarning):
        assert qt_dataset.COMPARABLE == COMPARABLE_KINDS
    assert qt_dataset.measure_of("neuron", UnitJob(BLOCK3, (1,), kind="neuron", x=1)) == (
        "neuron", 1, None)  # fmt: skip


def test_the_app_and_the_cli_follow_the_gallerys_duplicate_key_rule(
    qtbot, demo_window, tmp_path, capsys
) -> None:
    """Two renders of one unit on the canvas are both saved (the second on the next facet free
    in the gallery); saved again from the CLI, a key replaces its image."""
    from fvdesk.cli import main
    from fvdesk.core.output.gallery import read_gallery

    folder = tmp_path / "g"
    fast = ["--steps", "2", "--size", "16", "--device", "cpu", "--quiet"]
    assert main(["render", "--layer", CONV1, "--units", "4", "--diversity", "2",
                 "--out", str(folder), *fast]) == 0  # fmt: skip
    w = demo_window
    fast_settings(w, steps=2, size=16)
    w.jobs.render_units(CONV1, [4])
    w.jobs.render_units(CONV1, [4], overrides={"seed": 5})
    wait_idle(qtbot, w)
    with qtbot.waitSignal(w.galleries.saved, timeout=60_000):
        w.galleries.save_gallery(folder)
    _, pairs = read_gallery(folder, images=False)
    seeds = {it.facet: it.seed for it, _ in pairs}
    assert seeds == {0: 0, 1: 0, 2: 5}  # facet 0 replaced by the app's, facet 1 kept, 2 new
    assert main(["render", "--layer", CONV1, "--units", "4", "--seed", "7",
                 "--out", str(folder), *fast]) == 0  # fmt: skip
    capsys.readouterr()
    _, pairs = read_gallery(folder, images=False)
    assert {it.facet: it.seed for it, _ in pairs} == {0: 7, 1: 0, 2: 5}
