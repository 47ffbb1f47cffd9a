"""Turning images and decoder outputs into instance segmentations.

Input validation and normalization (``preprocess``), seeded watershed on the AIS decoder outputs
(``ais``), tiling of large images (``tiling``) and slice-to-volume merging (``volume``). These
modules work on numpy arrays only, so they can be tested and reused without a model.
"""
