"""Training, family-independent: the loop (``loop``), which family trains a config (``dispatch``),
data sources and patches (``data``, ``synthetic``, ``split_data``), provenance and the CLI.

What is trained and how (model, targets, losses, validation) is a family's: ``FamilySpec.train``
(μSAM: ``samzoo.families.microsam.training``). samzoo can train on data it generates itself
(``synthetic``), so a model can be rebuilt from the repository alone.
"""
