"""The Inspect Image dock, offscreen: open an image (menu path, drop, a dataset example), see the
prediction, the layer's maps, the top units with heat maps and renders, attribution, neuron
groups, the grid, accentuation; the model work runs on the render thread, never the GUI's."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PIL import Image  # noqa: E402
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402

from fvdesk.core.patterns import CLASSES, generate  # noqa: E402
from tests.gui.support import RENDER_TIMEOUT, wait_idle  # noqa: E402

LAST_CONV = "/features/block4/relu/Relu"


def _pattern_png(folder: Path, cls: int, name: str = "pattern.png") -> Path:
    x, y = generate(len(CLASSES) * 2, 64, seed=5)
    i = int(np.flatnonzero(y == cls)[0])
    path = folder / name
    Image.fromarray((x[i].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def forward_threads(demo_window):
    """The threads the model's forward ran on, while the test runs."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    seen: list[threading.Thread] = []
    hook = register_module_forward_pre_hook(lambda *_: seen.append(threading.current_thread()))
    yield seen
    hook.remove()


def _open(qtbot, w, path: Path) -> None:
    w.inspect_image(path)
    panel = w.inspect.panel
    qtbot.waitUntil(lambda: panel.prediction is not None and panel.activations is not None,
                    timeout=RENDER_TIMEOUT)  # fmt: skip


def _icons(tree, column: int) -> int:
    return sum(
        not tree.topLevelItem(i).icon(column).isNull() for i in range(tree.topLevelItemCount())
    )


def test_open_image_shows_prediction_maps_top_units_and_their_renders(
    qtbot, demo_window, forward_threads, tmp_path
):
    w, panel = demo_window, demo_window.inspect.panel
    assert panel.layer() == LAST_CONV  # the deepest feature map is inspected first
    cls = 3
    _open(qtbot, w, _pattern_png(tmp_path, cls))
    assert panel.prediction.best.index == cls
    assert panel.predictions.count() == 5
    acts = panel.activations
    assert acts.layer == LAST_CONV and panel.channel_list.count() == len(acts.values)
    first = int(panel.channel_list.item(0).data(Qt.ItemDataRole.UserRole))
    assert first == int(np.argmax(acts.values))  # maps sorted by their spatial maximum
    assert panel.top_units.topLevelItemCount() == 9 and _icons(panel.top_units, 0) == 9
    qtbot.waitUntil(lambda: _icons(panel.top_units, 1) == 9, timeout=RENDER_TIMEOUT)
    wait_idle(qtbot, w)
    kinds = [t.kind for t in w.tiles.tiles()]
    assert kinds.count("activation-map") == 9 and kinds.count("channel") == 9
    assert forward_threads and threading.main_thread() not in forward_threads

    # clicking a map shows it over the image
    panel.channel_list.setCurrentRow(2)
    assert panel.image_view.caption == f"{LAST_CONV}:{panel.channel_list.item(2).text()}"

    # a second look at the same layer reuses the renders: no new render tiles
    panel.top_units.clear()
    panel.inspect_current()
    qtbot.waitUntil(lambda: _icons(panel.top_units, 1) == 9, timeout=RENDER_TIMEOUT)
    wait_idle(qtbot, w)
    assert [t.kind for t in w.tiles.tiles()].count("channel") == 9


