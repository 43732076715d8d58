"""Galleries in the app: saving tiles, opening galleries as tiles, and atlases (``controller``)."""
