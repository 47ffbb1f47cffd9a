"""μSAM's training objective (micro-sam's recipe, written for samzoo): SAM's prompt encoder and
mask decoder trained with iterative prompts (``prompts``, ``interactive``) jointly with the AIS
decoder (``targets``, ``losses``) on one shared image embedding (``objective``), run by the shared
training loop (``samzoo.training.loop``) through ``trainer``. ``config`` holds ``TrainConfig`` and
the presets; ``lora`` the encoder adapters; ``rescale``, ``build_default`` and ``build_real`` turn
runs into shipped models.

Shared code reaches this package only through ``FamilySpec.train`` / ``train_presets``.
"""
