"""The activation atlas in the app: a zoomable map of a layer's cells (``view``) and the window
that builds one as a background job and shows it (``window``).  Self-contained: the shell only
opens ``ActivationAtlasWindow`` from its menu action."""
