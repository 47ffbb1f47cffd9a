"""Sources of the self-contained architecture file of CellSAM's BioImage.IO package.

The package's model file may import only torch, numpy and scipy, so it cannot use
segment-anything. ``sam.py`` is samzoo's own torch implementation of the SAM modules CellSAM needs
(same parameter names and math as segment-anything, checked against it in the tests) and
``pipeline.py`` the whole CellSAM inference as one ``nn.Module``. ``packaging.py`` concatenates
these with ``rcda.py`` and ``anchor_detr.py`` into one file.
"""
