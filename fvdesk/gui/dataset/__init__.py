"""Dataset examples in the app: the controller, the folder dialog, the examples panel beside a
render and the layer-wide examples browser."""
