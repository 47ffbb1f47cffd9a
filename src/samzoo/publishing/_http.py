"""Retries, token redaction and a small JSON-over-HTTP client (stdlib only) for the publishers.

Transient failures (HTTP 408/425/429/5xx, timeouts, refused or reset connections) are retried with
exponential backoff; every other HTTP error is returned to the caller at once, which turns it into
an error message that says what to fix. ``SAMZOO_PUBLISH_RETRIES`` (tries per request, default 4)
and ``SAMZOO_PUBLISH_BACKOFF`` (first delay in seconds, doubled each try, default 2) tune it;
``SAMZOO_PUBLISH_TIMEOUT`` (seconds, default 120) bounds each request's connect/read wait.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ..errors import PublishError

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def _env_number(name: str, default: float, kind: type = float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise PublishError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise PublishError(f"{name}={raw!r} must not be negative")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 4
    backoff: float = 2.0  # first delay, seconds; doubled after each failed try
    max_delay: float = 60.0
    timeout: float = 120.0  # per request

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            tries=max(1, int(_env_number("SAMZOO_PUBLISH_RETRIES", 4, int))),
            backoff=_env_number("SAMZOO_PUBLISH_BACKOFF", 2.0),
            timeout=_env_number("SAMZOO_PUBLISH_TIMEOUT", 120.0) or 120.0,
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        wait = self.backoff * (2 ** (attempt - 1))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_delay)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret (token) in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class Transient(Exception):
    """A failure worth retrying; ``what`` describes it for the final message."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


def with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    step: str,
    on_give_up: Callable[[str, str, int], PublishError],
    log: Callable[[str], None] | None = None,
) -> T:
    """Call ``fn`` until it does not raise ``Transient`` (at most ``policy.tries`` times)."""
    for attempt in range(1, policy.tries + 1):
        try:
            return fn()
        except Transient as exc:
            if attempt >= policy.tries:
                raise on_give_up(step, exc.what, attempt) from None
            wait = policy.delay(attempt, exc.retry_after)
            if log is not None:
                log(f"{step}: {exc.what}; retrying in {wait:.3g} s (try {attempt + 1} of {policy.tries})")
            time.sleep(wait)
    raise AssertionError("unreachable")


def is_transient_exception(exc: BaseException) -> bool:
    """Network-level failures that a retry may cure (timeouts, refused/reset connections)."""
    if isinstance(exc, urllib.error.HTTPError):
        return False
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return is_transient_exception(reason)
        return True
    return isinstance(
        exc,
        (
            TimeoutError,
            socket.timeout,
            ConnectionError,  # refused, reset, aborted, broken pipe
            http.client.RemoteDisconnected,
            http.client.IncompleteRead,
            http.client.BadStatusLine,
        ),
    )


def describe_exception(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise PublishError(
                f"the server answered HTTP {self.status} with something that is not JSON: {self.body[:200]!r}"
            ) from None


class _Progress:
    """File wrapper that advances a tqdm bar as http.client reads it."""

    def __init__(self, handle: BinaryIO, bar: Any):
        self._handle, self._bar = handle, bar

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        if self._bar is not None:
            self._bar.update(len(chunk))
        return chunk


class _AuthStaysHome(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but drop the Authorization header when one leaves the original origin."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl)[:2] != urllib.parse.urlsplit(req.full_url)[:2]:
            new.remove_header("Authorization")
        return new


class JsonClient:
    """Requests against one service with a bearer token that only goes to that service's origin."""

    def __init__(self, base_url: str, token: str | None, *, policy: RetryPolicy, user_agent: str = "samzoo"):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.policy = policy
        self.user_agent = user_agent
        self._origin = urllib.parse.urlsplit(self.base_url)[:2]
        self._opener = urllib.request.build_opener(_AuthStaysHome)

    def __repr__(self) -> str:  # never show the token
        return f"JsonClient({self.base_url!r})"

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    def redact(self, text: str) -> str:
        return redact(text, [self._token])

    def send(
        self,
        method: str,
        path_or_url: str,
        *,
        json_body: Any = None,
        file: Path | None = None,
        progress: bool = False,
    ) -> Response:
        """One request, no retries. HTTP errors come back as a Response; network errors raise ``Transient``
        (or ``PublishError`` for those no retry cures)."""
        url = self.url(path_or_url)
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if self._token and urllib.parse.urlsplit(url)[:2] == self._origin:
            headers["Authorization"] = f"Bearer {self._token}"
        data: Any = None
        handle = None
        bar = None
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif file is not None:
            size = file.stat().st_size
            handle = open(file, "rb")  # noqa: SIM115 - closed below
            if progress and size > 0:
                try:
                    from tqdm import tqdm

                    bar = tqdm(total=size, unit="B", unit_scale=True, desc=file.name, leave=False, disable=None)
                except ImportError:  # pragma: no cover - tqdm is a dependency
                    bar = None
            data = _Progress(handle, bar)
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(size)
        elif method in ("POST", "PUT"):
            data = b""
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.policy.timeout) as resp:
                return Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except Exception:  # noqa: BLE001 - the body is only used for the message
                body = b""
            return Response(exc.code, dict(exc.headers.items()) if exc.headers else {}, body)
        except (OSError, http.client.HTTPException) as exc:
            if is_transient_exception(exc):
                raise Transient(self.redact(describe_exception(exc))) from None
            raise PublishError(
                f"{method} {self.redact(url)} failed: {self.redact(describe_exception(exc))}"
            ) from None
        finally:
            if handle is not None:
                handle.close()
            if bar is not None:
                bar.close()

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        step: str,
        explain: Callable[[Response, str], PublishError],
        on_give_up: Callable[[str, str, int], PublishError],
        ok: Iterable[int] = (200, 201, 202, 204),
        log: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> Response:
        """``send`` with retries on transient failures; other non-``ok`` answers -> ``explain(...)``."""
        ok = frozenset(ok)

        def attempt() -> Response:
            resp = self.send(method, path_or_url, **kwargs)
            if resp.status in ok:
                return resp
            if resp.status in TRANSIENT_STATUS:
                retry_after = None
                raw = resp.headers.get("Retry-After") or resp.headers.get("retry-after")
                if raw and raw.strip().isdigit():
                    retry_after = float(raw)
                raise Transient(f"HTTP {resp.status}", retry_after)
            raise explain(resp, step)

        return with_retries(attempt, self.policy, step=step, on_give_up=on_give_up, log=log)


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
