"""Data files shipped with fvdesk (demo model, label lists, icons); installed as ``fvdesk.resources``."""
