"""The layer tree for the models of issue 11: greyed left-out layers, token layers described."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from fvdesk.core.model.loader import load_model
from fvdesk.gui.tree.model import LayerRole, LayerTreeModel
from tests import models as test_models


def _rows(model: LayerTreeModel):
    stack = [model.index(r, 0) for r in range(model.rowCount())]
    while stack:
        idx = stack.pop()
        yield idx
        stack += [model.index(r, 0, idx) for r in range(model.rowCount(idx))]


def test_left_out_layers_are_greyed_with_the_reason(qapp, model_cache: Path) -> None:
    m = load_model(test_models.conv_custom_op_onnx(model_cache), check_parity=False)
    tree = LayerTreeModel(m.graph, m.labels)
    by_layer = {tree.data(i, LayerRole): i for i in _rows(tree) if tree.data(i, LayerRole)}
    assert set(by_layer) == {
        "stem/conv",
        "stem/relu",
        "block/conv",
        "block/relu",
        "vendor/head",
        "fc",
    }
    head = by_layer["vendor/head"]
    assert not tree.flags(head) & Qt.ItemFlag.ItemIsEnabled  # greyed, not selectable
    assert not tree.hasChildren(head)  # no units to render
    tip = tree.data(head, Qt.ItemDataRole.ToolTipRole)
    assert "not converted to torch" in tip and "com.vendor::FusedPoolHead is a custom-domain" in tip
    fc_tip = tree.data(by_layer["fc"], Qt.ItemDataRole.ToolTipRole)
    assert "depends on 'vendor/head'" in fc_tip
    conv = by_layer["block/conv"]
    assert tree.flags(conv) & Qt.ItemFlag.ItemIsEnabled and tree.hasChildren(conv)


def test_token_layers_in_the_tree(qapp, model_cache: Path) -> None:
    path = test_models.cached_export(model_cache, "tiny_deit", test_models.TinyDeiT, size=32)
    m = load_model(path, check_parity=False)
    tokens = [x for x in m.graph.layers if x.kind == "tokens"]
    assert tokens and all(
        x.extra_tokens == 2 and x.grid == (4, 4) for x in tokens if x.tokens == 18
    )
    tree = LayerTreeModel(m.graph, m.labels)
    name = next(x.name for x in tokens if x.tokens == 18)
    idx = next(i for i in _rows(tree) if tree.data(i, LayerRole) == name)
    tip = tree.data(idx, Qt.ItemDataRole.ToolTipRole)
    assert "20 channels × 18 tokens (2 extra + 4×4 patches), token layer" in tip
    assert tree.data(tree.index(idx.row(), 3, idx.parent())) == "20"
    tree.fetchMore(idx)
    assert tree.rowCount(idx) == 20
