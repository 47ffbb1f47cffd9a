"""What a publication uploads: the package zip(s), the checkpoint, the README, the cover and the card."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CardError, PublishError
from ..packaging.card_files import CARD_FILENAME  # the card's file name in a package and in a publication
from .card import ModelCard, load_card

README_FILENAME = "README.md"


@dataclass(frozen=True)
class UploadFile:
    name: str  # file name on the server
    path: Path
    role: str  # package | checkpoint | readme | cover | card
    size: int
    sha256: str
    md5: str
    git_sha1: str  # git blob id: sha1(b"blob <size>\0" + content), as Hugging Face reports non-LFS files

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "size": self.size,
            "sha256": self.sha256,
            "md5": self.md5,
            "source": "rendered from the model card" if self.role == "readme" else str(self.path),
        }


def hash_file(path: Path) -> tuple[int, str, str, str]:
    """(size, sha256, md5, git blob sha1) of a file, read once."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        read = 0
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
            git.update(chunk)
            read += len(chunk)
    if read != size:
        raise PublishError(f"{path} changed while it was being read; run the command again")
    return size, sha.hexdigest(), md5.hexdigest(), git.hexdigest()


def _upload_file(path: Path, role: str, name: str | None = None) -> UploadFile:
    size, sha256, md5, git_sha1 = hash_file(path)
    return UploadFile(name=name or path.name, path=path, role=role, size=size, sha256=sha256, md5=md5, git_sha1=git_sha1)


def restricted_licence(package: Path) -> str | None:
    """The licence note of a package whose weights must not be redistributed (rdf
    ``config.samzoo.redistributable: false``, as samzoo writes for e.g. CellSAM's gated weights)."""
    import yaml

    with zipfile.ZipFile(package) as zf:
        names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] in ("rdf.yaml", "bioimageio.yaml")]
        if not names:
            return None
        try:
            rdf = yaml.safe_load(zf.read(names[0]))
        except yaml.YAMLError:
            return None
    samzoo_config = ((rdf or {}).get("config") or {}).get("samzoo") or {}
    if samzoo_config.get("redistributable") is False:
        return str(samzoo_config.get("licence") or rdf.get("license") or "a licence that forbids redistribution")
    return None


def check_licences(packages: Sequence[Path], *, public: bool, confirmed: bool) -> None:
    """Refuse to put weights with a no-redistribution licence on a public record unless the user
    confirms (``--licence-allows-publishing``) that their licence permits it."""
    if not public or confirmed:
        return
    for package in packages:
        note = restricted_licence(package)
        if note is not None:
            raise PublishError(
                f"{package.name} holds weights whose licence restricts redistribution ({note}); publishing "
                "them to a public record needs --licence-allows-publishing (only if you have permission)")


def _check_checkpoint(path: Path) -> None:
    """The checkpoint must load as a model (tensors only; nothing in it runs)."""
    from ..api import load_checkpoint_file
    from ..errors import SamzooError

    try:
        load_checkpoint_file(path)
    except SamzooError as err:
        raise PublishError(f"checkpoint {path} does not load, so it is not published: {err}") from None


def check_inputs(packages: Sequence[str | os.PathLike], checkpoint: str | os.PathLike | None) -> list[Path]:
    """The package paths, after checking -- before any request -- that each is a readable zip whose
    description is valid and whose files match their sha256 (``samzoo.packaging.integrity``), and
    that the checkpoint loads: ``publish`` never uploads whatever it is given."""
    from ..packaging.integrity import verify_package

    if not packages:
        raise PublishError("no package given: pass the BioImage.IO package zip(s) to publish")
    paths = []
    for item in packages:
        path = Path(item)
        if not path.is_file():
            raise PublishError(f"package {path} does not exist (expected a BioImage.IO package .zip)")
        if not zipfile.is_zipfile(path):
            raise PublishError(f"package {path} is not a zip file (expected a BioImage.IO package .zip)")
        verify_package(path)
        paths.append(path)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise PublishError(f"checkpoint {checkpoint} does not exist")
        _check_checkpoint(Path(checkpoint))
    return paths


def resolve_card(card: str | os.PathLike | ModelCard | None, packages: Sequence[Path], workdir: Path) -> tuple[ModelCard, Path]:
    """The model card to publish and a YAML file holding it.

    ``card`` is a path or a loaded card; without one, the first package that holds a
    ``samzoo_card.yaml`` at its top level provides it (extracted, with its cover, into ``workdir``).
    """
    if isinstance(card, ModelCard):
        if card.source is None or not card.source.is_file():
            raise PublishError("the model card has no source file: pass the card's YAML path instead")
        return card, card.source
    if card is not None:
        path = Path(card)
        return load_card(path), path
    for package in packages:
        with zipfile.ZipFile(package) as archive:
            names = set(archive.namelist())
            if CARD_FILENAME not in names:
                continue
            target = workdir / "card-from-package"
            target.mkdir(parents=True, exist_ok=True)
            card_path = target / CARD_FILENAME
            card_path.write_bytes(archive.read(CARD_FILENAME))
            try:
                import yaml

                cover = (yaml.safe_load(card_path.read_text(encoding="utf-8")) or {}).get("cover")
            except Exception:  # noqa: BLE001 - load_card below reports YAML problems properly
                cover = None
            if isinstance(cover, str) and cover in names and not Path(cover).is_absolute() and ".." not in Path(cover).parts:
                (target / cover).parent.mkdir(parents=True, exist_ok=True)
                (target / cover).write_bytes(archive.read(cover))
            try:
                return load_card(card_path), card_path
            except CardError as exc:
                raise CardError(f"{exc} (card read from {package})") from None
    raise PublishError(
        f"no model card: pass --card CARD.yaml (see model_cards/), or package the model with a {CARD_FILENAME}"
    )


def collect_files(
    packages: Sequence[Path],
    checkpoint: str | os.PathLike | None,
    card: ModelCard,
    card_file: Path,
    readme_text: str,
    staging: Path,
) -> list[UploadFile]:
    """Hash everything a publication uploads; README.md is written to ``staging``."""
    files = [_upload_file(p, "package") for p in packages]
    if checkpoint is not None:
        files.append(_upload_file(Path(checkpoint), "checkpoint"))
    readme = staging / README_FILENAME
    readme.write_text(readme_text, encoding="utf-8")
    files.append(_upload_file(readme, "readme"))
    cover = card.cover_path
    if cover is not None:
        files.append(_upload_file(cover, "cover"))
    files.append(_upload_file(card_file, "card", CARD_FILENAME))
    seen: dict[str, UploadFile] = {}
    for f in files:
        if f.name in seen:
            raise PublishError(
                f"two files would be uploaded as {f.name!r} ({seen[f.name].path} and {f.path}): rename one"
            )
        seen[f.name] = f
    return files


_STAGING_PREFIX = "samzoo-publish-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _sweep_stale_staging(root: Path) -> None:
    """Remove staging folders of publish runs that were killed (``kill -9`` skips every cleanup):
    their names carry the pid, and a folder whose process is gone is left over."""
    import shutil

    for folder in root.glob(f"{_STAGING_PREFIX}*-*"):
        pid_text = folder.name[len(_STAGING_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)


def staging_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder named after this process; leftovers of killed runs are removed first."""
    root = Path(tempfile.gettempdir())
    _sweep_stale_staging(root)
    return tempfile.TemporaryDirectory(prefix=f"{_STAGING_PREFIX}{os.getpid()}-")
