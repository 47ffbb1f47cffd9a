"""Check that a package zip is what bioimage.io's shared runtime (bioimageio.spec 0.5.10) reads:
format 0.5.10 with covers and documentation as plain relative paths (spec 0.5.10 rejects
``{source, sha256}`` there; measured with bioimageio.core 0.10.4), their sha256 kept in
``config.samzoo.file_sha256``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import yaml


def assert_shared_runtime_format(package: str | Path) -> None:
    with zipfile.ZipFile(package) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        names = set(zf.namelist())
    assert rdf["format_version"] == "0.5.10", (package, rdf["format_version"])
    hashes = rdf["config"]["samzoo"].get("file_sha256", {})
    for entry in [*(rdf.get("covers") or []), *([rdf["documentation"]] if rdf.get("documentation") else [])]:
        assert isinstance(entry, str), (package, entry)
        assert entry in names and entry in hashes, (package, entry)
