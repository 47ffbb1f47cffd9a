"""Training data and training loops.

samzoo trains on data it generates itself (``synthetic``), so a model can be rebuilt from the
repository alone, without downloading any data set.
"""
