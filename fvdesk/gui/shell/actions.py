"""The one table of actions: menus, toolbar and the shortcuts list are all built from it.

Keeping name, shortcut and help text in one place means the Help > Keyboard Shortcuts list can
never disagree with the menus, and a test can check that no two actions share a shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QMenu,
    QMenuBar,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class ActionSpec:
    """One user command.  ``menu`` is the top-level menu it appears in ("" for none)."""

    key: str
    text: str
    shortcut: str | QKeySequence.StandardKey | None
    help: str
    menu: str
    icon: QStyle.StandardPixmap | None = None
    checkable: bool = False
    toolbar: bool = False


SEPARATOR = "-"
SUBMENU_RECENT = "@recent"
SUBMENU_DOCKS = "@docks"

_SP = QStyle.StandardPixmap
_SK = QKeySequence.StandardKey

#: Every command of the application, in menu order.  ``SEPARATOR`` / ``SUBMENU_*`` keys are
#: placeholders the menu builder expands.
# fmt: off
ACTIONS: tuple[ActionSpec, ...] = (
    # key, text, shortcut, help, menu, icon
    ActionSpec("open", "&Open Model…", _SK.Open, "Open an ONNX image classifier.", "&File", _SP.SP_DialogOpenButton, toolbar=True),
    ActionSpec(SUBMENU_RECENT, "Open &Recent", None, "Models opened recently.", "&File"),
    ActionSpec("open_demo", "Open &Demo Model", None, "Open the small pattern classifier shipped with fvdesk.", "&File"),
    ActionSpec("open_image", "Open &Image…", "Ctrl+I", "Inspect an image: what the open model predicts, which units fire where, attribution, neuron groups (Inspect Image panel).", "&File"),
    ActionSpec("open_gallery", "Open &Gallery…", "Ctrl+Shift+O", "Show the images of a saved gallery folder as tiles.", "&File"),
    ActionSpec("dataset", "Da&taset…", "Ctrl+Shift+D", "Choose a folder of your images for this model: each render's dataset examples appear beside it.", "&File"),
    ActionSpec("dataset_spectrum", "Use the Dataset's Spectrum for &MACO", None, "MACO keeps the mean amplitude spectrum of the dataset folder instead of fvdesk's (Render Settings > MACO spectrum).", "&File"),
    ActionSpec(SEPARATOR, "", None, "", "&File"),
    ActionSpec("save_gallery", "&Save Gallery…", _SK.Save, "Write the finished tiles as a gallery folder (PNGs, contact sheet, gallery.json, index.html).", "&File", _SP.SP_DialogSaveButton, toolbar=True),
    ActionSpec(SEPARATOR, "", None, "", "&File"),
    ActionSpec("close_model", "&Close Model", _SK.Close, "Close the current model (cancels its renders).", "&File"),
    ActionSpec(SEPARATOR, "", None, "", "&File"),
    ActionSpec("quit", "&Quit", _SK.Quit, "Quit fvdesk (cancels running renders).", "&File"),

    ActionSpec("find", "&Find Layer…", _SK.Find, "Filter the layer tree by name or op type.", "&Edit"),
    ActionSpec(SEPARATOR, "", None, "", "&Edit"),
    ActionSpec("select_all", "Select &All Tiles", _SK.SelectAll, "Select every tile.", "&Edit"),
    ActionSpec("remove_tiles", "&Remove Selected Tiles", _SK.Delete, "Remove the selected tiles (a job whose tiles are all removed is cancelled).", "&Edit", _SP.SP_DialogDiscardButton),
    ActionSpec("clear_tiles", "C&lear All Tiles", "Ctrl+Shift+Del", "Remove every tile and cancel all renders.", "&Edit", _SP.SP_TrashIcon, toolbar=True),

    ActionSpec("render_selected", "&Render Selection", "Ctrl+R", "Render the units selected in the tree, or the first N units of a selected layer.", "&Render", _SP.SP_MediaPlay, toolbar=True),
    ActionSpec("render_facets", "Render Diverse &Facets", "Ctrl+Shift+F", "Render several diverse images of the selected unit (diversity objective).", "&Render"),
    ActionSpec("render_negative", "Render &Negative", "Ctrl+Shift+N", "Minimize the selected unit instead of maximizing it.", "&Render"),
    ActionSpec("render_first", "Render &First N Units", "Ctrl+Shift+R", "Render the first N units of the selected layer (N is set in Render Settings).", "&Render"),
    ActionSpec("render_all", "Render A&ll Units", None, "Render every unit of the selected layer, batched.", "&Render"),
    ActionSpec("deepdream", "&DeepDream Layer", "Ctrl+D", "Maximize the whole activation of the selected layer (mean of squares).", "&Render"),
    ActionSpec(SEPARATOR, "", None, "", "&Render"),
    ActionSpec("add_combination", "&Add to Combination", "Ctrl+K", "Add the selected units to the Combination panel (a weighted sum of objectives).", "&Render"),
    ActionSpec("render_combination", "Render &Combination", "Ctrl+Shift+K", "Render the Combination panel's weighted sum as one image.", "&Render"),
    ActionSpec("clear_combination", "Clear Com&bination", None, "Remove every term from the Combination panel.", "&Render"),
    ActionSpec("layer_examples", "Dataset &Examples of Layer", "Ctrl+Shift+E", "Every unit of the selected layer as a row of its top dataset examples, without rendering.", "&Render"),
    ActionSpec("atlas", "A&tlas of Selected Layers…", "Ctrl+Shift+A", "Render every unit of the selected layers into a folder, one gallery per layer; choose the same folder again to resume.", "&Render"),
    ActionSpec("activation_atlas", "Acti&vation Atlas…", None, "A layer's activation vectors over a folder of your images, laid out by UMAP, each grid cell's mean rendered: a zoomable map (Carter et al. 2019).", "&Render"),
    ActionSpec(SEPARATOR, "", None, "", "&Render"),
    ActionSpec("cancel", "&Cancel Current Render", "Esc", "Stop the render that is running; queued jobs go on.", "&Render", _SP.SP_MediaStop, toolbar=True),
    ActionSpec("cancel_all", "Cancel &All Renders", "Shift+Esc", "Stop the running render and drop the queue.", "&Render"),

    ActionSpec("spectrum", "Regularization &Spectrum", "Ctrl+Shift+S", "Render the selected unit under each regularizer of the article, from none to a learned prior: one row.", "Fi&gures"),
    ActionSpec("spectrum_combination", "Regularization Spectrum of the &Combination", None, "The regularization spectrum of the Combination panel's weighted sum.", "Fi&gures"),
    ActionSpec("steepest", "Steepest &Descent View", None, "One step and a full render of the selected unit under three metrics: L2, L∞ and decorrelated Fourier.", "Fi&gures"),
    ActionSpec(SEPARATOR, "", None, "", "Fi&gures"),
    ActionSpec("pick_position", "Pick Neuron &Position…", "Ctrl+Shift+P", "Show the selected unit's spatial grid to render one neuron, at a position you click.", "Fi&gures"),
    ActionSpec("directions", "Render Di&rections…", None, "Render random directions, or directions from a .npy file, in the selected layer's channel space.", "Fi&gures"),
    ActionSpec("interpolate", "&Interpolate…", "Ctrl+Shift+I", "Interpolate between two objectives (the selected units) in frames that line up.", "Fi&gures"),
    ActionSpec(SEPARATOR, "", None, "", "Fi&gures"),
    ActionSpec("open_generator", "Open &Generator (Learned Prior)…", None, "Choose a generator ONNX (latent to image) and render through it: the learned prior.", "Fi&gures"),

    ActionSpec("zoom_tile", "&Zoom Tile", "Space", "Open the current tile at full size (nearest-neighbour scaling).", "&View", _SP.SP_FileDialogContentsView),
    ActionSpec("bigger_tiles", "&Larger Tiles", _SK.ZoomIn, "Show the tiles larger.", "&View"),
    ActionSpec("smaller_tiles", "&Smaller Tiles", _SK.ZoomOut, "Show the tiles smaller.", "&View"),
    ActionSpec(SEPARATOR, "", None, "", "&View"),
    ActionSpec(SUBMENU_DOCKS, "&Panels", None, "Show or hide the panels.", "&View"),
    ActionSpec("reset_layout", "&Reset Layout", None, "Put the panels back where they started.", "&View"),

    ActionSpec("shortcuts", "&Keyboard Shortcuts", "F1", "List every command and its shortcut.", "&Help"),
    ActionSpec("about", "&About fvdesk", None, "Versions of fvdesk, its libraries and the device.", "&Help"),
)
# fmt: on


def shortcut_text(spec: ActionSpec) -> str:
    """The shortcut as the user sees it on this platform (standard keys resolved)."""
    if spec.shortcut is None:
        return ""
    if isinstance(spec.shortcut, QKeySequence.StandardKey):
        seqs = QKeySequence.keyBindings(spec.shortcut)
        return seqs[0].toString(QKeySequence.SequenceFormat.NativeText) if seqs else ""
    return QKeySequence(spec.shortcut).toString(QKeySequence.SequenceFormat.NativeText)


def command_specs() -> list[ActionSpec]:
    """The real commands (placeholders left out)."""
    return [s for s in ACTIONS if not s.key.startswith(("-", "@"))]


def build_actions(parent: QWidget) -> dict[str, QAction]:
    """One ``QAction`` per command, owned by ``parent`` so its shortcuts work window-wide."""
    style = parent.style()
    actions: dict[str, QAction] = {}
    for spec in command_specs():
        act = QAction(spec.text, parent)
        act.setObjectName(f"action_{spec.key}")
        if spec.shortcut is not None:
            if isinstance(spec.shortcut, QKeySequence.StandardKey):
                act.setShortcuts(spec.shortcut)
            else:
                act.setShortcut(QKeySequence(spec.shortcut))
        tip = spec.help
        keys = shortcut_text(spec)
        act.setStatusTip(tip)
        act.setToolTip(f"{tip} ({keys})" if keys else tip)
        if spec.icon is not None:
            act.setIcon(style.standardIcon(spec.icon))
        act.setCheckable(spec.checkable)
        parent.addAction(act)
        actions[spec.key] = act
    return actions


def build_menus(menubar: QMenuBar, actions: dict[str, QAction]) -> dict[str, QMenu]:
    """Fill ``menubar`` from the table; returns the menus and submenus by key/title."""
    menus: dict[str, QMenu] = {}
    for spec in ACTIONS:
        menu = menus.get(spec.menu)
        if menu is None:
            menu = menubar.addMenu(spec.menu)
            menu.setObjectName(f"menu_{spec.menu.replace('&', '').lower()}")
            menus[spec.menu] = menu
        if spec.key == SEPARATOR:
            menu.addSeparator()
        elif spec.key.startswith("@"):
            sub = menu.addMenu(spec.text)
            sub.setToolTipsVisible(True)
            sub.setObjectName(f"menu_{spec.key[1:]}")
            menus[spec.key] = sub
        else:
            menu.addAction(actions[spec.key])
    return menus


class ShortcutsDialog(QDialog):
    """Help > Keyboard Shortcuts: the table of commands, generated, never hand-written."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard Shortcuts — fvdesk")
        specs = command_specs()
        table = QTableWidget(len(specs), 4, self)
        table.setObjectName("shortcutsTable")
        table.setHorizontalHeaderLabels(["Menu", "Command", "Shortcut", "What it does"])
        for row, spec in enumerate(specs):
            for col, text in enumerate(
                (
                    spec.menu.replace("&", ""),
                    spec.text.replace("&", ""),
                    shortcut_text(spec),
                    spec.help,
                )
            ):
                table.setItem(row, col, QTableWidgetItem(text))
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        header = table.horizontalHeader()
        for col in range(3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.table = table
        self.resize(820, 560)
