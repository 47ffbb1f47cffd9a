"""Test helpers for publishing to Zenodo: run zenodo-mock, and a recording proxy in front of it.

``zenodo_mock(tmp_path)`` runs ``python -m zenodo_mock`` on a free 127.0.0.1 port with an EMPTY
working directory (the mock serves its working directory for unknown GETs) and yields its URL.

``ZenodoProxy(upstream)`` is a small HTTP server (real sockets) that forwards every request to
the mock and:

* records each request (method, path, whether it carried the expected bearer token);
* adds what real Zenodo answers and the mock leaves out: it checks the token (401 with Zenodo's
  JSON error shape when it is wrong or missing) and reports an md5 ``checksum`` for uploaded files
  (``"md5:<hex>"`` on a bucket PUT, ``<hex>`` in a deposition's file list, ``"md5:<hex>"`` in a
  record's file list), computed from the bytes it forwarded (``checksums=False`` leaves them out,
  as the bare mock does);
* injects faults on request: ``fail(method, path_regex, status_or_"reset", times)`` answers an
  error (or resets the connection) instead of forwarding; ``wrong_checksum(filename)`` reports a
  wrong checksum for the next upload of that file; ``reject_metadata(errors)`` answers a metadata
  PUT with Zenodo's 400 validation error body; ``echo_auth`` puts the Authorization header into
  error bodies (to check that tokens are redacted).

It validates nothing else: metadata rules are checked by samzoo itself (see
``samzoo.publishing.zenodo.validate_zenodo_metadata``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import struct
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


@contextmanager
def zenodo_mock(tmp_path: Path):
    """Run zenodo-mock in a subprocess (empty cwd, storage under tmp_path); yield its base URL."""
    www = tmp_path / "mock-cwd"
    www.mkdir()
    storage = tmp_path / "mock-storage"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenodo_mock", "--host", "127.0.0.1", "--port", "0", "--storage-dir", str(storage)],
        cwd=www,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://\S+?)/api/deposit/depositions", line)
        if match is None:
            raise RuntimeError(f"zenodo-mock did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait(timeout=10)


class ZenodoProxy:
    def __init__(self, upstream: str, token: str | None = "good-token", checksums: bool = True):
        self.upstream = urlsplit(upstream)
        self.checksums = checksums
        self.token = token
        self.requests: list[tuple[str, str, bool]] = []
        self.md5: dict[tuple[str, str], str] = {}  # (deposition id, file name) -> md5 of the bytes sent
        self.faults: list[dict] = []
        self.bad_checksums: set[str] = set()
        self.metadata_errors: list[dict] | None = None
        self.echo_auth = False
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # injected resets end requests abruptly
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ZenodoProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- configuration
    def fail(self, method: str, path_regex: str, what: int | str = 500, times: int = 1, forward: bool = False) -> None:
        """Answer the next ``times`` matching requests with HTTP ``what`` (or "reset" the connection);
        ``forward=True``: pass the request on to the mock first (the answer is lost after the work is done)."""
        self.faults.append(
            {"method": method, "path": re.compile(path_regex), "what": what, "times": times, "forward": forward}
        )

    def wrong_checksum(self, filename: str) -> None:
        self.bad_checksums.add(filename)

    def reject_metadata(self, errors: list[dict]) -> None:
        self.metadata_errors = errors

    def count(self, method: str, path_regex: str) -> int:
        rx = re.compile(path_regex)
        return sum(1 for m, p, _ in self.requests if m == method and rx.search(p))

    # -- handling
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "application/json") -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection", "authorization")}
        conn.request(h.command, h.path, body=body if h.command in ("POST", "PUT") else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheader("Content-Type") or "application/octet-stream", data

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        auth = h.headers.get("Authorization") or ""
        path = urlsplit(h.path).path
        authed = self.token is None or auth == f"Bearer {self.token}"
        with self.lock:
            self.requests.append((h.command, path, authed))
            fault = None
            for rule in self.faults:
                if rule["times"] > 0 and rule["method"] == h.command and rule["path"].search(path):
                    rule["times"] -= 1
                    fault = rule
                    break
        if fault is not None and fault["forward"]:
            self._forward(h, body)
        if fault is not None:
            if fault["what"] == "reset":
                # close with RST: the client sees "connection reset by peer"
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
                h.close_connection = True
                return
            message = {"status": fault["what"], "message": "Injected failure."}
            if self.echo_auth:
                message["message"] += f" Request had Authorization: {auth}"
            self._send(h, fault["what"], json.dumps(message).encode())
            return
        if not authed and (path.startswith("/api/deposit") or path.startswith("/api/files")):
            message = {
                "status": 401,
                "message": "The server could not verify that you are authorized to access the URL requested.",
            }
            if self.echo_auth:
                message["message"] += f" ({auth})"
            self._send(h, 401, json.dumps(message).encode())
            return
        parts = path.strip("/").split("/")
        if (
            self.metadata_errors is not None
            and h.command == "PUT"
            and len(parts) == 4
            and parts[:3] == ["api", "deposit", "depositions"]
        ):
            self._send(
                h, 400, json.dumps({"status": 400, "message": "Validation error.", "errors": self.metadata_errors}).encode()
            )
            return

        status, ctype, data = self._forward(h, body)
        # links in the mock's answers point at the mock: point them at the proxy
        upstream_base = f"http://{self.upstream.hostname}:{self.upstream.port}".encode()
        data = data.replace(upstream_base, self.url.encode())

        # add the checksums real Zenodo reports
        if not self.checksums:
            pass
        elif status == 200 and h.command == "PUT" and len(parts) == 4 and parts[:2] == ["api", "files"]:
            digest = hashlib.md5(body).hexdigest()
            self.md5[(parts[2], parts[3])] = digest
            if parts[3] in self.bad_checksums:
                self.bad_checksums.discard(parts[3])
                digest = "0" * 32
            payload = json.loads(data)
            payload["checksum"] = f"md5:{digest}"
            data = json.dumps(payload).encode()
        elif status == 200 and h.command in ("GET", "POST") and "json" in ctype and data:
            payload = json.loads(data)
            if isinstance(payload, dict) and isinstance(payload.get("files"), list):
                dep_id = str(payload.get("id"))
                is_record = parts[:2] == ["api", "records"]
                for entry in payload["files"]:
                    name = entry.get("filename") or entry.get("key")
                    digest = self.md5.get((dep_id, name))
                    if digest is not None:
                        entry["checksum"] = f"md5:{digest}" if is_record else digest
                data = json.dumps(payload).encode()
        self._send(h, status, data, ctype)
