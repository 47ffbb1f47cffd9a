"""Verified, atomic, concurrency-safe downloads into the samzoo cache.

Every cached file ``<item>/<name>`` has a verification record ``<item>/.samzoo/<name>.json``
(hash, size, mtime). A file is *trusted* only when its record matches its current size and mtime
and the hash the caller expects (or, when the record is stale, e.g. after copying the cache to
another machine, when re-hashing the file gives the expected hash). Downloads go to a partial file
inside ``<item>/.samzoo/``, are hashed, and only then moved into place with ``os.replace`` and
recorded, all while holding ``<item>/.samzoo/<name>.lock`` -- so concurrent processes download a
file once, and a transfer killed half-way leaves only a partial file that nothing trusts (it is
deleted by the next download of that file).

Environment: ``SAMZOO_DOWNLOAD_TIMEOUT`` (seconds without data before giving up, default 60),
``SAMZOO_DOWNLOAD_DEADLINE`` (seconds one transfer may take in all, default 10800: a server that
trickles bytes never times out otherwise), ``SAMZOO_DOWNLOAD_RETRIES`` (extra attempts after a
broken transfer or a 5xx/408/429, default 2). Invalid values are errors, not silently replaced.

A transfer is checked against the size the server states (``Content-Length``) and the registry's
size and hash. A file that had neither a hash nor a stated size to check is recorded as
``"verified": false``; errors reading it later say so and how to clear it (``samzoo cache clear``).

The transfer loop is our own (requests, not pooch's downloader) because it must enforce the
overall deadline between reads, and pooch neither exposes the response nor checks the length.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import DownloadError, HashMismatchError, InputError, ModelNotFoundError, OfflineError
from ..registry.registry import parse_hash

META_DIR = ".samzoo"
CHUNK_SIZE = 64 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_DEADLINE = 3 * 3600.0
DEFAULT_RETRIES = 2
_TRUE = {"1", "true", "yes", "on"}


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` when given, else ``SAMZOO_OFFLINE`` (1/true/yes/on)."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("SAMZOO_OFFLINE", "").strip().lower() in _TRUE


def _env_number(name: str, default: float, *, integer: bool = False, minimum: float = 0.0) -> float:
    """A numeric environment setting; a value that is not a number (or too small) is an error
    naming the variable -- like the publishing variables, never silently replaced."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise InputError(f"{name} must be {kind}, got {text!r}") from None
    if not value >= minimum or value != value or value == float("inf"):
        raise InputError(f"{name} must be a finite number >= {minimum:g}, got {text!r}")
    return value


def download_timeout() -> float:
    """Seconds without data before a transfer is given up (``SAMZOO_DOWNLOAD_TIMEOUT``)."""
    return _env_number("SAMZOO_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.1)


def download_deadline() -> float:
    """Seconds one transfer may take in all (``SAMZOO_DOWNLOAD_DEADLINE``)."""
    return _env_number("SAMZOO_DOWNLOAD_DEADLINE", DEFAULT_DEADLINE, minimum=0.1)


def download_retries() -> int:
    return int(_env_number("SAMZOO_DOWNLOAD_RETRIES", DEFAULT_RETRIES, integer=True))


# --------------------------------------------------------------------------------------------
# hashing


def compute_hash(path: str | os.PathLike, alg: str = "sha256") -> str:
    """``"<alg>:<hex>"`` of a file; ``alg`` is sha256, md5 or xxh128 (the registry's algorithms)."""
    alg = alg.lower()
    if alg == "xxh128":
        import xxhash

        hasher = xxhash.xxh128()
    else:
        hasher = hashlib.new(alg, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_SIZE), b""):
            hasher.update(block)
    return f"{alg}:{hasher.hexdigest()}"


def normalize_hash(value: str) -> str:
    alg, hexdigest = parse_hash(value)
    return f"{alg}:{hexdigest}"


