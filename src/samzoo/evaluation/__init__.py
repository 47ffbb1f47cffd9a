"""Evaluation of instance segmentations.

Kept free of model code so that metrics and the classical baseline can score any label image,
ours or another tool's, and so that the bar a trained model must clear is computed the same way
everywhere: ``metrics`` (IoU matching, mSA, Dice), ``baseline`` (Otsu + distance-transform
watershed) and ``real_data`` (small real, annotated images shipped on PyPI, for evaluation only).
"""
