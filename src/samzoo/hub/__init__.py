"""Model hub: resolve model IDs (registry names, bioimage.io IDs, hf://, Zenodo DOIs, URLs,
paths) and fetch their files into the samzoo cache (:func:`samzoo.cache.cache_dir`), verified.

Main entry points::

    fetch("vit_b_lm")            -> Path of the checkpoint (decoder fetched too)
    fetch_files("vit_b_lm")      -> {"checkpoint": Path, "decoder": Path}
    resolve("hf://org/repo@v1")  -> ResolvedModel (no network)
"""

from .download import compute_hash, is_offline
from .fetch import (
    CachedModel,
    cache_clear,
    cache_list,
    fetch,
    fetch_files,
    list_models,
    main_file,
    microsam_cache_dir,
    model_info,
)
from .resolve import ResolvedModel, resolve

__all__ = [
    "CachedModel",
    "ResolvedModel",
    "cache_clear",
    "cache_list",
    "compute_hash",
    "fetch",
    "fetch_files",
    "is_offline",
    "list_models",
    "main_file",
    "microsam_cache_dir",
    "model_info",
    "resolve",
]