def same_hash(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return normalize_hash(a) == normalize_hash(b)
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# verification records


def meta_dir(path: Path) -> Path:
    return path.parent / META_DIR


def record_path(path: Path) -> Path:
    return meta_dir(path) / f"{path.name}.json"


def lock_path(path: Path) -> Path:
    return meta_dir(path) / f"{path.name}.lock"


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_record(path: Path, hash_value: str, *, url: str | None = None, extra: dict | None = None) -> None:
    st = path.stat()
    record = {"hash": hash_value, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "url": url,
              "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(extra or {})}
    atomic_write_text(record_path(path), json.dumps(record, indent=1))


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def is_trusted(path: Path, expected_hash: str | None) -> bool:
    """True when ``path`` exists and is known to have ``expected_hash`` (or, with no expected
    hash, the hash recorded when it was downloaded). May re-hash the file once when its record is
    stale; refreshes the record then."""
    path = Path(path)
    if not path.is_file():
        return False
    record = read_record(path)
    st = path.stat()
    fresh = record is not None and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns
    if fresh and (expected_hash is None or same_hash(record.get("hash"), expected_hash)):
        return True
    wanted = expected_hash or (record or {}).get("hash")
    if not wanted:
        return False
    try:
        alg = parse_hash(wanted)[0]
    except ValueError:
        return False
    if same_hash(compute_hash(path, alg), wanted):
        write_record(path, normalize_hash(wanted), url=(record or {}).get("url"))
        return True
    return False


def file_lock(path: Path):
    """An inter-process lock for the cache file ``path``."""
    from filelock import FileLock

    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lp))


# --------------------------------------------------------------------------------------------
# downloading


@dataclass
class _Failure:
    message: str
    transient: bool


def _describe_request_error(exc: BaseException, url: str, timeout: float) -> _Failure:
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        reason = exc.response.reason or ""
        transient = code >= 500 or code in (408, 429)
        if code == 404:
            return _Failure(f"{url} answered HTTP 404 (Not Found)", False)
        if code in (401, 403):
            return _Failure(f"{url} answered HTTP {code} ({reason}): access denied", False)
        return _Failure(f"{url} answered HTTP {code} ({reason})".replace(" ()", ""), transient)
    if isinstance(exc, requests.ConnectTimeout):
        return _Failure(f"timed out while connecting to {url} ({timeout:g} s, SAMZOO_DOWNLOAD_TIMEOUT)", True)
    if isinstance(exc, requests.Timeout) or _is_read_timeout(exc):
        return _Failure(f"{url} timed out while reading: no data for {timeout:g} s (SAMZOO_DOWNLOAD_TIMEOUT)", True)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return _Failure(f"the transfer from {url} broke off before the end ({_short(exc)})", True)
    if isinstance(exc, requests.ConnectionError):
        return _Failure(f"could not connect to {url} ({_short(exc)})", True)
    return _Failure(f"downloading {url} failed ({_short(exc)})", True)


def _is_read_timeout(exc: BaseException) -> bool:
    """requests wraps a read timeout during streaming as a ConnectionError; it is not one."""
    from urllib3.exceptions import ReadTimeoutError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ReadTimeoutError, TimeoutError)) or any(isinstance(a, ReadTimeoutError) for a in exc.args):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _progress_bar(label: str):
    from tqdm.auto import tqdm

    # total=1 placeholder: pooch sets the real total from Content-Length, and a tqdm with
    # total=0 is falsy, which pooch would read as "no progress bar"
    return tqdm(total=1, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                file=sys.stderr, dynamic_ncols=True)


def download_file(url: str, dest: str | os.PathLike, *, expected_hash: str | None = None,
                  size: int | None = None, what: str | None = None, progress: bool = True,
                  offline: bool | None = None, fallback: Callable[[Path], Path | None] | None = None,
                  warn_unhashed: bool = True) -> Path:
    """Make ``dest`` a verified copy of ``url`` and return it.

    Reuses ``dest`` without any network access when it is trusted (see :func:`is_trusted`).
    Otherwise, unless offline, downloads with pooch's ``HTTPDownloader`` (tqdm progress on stderr)
    into a partial file, checks size and hash, then moves it into place atomically and records it.
    ``fallback(dest)`` is tried under the lock before downloading, also offline (e.g. reuse a file
    from micro-sam's cache); it returns the verified file to use (``dest`` or another path) or None.

    Raises :class:`OfflineError` (offline and not cached), :class:`HashMismatchError` (wrong hash;
    nothing cached) or :class:`DownloadError` (HTTP error, timeout, broken transfer; nothing cached).
    ``what`` names the model in messages.
    """
    dest = Path(dest)
    what = what or url
    expected = normalize_hash(expected_hash) if expected_hash else None
    if is_trusted(dest, expected):
        return dest
    if is_offline(offline) and fallback is None:
        raise offline_error(what, dest)
    _require_writable_cache(dest.parent)
    with file_lock(dest):
        # another process may have finished the download while we waited for the lock
        if is_trusted(dest, expected):
            return dest
        if fallback is not None:
            found = fallback(dest)
            if found is not None:
                return found
        if is_offline(offline):
            raise offline_error(what, dest)
        _remove_stale_partials(dest)
        _download_locked(url, dest, expected=expected, size=size, what=what, progress=progress,
                         warn_unhashed=warn_unhashed)
    return dest


