"""The one documented global of samzoo: where downloaded models (and other caches) live.

``SAMZOO_CACHE_DIR`` when set (``~`` is expanded), else the platform's user cache folder
``<user cache dir>/samzoo`` (``~/.cache/samzoo`` on Linux, ``~/Library/Caches/samzoo`` on macOS,
``%LOCALAPPDATA%\\samzoo\\Cache`` on Windows).

The value is read on every call, so changing the environment variable at run time takes effect.
The folder is not created here; code that writes into it creates what it needs.

Layout used by the model hub (``samzoo.hub``)::

    models/<registry id>/        files of registry entries (checkpoint, decoder)
    url/<url digest>/            files fetched from plain http(s) URLs
    zenodo/<record id>/          files of Zenodo records (+ the record's JSON)
    bioimageio/<resource id>/    unpacked BioImage.IO packages (rdf.yaml + files)
    huggingface/                 the huggingface_hub cache for hf:// sources
    registries/                  cached copies of user registries given as URLs
    embeddings/                  image embeddings (samzoo.segmentation; listed by `samzoo cache list`,
                                 removed by `samzoo cache clear` or `samzoo cache clear embeddings`)

Each folder keeps its bookkeeping (verification records, locks, partial downloads) in a hidden
``.samzoo/`` sub-folder. Copying the whole cache folder to another machine (and pointing
``SAMZOO_CACHE_DIR`` at it) makes its models available offline there.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SAMZOO_CACHE_DIR"


def cache_dir() -> Path:
    """The samzoo cache folder (see the module docstring); not created by this call."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("samzoo", appauthor=False))
