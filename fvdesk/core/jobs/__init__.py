"""Jobs, above the engine (``optim``) and the dataset analysis (``dataset``).

The vocabulary: ``terms`` (objective terms, captions, objective expressions), ``specs`` (what to
render: units, combinations, directions, interpolations, the article's figures),
``dataset_specs`` (dataset examples, cluster facets), ``job`` (a spec plus how to run it, and the
provenance record that reproduces an image; the whole vocabulary in one import) and
``presentation`` (how each slot is captioned, labelled and filed).  Running them: ``run``
(``run_job``: one plan per spec kind, results with provenance), ``passes`` (the dataset-examples
pass, the runner of ``ExamplesJob``) and ``clusters`` (a unit's top examples as cluster facets).
The engine's ``Slot`` (one image of a batch) is ``optim.slots``."""