def _require_writable_cache(folder: Path) -> None:
    from ..outputs import check_writable_folder

    try:
        check_writable_folder(folder, "samzoo cache folder")
        (folder / META_DIR).mkdir(parents=True, exist_ok=True)
    except (InputError, OSError) as err:
        raise DownloadError(f"{err if isinstance(err, InputError) else err.strerror}; nothing was downloaded. "
                            "Point SAMZOO_CACHE_DIR at a writable folder") from None


def offline_error(what: str, where: Path | str) -> OfflineError:
    from ..cache import cache_dir

    return OfflineError(
        f"{what} is not in the samzoo cache ({where}) and offline mode is on (SAMZOO_OFFLINE=1 or "
        f"offline=True), so it cannot be downloaded; on a machine with internet run "
        f"`samzoo fetch {what}`, then copy its cache folder ({cache_dir()}) here and set "
        "SAMZOO_CACHE_DIR to it"
    )


def _remove_stale_partials(dest: Path) -> None:
    # we hold the lock: any partial file of this name belongs to a dead or killed download
    for stale in meta_dir(dest).glob(f"{dest.name}.part-*"):
        try:
            stale.unlink()
        except OSError:
            pass


class _Deadline(Exception):
    pass


def _transfer(url: str, part: Path, *, timeout: float, deadline: float, size: int | None, bar) -> tuple[int, int | None]:
    """Stream ``url`` into ``part``; returns (bytes received, Content-Length or None).

    Reads return whatever arrived (``read1``), so the overall deadline is checked even when a
    server trickles single bytes; the idle timeout is the socket timeout."""
    import requests

    started = time.monotonic()
    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        stated = response.headers.get("Content-Length")
        declared = int(stated) if stated and stated.isdigit() and not response.headers.get("Content-Encoding") else None
        if bar is not None and (declared or size):
            bar.total = declared or size
        received = 0
        with open(part, "wb") as out:
            while True:
                chunk = response.raw.read1(CHUNK_SIZE, decode_content=True)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                if time.monotonic() - started > deadline:
                    raise _Deadline()
    return received, declared


