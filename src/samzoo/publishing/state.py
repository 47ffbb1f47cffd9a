"""The resume file, ``.samzoo-publish.json``, kept next to the (first) published package.

One entry per publication target, keyed by service, server, the package and checkpoint names and
(for a new version) the parent DOI. An entry records the draft being filled (``status: draft``,
``deposition_id``) and, once done, the DOI (``status: published``) with the sha256 of every file,
so that running the same command again continues the same draft, or reports the finished
publication instead of publishing twice. Writes are atomic; a lock file keeps two ``samzoo publish``
runs on the same folder apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import PublishError
from .card import atomic_write

STATE_FILENAME = ".samzoo-publish.json"


class PublishState:
    def __init__(self, folder: Path):
        self.path = Path(folder) / STATE_FILENAME
        self._data: dict[str, Any] = {"version": 1, "publications": {}}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise PublishError(
                    f"{self.path} is damaged ({exc}); move it away to start over (a draft it names stays on the server)"
                ) from None
            if isinstance(data, dict) and isinstance(data.get("publications"), dict):
                self._data = data

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._data["publications"].get(key)
        return dict(entry) if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        entry = dict(entry, updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self._data["publications"][key] = entry
        text = json.dumps(self._data, indent=2, sort_keys=True) + "\n"
        try:
            atomic_write(self.path, text.encode("utf-8"))
        except OSError as exc:
            raise PublishError(
                f"cannot write {self.path} ({exc.strerror or exc}): samzoo keeps the publication state there "
                "so that a failed upload can be resumed; make the folder writable"
            ) from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        from filelock import FileLock, Timeout

        lock_path = self.path.with_name(self.path.name + ".lock")
        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise PublishError(
                f"another samzoo publish is running on {self.path.parent} ({lock_path} is locked); wait for it to finish"
            ) from None
        except OSError as exc:
            raise PublishError(f"cannot create {lock_path} ({exc.strerror or exc}): make the folder writable") from None
        try:
            yield
        finally:
            lock.release()
            try:
                lock_path.unlink()
            except OSError:
                pass