def test_attribution_groups_grid_and_accentuation(qtbot, demo_window, tmp_path):
    w, panel = demo_window, demo_window.inspect.panel
    _open(qtbot, w, _pattern_png(tmp_path, 1))
    wait_idle(qtbot, w)

    panel.attribute_button.click()
    qtbot.waitUntil(lambda: panel.attribution is not None, timeout=RENDER_TIMEOUT)
    assert panel.image_view.caption.startswith(
        f"attribution of class {panel.prediction.best.index} "
    )
    assert panel.channel_attr.topLevelItemCount() == 9
    qtbot.waitUntil(lambda: _icons(panel.channel_attr, 0) == 9, timeout=RENDER_TIMEOUT)

    panel.groups_spin.setValue(3)
    panel.groups_button.click()
    qtbot.waitUntil(lambda: panel.neuron_groups is not None, timeout=RENDER_TIMEOUT)
    assert panel.group_list.topLevelItemCount() == 3 and _icons(panel.group_list, 0) == 3
    qtbot.waitUntil(lambda: _icons(panel.group_list, 1) == 3, timeout=RENDER_TIMEOUT)
    assert "Reconstruction error" in panel.groups_error.text()

    panel.grid_button.click()
    qtbot.waitUntil(lambda: panel.activation_grid is not None, timeout=RENDER_TIMEOUT)
    wait_idle(qtbot, w)
    grid = panel.activation_grid
    drawn = set(panel.grid_view.renders)
    assert drawn == set(grid.cells()) and drawn  # every non-blank cell, and no blank one
    x, y = next(iter(drawn))
    assert "top units" in panel._describe_cell(x, y)

    panel.accent_unit.setValue(int(panel.activations.order[0]))
    panel.accent_button.click()
    panel.invert_button.click()
    wait_idle(qtbot, w)
    done = {t.kind for t in w.tiles.tiles() if t.image is not None}
    assert {"attribution-map", "group-map", "group", "grid-cell", "accentuate", "inversion"} <= done


def test_bad_image_is_one_sentence_and_the_previous_image_stays(
    qtbot, demo_window, isolated, tmp_path
):
    w = demo_window
    _open(qtbot, w, _pattern_png(tmp_path, 0))
    before = w.inspect.image
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    w.inspect_image(bad)
    qtbot.waitUntil(lambda: bool(isolated), timeout=RENDER_TIMEOUT)
    title, text = isolated[-1]
    assert title == "Cannot Inspect Image" and "broken.png" in text and "\n" not in text
    assert w.inspect.image is before and w.inspect.panel.image_view.pixels is before.pixels


def test_dropped_image_and_dataset_example_open_in_the_inspector(qtbot, demo_window, tmp_path):
    w = demo_window
    path = _pattern_png(tmp_path, 2, "dropped.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                    Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)  # fmt: skip
    assert w._dropped_paths(ev) == [path]
    w.dropEvent(ev)
    qtbot.waitUntil(lambda: w.inspect.image is not None, timeout=RENDER_TIMEOUT)
    assert w.inspect.image.path == path.resolve()

    other = _pattern_png(tmp_path, 5, "example.png")
    w.datasets.panel.inspect_requested.emit(other)
    qtbot.waitUntil(lambda: w.inspect.image.path == other.resolve(), timeout=RENDER_TIMEOUT)
    wait_idle(qtbot, w)


def test_saved_gallery_carries_the_inspected_image(qtbot, demo_window, tmp_path):
    w = demo_window
    path = _pattern_png(tmp_path, 4, "kept.png")
    _open(qtbot, w, path)
    wait_idle(qtbot, w)
    out = tmp_path / "gallery"
    with qtbot.waitSignal(w.galleries.saved, timeout=RENDER_TIMEOUT):
        w.galleries.save_gallery(out)
    qtbot.waitUntil(lambda: (out / "inspected" / "kept.png").is_file(), timeout=10_000)
    assert (out / "inspected" / "kept.png").read_bytes() == path.read_bytes()

    # the gallery opened again fills the render cache: the top units need no new render
    from fvdesk.core.inspect.cache import RenderCache

    w.inspect.cache = RenderCache()
    w.jobs.clear_tiles()
    with qtbot.waitSignal(w.galleries.opened, timeout=RENDER_TIMEOUT):
        w.galleries.open_gallery(out)
    assert len(w.inspect.cache) == 9
    before = [t.kind for t in w.tiles.tiles()].count("channel")
    w.inspect.panel.inspect_current()
    qtbot.waitUntil(lambda: _icons(w.inspect.panel.top_units, 1) == 9, timeout=RENDER_TIMEOUT)
    wait_idle(qtbot, w)
    assert [t.kind for t in w.tiles.tiles()].count("channel") == before


def test_opening_another_model_forgets_the_image(qtbot, demo_window, demo_model, tmp_path):
    w = demo_window
    _open(qtbot, w, _pattern_png(tmp_path, 6))
    wait_idle(qtbot, w)
    w.session.set_model(demo_model)
    assert w.inspect.image is None and w.inspect.panel.image_view.pixels is None