def _download_locked(url: str, dest: Path, *, expected: str | None, size: int | None, what: str,
                     progress: bool, warn_unhashed: bool) -> None:
    import requests
    import urllib3

    timeout = download_timeout()
    deadline = download_deadline()
    attempts = 1 + download_retries()
    part = meta_dir(dest) / f"{dest.name}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    failure: _Failure | None = None
    declared: int | None = None
    for attempt in range(1, attempts + 1):
        label = dest.name if len(what) > 40 or "://" in what else f"{what}: {dest.name}"
        bar = _progress_bar(label) if progress else None
        try:
            received, declared = _transfer(url, part, timeout=timeout, deadline=deadline, size=size, bar=bar)
            if declared is not None and received != declared:
                raise _SizeMismatch(received, declared, "the server's Content-Length")
            if size is not None and received != size:
                raise _SizeMismatch(received, size, "the registry's size")
            failure = None
        except _SizeMismatch as e:
            failure = _Failure(f"the transfer from {url} gave {e.received} bytes, expected {e.expected} "
                               f"({e.source})", True)
        except _Deadline:
            failure = _Failure(f"the transfer from {url} took longer than {deadline:g} s in all "
                               "(SAMZOO_DOWNLOAD_DEADLINE)", False)
        except requests.RequestException as e:
            failure = _describe_request_error(e, url, timeout)
        except (urllib3.exceptions.HTTPError, TimeoutError) as e:  # raised by raw reads
            failure = (_Failure(f"{url} timed out while reading: no data for {timeout:g} s (SAMZOO_DOWNLOAD_TIMEOUT)", True)
                       if _is_read_timeout(e) else
                       _Failure(f"the transfer from {url} broke off before the end ({_short(e)})", True))
        except OSError as e:
            failure = _Failure(f"could not write {part}: {e}", False)
        except BaseException:  # KeyboardInterrupt & co: leave no partial file behind
            _unlink(part)
            raise
        finally:
            if bar is not None:
                bar.close()
        if failure is None:
            break
        _unlink(part)
        if not failure.transient or attempt == attempts:
            break
        time.sleep(min(0.2 * attempt, 2.0))
    if failure is not None:
        tries = f" (after {attempts} attempts)" if failure.transient and attempts > 1 else ""
        raise DownloadError(
            f"could not download {what}: {failure.message}{tries}; nothing was cached. "
            + _advice(what, failure)
        )
    # verify BEFORE the file becomes visible under its final name
    actual = compute_hash(part, parse_hash(expected)[0] if expected else "sha256")
    if expected is not None and not same_hash(actual, expected):
        _unlink(part)
        raise HashMismatchError(
            f"download of {what} from {url} failed verification: expected {expected}, got {actual}; "
            "the file was discarded and nothing was cached. The file on the server changed or is "
            "corrupt: try again later, or update samzoo / your registry entry if the model was "
            "re-published"
        )
    verified = expected is not None or size is not None or declared is not None
    if expected is None and warn_unhashed:
        import warnings

        warnings.warn(
            f"{what}: downloaded {url} without a known hash (no verification possible"
            f"{'' if verified else ', and no size to check either'}); its hash is "
            f"{actual} -- append '#{actual.replace(':', '=')}' to the URL to pin it",
            stacklevel=3,
        )
    os.replace(part, dest)
    write_record(dest, actual, url=url, extra={"verified": verified})


def is_unverified(path: str | os.PathLike) -> bool:
    """True for a cached file downloaded with neither a hash nor a size to check it against."""
    record = read_record(Path(path))
    return record is not None and record.get("verified") is False


class _SizeMismatch(Exception):
    def __init__(self, received: int, expected: int, source: str):
        super().__init__(f"{received} != {expected}")
        self.received = received
        self.expected = expected
        self.source = source


def _advice(what: str, failure: _Failure) -> str:
    if "404" in failure.message:
        return (f"The file has moved or was removed: check `samzoo info {what}`, update samzoo, or "
                "point --registry / SAMZOO_REGISTRY at a registry with a working URL.")
    if failure.transient:
        return ("Check your internet connection or proxy and try again (SAMZOO_DOWNLOAD_TIMEOUT and "
                "SAMZOO_DOWNLOAD_RETRIES tune patience); without internet, copy a samzoo cache that "
                "holds the model and set SAMZOO_CACHE_DIR / SAMZOO_OFFLINE=1.")
    return "Check the URL and your access rights."


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def link_or_copy_into(src: Path, dest: Path, *, copy: bool = False) -> bool:
    """Hard-link ``src`` to ``dest`` atomically (copy when ``copy``); False when not possible."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    meta_dir(dest).mkdir(parents=True, exist_ok=True)
    tmp = meta_dir(dest) / f"{dest.name}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if copy:
            shutil.copy2(src, tmp)
        else:
            os.link(src, tmp)
        os.replace(tmp, dest)
        return True
    except OSError:
        _unlink(tmp)
        return False


def http_get_json(url: str, *, what: str, accept: str = "application/json") -> dict | list:
    """GET a JSON document (with the same timeout/retry policy as downloads)."""
    import requests

    timeout = download_timeout()
    attempts = 1 + download_retries()
    failure: _Failure | None = None
    for attempt in range(1, attempts + 1):
        try:
            response = requests.get(url, timeout=timeout, headers={"Accept": accept})
            response.raise_for_status()
            return response.json()
        except requests.RequestException as e:
            failure = _describe_request_error(e, url, timeout)
        except ValueError as e:
            failure = _Failure(f"{url} did not answer JSON ({_short(e)})", False)
        if not failure.transient or attempt == attempts:
            break
        time.sleep(min(0.2 * attempt, 2.0))
    assert failure is not None
    cls = ModelNotFoundError if "404" in failure.message else DownloadError
    raise cls(f"could not look up {what}: {failure.message}. " + _advice(what, failure))
