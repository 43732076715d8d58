"""The canvas: the tile model (``tiles``), the tile view, the canvas panel and the zoom window.
Display only; the lowest layer of the app (it imports no other part of ``fvdesk.gui``)."""
