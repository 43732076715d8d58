"""The activation atlas of a layer over the user's images (Carter et al., Distill 2019).

``spec`` (torch-free): ``ActivationAtlasJob``, the job spec front ends build; ``collect``: the
activation vectors at sampled positions of every image; ``layout``: UMAP to 2-D, the grid and its
cells, the class each cell supports; ``build``: the runner ``run_job`` uses (collect, lay out,
render every cell's mean direction, committed chunk by chunk so a run resumes).  The folder it
writes is read back by ``fvdesk.core.output.actatlas`` (torch-free, for the app's view).
"""
