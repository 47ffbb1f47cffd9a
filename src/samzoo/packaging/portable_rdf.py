"""rdf.yaml that both bioimage.io's shared runtime and the newest bioimageio.spec accept.

Why: bioimage.io runs models on a fixed runtime (bioimageio.core 0.10.4 with bioimageio.spec 0.5.10).
A description written by bioimageio.spec 0.5.12 (format 0.5.12) names ``covers`` and
``documentation`` as file descriptions (``{source, sha256}``); spec 0.5.10 wants plain paths there
and rejects the package ("Input is not a valid path"), while spec 0.5.12 rejects plain paths in a
format-0.5.12 description ("Input should be a valid dictionary or instance of FileDescr") but
accepts them in a format-0.5.10 one, which it upgrades on load. Measured with both versions on
samzoo's packages: format 0.5.10 with plain-path covers / documentation is valid in both (0.5.11 is
not: 0.5.12 already wants file descriptions there). Nothing else samzoo writes differs between them.

So packages are written with the installed spec (0.5.12 classes, full validation with hashes) and
then declared as format 0.5.10: covers and documentation become plain relative paths, and their
sha256 move to ``config.samzoo.file_sha256``, which samzoo's integrity check reads
(:mod:`samzoo.packaging.integrity`), so no file of a package goes unhashed.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

from ..errors import SamzooError

SHARED_RUNTIME_FORMAT = "0.5.10"
"""The format version written: the newest that bioimageio.spec 0.5.10 (bioimage.io's runtime) and
0.5.12 (bioimageio.core 0.11) both accept for samzoo's descriptions."""


def _source(entry: Any) -> tuple[str, str | None]:
    if isinstance(entry, Mapping):
        return str(entry["source"]), (str(entry["sha256"]) if entry.get("sha256") else None)
    return str(entry), None


def portable_description(rdf: Mapping[str, Any]) -> dict[str, Any]:
    """``rdf`` (a format 0.5.x description dict) as format 0.5.10 with plain-path covers and
    documentation; their sha256 go to ``config.samzoo.file_sha256``."""
    out = dict(rdf)
    hashes: dict[str, str] = {}
    covers = []
    for entry in rdf.get("covers") or []:
        source, sha = _source(entry)
        covers.append(source)
        if sha:
            hashes[source] = sha
    if covers:
        out["covers"] = covers
    if rdf.get("documentation") is not None:
        source, sha = _source(rdf["documentation"])
        out["documentation"] = source
        if sha:
            hashes[source] = sha
    out["format_version"] = SHARED_RUNTIME_FORMAT
    config = dict(out.get("config") or {})
    samzoo = dict(config.get("samzoo") or {})
    if hashes:
        samzoo["file_sha256"] = hashes
    config["samzoo"] = samzoo
    out["config"] = config
    return out


def _plain(value: Any) -> Any:
    """Round-trip YAML nodes -> plain dicts / lists (what :func:`portable_description` returns
    mixes both)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _yaml():
    from ruyaml import YAML  # what bioimageio.spec reads and writes YAML with

    yaml = YAML(typ="rt")  # keeps the field order bioimageio.spec wrote
    yaml.version = (1, 2)  # writes the "%YAML 1.2" header as bioimageio.spec does
    yaml.default_flow_style = False
    yaml.width = 4096
    return yaml


def save_portable_package(description: Any, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Write ``description`` as the package zip ``path`` with bioimageio.spec's
    ``save_bioimageio_package`` and declare it as format 0.5.10 (:func:`make_portable`). Every
    family writes its zips through this, so no package needs a newer spec than bioimage.io's runtime."""
    from bioimageio.spec import save_bioimageio_package

    save_bioimageio_package(description, output_path=Path(path), **save_kwargs)
    make_portable(path)
    return Path(path)


def make_portable(package: str | os.PathLike) -> None:
    """Rewrite the rdf.yaml of the package zip ``package`` (in place, other members unchanged)
    with :func:`portable_description`, after checking the result with the installed
    bioimageio.spec (a description it rejects is an error, and the zip is left untouched)."""
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description

    path = Path(package)
    yaml = _yaml()
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info.filename)) for info in zf.infolist()]
    names = [info.filename for info, _ in members]
    if "rdf.yaml" not in names:
        raise SamzooError(f"{path} has no rdf.yaml to rewrite")
    rdf = yaml.load(dict(zip(names, (data for _, data in members)))["rdf.yaml"].decode("utf-8"))
    portable = portable_description(rdf)
    with ValidationContext(perform_io_checks=False, log_warnings=False):
        checked = build_description(portable)
    if isinstance(checked, InvalidDescr):
        first = checked.validation_summary.errors[0]
        raise SamzooError(f"the format-{SHARED_RUNTIME_FORMAT} description of {path.name} is invalid: "
                          f"{'.'.join(map(str, first.loc))}: {first.msg}")
    text = io.StringIO()
    yaml.dump(_plain(portable), text)
    tmp = path.with_name(path.name + ".rdf-tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as out:
            for info, data in members:
                out.writestr(info, text.getvalue().encode("utf-8") if info.filename == "rdf.yaml" else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
