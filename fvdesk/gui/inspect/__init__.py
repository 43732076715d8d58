"""The image inspector (issue 18): what the model sees in one image — its prediction, a layer's
activations, top units, attribution, neuron groups, the activation grid, accentuation and
inversion — as core image jobs (``fvdesk.core.inspect``) on the app's render queue."""
