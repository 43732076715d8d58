"""The PySide6 desktop application; the only package that imports Qt.

Sub-packages by concern (docs/ARCHITECTURE.md): ``shell`` wires the features ``tree``,
``article``, ``dataset`` and ``galleries``, which share ``runtime``, ``settings`` and ``canvas``
below them; ``tests/gui/test_gui_layers.py`` enforces who may import whom.  ``app`` is the entry point.
"""

from fvdesk.core._moved import install
from fvdesk.gui._moved import MOVED

install(MOVED)
