"""The shell: the main window, its actions, menus, docks, status bar, About box and preferences.

The only package that wires the feature packages (``tree``, ``article``, ``dataset``,
``galleries``) together; ``tests/gui/test_gui_layers.py`` enforces it.
"""
