"""The render settings dock (``panel``): the values every controller reads its settings from."""
