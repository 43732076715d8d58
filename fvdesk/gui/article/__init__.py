"""The article's views: its figures' tiles and specs (``figures``), the controller, the direction
and interpolation dialogs, the combination builder and the neuron-position picker."""
