"""fvdesk: feature visualization for ONNX image classifiers."""

__version__ = "0.1.0"
