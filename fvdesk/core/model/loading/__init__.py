"""The stages of ``load_model``, one module each; ``fvdesk.core.model.loader`` runs them in order.

``context`` (progress, phase, timings, warnings), ``read`` (the file, vetted), ``inputs`` (the
image input and the size), ``build`` (graph repair, conversion and the first probe, with the
fallback that leaves a repair out), ``convert`` (onnx2torch, a failing node reported),
``probe`` (forwards that measure shapes, batch and sizes), ``layer_list`` (the targetable
layers), ``metadata`` (preprocessing and labels) and ``parity`` (torch against onnxruntime).
"""
