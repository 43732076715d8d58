"""Running jobs, above the engine (``optim``) and the dataset analysis (``dataset``): ``run``
(``run_job``: one plan per spec kind, results with provenance), ``passes`` (the dataset-examples
pass, the runner of ``ExamplesJob``) and ``clusters`` (a unit's top examples as cluster facets).
The job specs themselves are ``optim.jobs``: the engine's batches are made of their slots."""
