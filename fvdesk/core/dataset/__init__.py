"""Dataset examples (Qt-free): what each unit responds to in the user's own images.

``folder`` (scan and decode an image folder), ``receptive`` (receptive fields from the ONNX
graph), ``stats`` (streaming top-k and histograms), ``cache`` (per-image rows under the user's
cache folder), ``engine`` (the torch and onnxruntime pass engines), ``passes`` (the
``ExamplesJob`` runner), ``examples`` (a layer's summary, crops), ``kmeans`` and ``clusters``
(facets from dataset clusters), ``export`` (examples in galleries).
"""
