"""The app's background machinery, shared by every feature: the render thread and background
calls (``worker``), runners for widgets (``runners``), the model session (``session``), the
controllers' base (``controller``), the job controller (``jobs``) and the tree-row references
commands take (``selection``)."""
