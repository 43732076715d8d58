"""The graph repairs ``canonicalize`` runs, one module per family of passes.

``common`` (the ``Report``), ``structure`` (names, order, inputs, dims), ``weights`` (weight-free
copies for onnx's tools and onnxruntime), ``constants`` (folding), ``shapes`` (inference and
measurement), ``ops`` (opset lowering, function bodies) and ``padding`` (pooling and Pad
rewrites).  The order they run in, and which can be skipped, is ``canonicalize.PASSES``.
"""
