"""The layer tree: the Qt model over the core's ``LayerGraph`` (``model``) and its panel."""
