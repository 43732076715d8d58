"""Inspecting one image (Qt-free): what the model sees in *this* picture and why it decided.

``image`` (open and prepare the file, torch-free), ``specs`` (the views as job specs,
torch-free), ``results`` (what the views find: numpy data, torch-free), ``analysis`` (prediction,
activations, attribution, neuron groups, activation grid; torch), ``objectives`` (accentuation
and inversion objectives; torch), ``runners`` (the specs' runners for ``run_job``; torch),
``cache`` (unit renders reused per model/layer/unit/settings).
"""
