"""Context menus of the layer tree and of the tiles: built on demand, acting through the job
controller and the article's controller (what they offer depends on what was right-clicked)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QMenu, QWidget

from fvdesk.core.optim.kinds import FIGURE_KINDS, kind_info
from fvdesk.gui.article.controller import ArticleController
from fvdesk.gui.canvas.tiles import QUEUED, RUNNING, Tile
from fvdesk.gui.runtime.jobs import JobController
from fvdesk.gui.runtime.selection import RowRef
from fvdesk.gui.shell.prefs import Prefs


def __getattr__(name: str) -> Any:
    if name == "UNIT_KINDS":  # the kinds the figures apply to are the core's vocabulary now
        warnings.warn("qt_menus.UNIT_KINDS is deprecated; use fvdesk.core.optim.kinds.FIGURE_KINDS",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return FIGURE_KINDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def elide(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n // 2) :]


def tree_menu(
    parent: QWidget,
    ref: RowRef,
    jobs: JobController,
    article: ArticleController,
    examples: Callable[[str], None] | None = None,
) -> QMenu:
    """Render a unit (facets, negative, other class objective, the article's figures,
    combination) or a layer (first N, all, DeepDream, directions); ``examples(layer)`` opens
    the layer's dataset examples (None: no dataset chosen)."""
    layer = ref.layer
    assert layer is not None
    name = layer.name
    ui = jobs.ui()
    menu = QMenu(parent)
    if ref.kind == "unit":
        unit = ref.unit
        label = jobs.session.unit_label(name, unit)
        menu.addSection(elide(f"{name}:{unit}" + (f" ({label})" if label else ""), 60))
        render = menu.addAction("Render", lambda: jobs.render_units(name, [unit]))
        render.setShortcut(QKeySequence("Ctrl+R"))
        facets = int(ui["facets"])
        menu.addAction(
            f"Render {facets} Diverse Facets",
            lambda: jobs.render_units(name, [unit], facets=facets),
        )
        menu.addAction("Render Negative", lambda: jobs.render_units(name, [unit], negative=True))
        if jobs.session.model.graph.logits_name == name:
            other = "prob" if ui["class_kind"] == "logit" else "logit"
            menu.addAction(
                f"Render as {'Probability' if other == 'prob' else 'Logit'}",
                lambda: jobs.render_units(name, [unit], kind=other),
            )
        figures(menu, article, name, unit)
        menu.addAction("Interpolate…", lambda: article.interpolate([(name, unit)], parent))
        pick = menu.addAction("Pick Neuron Position…", lambda: article.pick_position(name, unit))
        pick.setEnabled(layer.spatial is not None)
        menu.addSeparator()
        menu.addAction("Add to Combination", lambda: article.add_units([(name, unit)]))
        menu.addAction("Subtract in Combination", lambda: article.add_units([(name, unit)], -1.0))
        return menu
    n = max(0, layer.channels)
    first = min(int(ui["first_n"]), n)
    menu.addSection(elide(name, 60))
    menu.addAction(
        f"Render First {first} Units", lambda: jobs.render_layer(name, first)
    ).setEnabled(n > 0)
    menu.addAction(
        f"Render All {n} Units (batched)", lambda: jobs.render_layer(name, n)
    ).setEnabled(n > 0)
    dd = menu.addAction("DeepDream", lambda: jobs.render_deepdream(name))
    dd.setEnabled(layer.dreamable)
    directions = menu.addAction("Render Directions…", lambda: article.directions(layer, parent))
    directions.setEnabled(layer.kind == "feature" and n > 0)
    menu.addSeparator()
    ex = menu.addAction("Dataset Examples of This Layer", lambda: examples and examples(name))
    ex.setEnabled(examples is not None and n > 0)
    ex.setToolTip("Choose a dataset (File > Dataset…) first." if examples is None else "")
    menu.addAction("Copy Layer Name", lambda: QGuiApplication.clipboard().setText(name))
    return menu


def figures(menu: QMenu, article: ArticleController, layer: str, unit: int) -> None:
    """The article's figures of one unit: its regularization spectrum, the steepest-descent view."""
    menu.addSeparator()
    menu.addAction("Regularization Spectrum", lambda: article.spectrum(layer, unit))
    menu.addAction("Steepest Descent View", lambda: article.steepest(layer, unit))


def tile_menu(
    parent: QWidget,
    tile: Tile | None,
    jobs: JobController,
    actions: dict[str, QAction],
    show_in_tree: Callable[[str, int], None],
    article: ArticleController | None = None,
) -> QMenu:
    """Zoom, copy, cancel, find in the tree, render again, a unit's figures and combination;
    and the canvas-wide commands."""
    menu = QMenu(parent)
    if tile is not None:
        menu.addSection(elide(tile.title(), 50))
        menu.addAction(actions["zoom_tile"])
        copy = menu.addAction(
            "Copy Image",
            lambda: QGuiApplication.clipboard().setImage(tile.image),  # type: ignore[arg-type]  # the action exists only for tiles with an image
        )
        copy.setEnabled(tile.image is not None)
        task = jobs.task_of(tile)
        if tile.state in (QUEUED, RUNNING) and task is not None:
            menu.addAction("Cancel This Job", lambda: jobs.queue.cancel_job(task))
        model = jobs.session.model
        if model is not None and tile.layer in model.graph:
            menu.addAction("Show in Layer Tree", lambda: show_in_tree(tile.layer, tile.unit))
            if tile.finished and tile.spec is not None and tile.model_sha == model.sha256:
                menu.addAction("Render Again (new seed)", lambda: jobs.render_again(tile))
            if article is not None and tile.unit >= 0 and kind_info(tile.kind).figures:
                figures(menu, article, tile.layer, tile.unit)
                unit = [(tile.layer, tile.unit)]
                menu.addAction("Add to Combination", lambda: article.add_units(unit))
        menu.addSeparator()
        menu.addAction(actions["remove_tiles"])
    menu.addAction(actions["select_all"])
    menu.addAction(actions["clear_tiles"])
    return menu


def fill_recent_menu(menu: QMenu, prefs: Prefs, open_recent: Callable[[str], None]) -> None:
    """File > Open Recent, filled each time it is about to show (the list changes elsewhere)."""
    menu.clear()
    files = prefs.recent_files()
    for i, f in enumerate(files):
        text = f"&{i + 1} {Path(f).name}" if i < 9 else Path(f).name
        act = menu.addAction(text, lambda f=f: open_recent(f))  # type: ignore[misc]  # the default binds each loop turn's file
        act.setToolTip(f)
        act.setStatusTip(f)
    if files:
        menu.addSeparator()
        menu.addAction("Clear Recent", prefs.clear_recent)
    else:
        menu.addAction("No recent models").setEnabled(False)
