"""Real HTTP servers on 127.0.0.1 for the hub tests (no mocks of samzoo's download code).

* :class:`FileServer` serves in-memory files, counts requests, and can misbehave per path:
  404/500, close the connection half-way ("truncate", "truncate_once"), hang before answering
  ("hang"), or send slowly ("slow").
* :class:`FakeHfHub` is a tiny Hugging Face Hub stand-in for ``HF_ENDPOINT``. It implements only
  what ``huggingface_hub.snapshot_download`` (2.x) calls for public model repos:
  ``GET /api/models/{repo}/revision/{rev}``, ``GET /api/models/{repo}/tree/{rev}`` (one page,
  no pagination) and ``HEAD/GET /{repo}/resolve/{rev}/{path}`` answered directly (200 with
  ``X-Repo-Commit``, ``ETag`` = sha256 for LFS files or git blob sha1 otherwise; no CDN redirect,
  no Xet, no auth, no Range support: huggingface_hub handles a 200 to a Range request). Files named
  *.pt/*.pth/*.bin are reported as LFS. Errors carry ``X-Error-Code`` like the real Hub.
* Helpers to build a Zenodo record answer and a minimal valid BioImage.IO model rdf.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import pytest
import yaml


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class FileServer:
    """In-memory HTTP file server with request log and per-path faults."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.behaviour: dict[str, str] = {}
        self.dynamic: dict[str, Callable[[], tuple[int, dict, bytes]]] = {}
        self.log: list[tuple[str, str]] = []
        self.hang_s = 3.0
        self.slow_chunk = 4096
        self.slow_delay = 0.05
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._served_once: set[str] = set()

    # -- setup
    def add(self, path: str, data: bytes, behaviour: str | None = None) -> str:
        self.files[path] = data
        if behaviour:
            self.behaviour[path] = behaviour
        return self.url(path)

    def add_json(self, path: str, obj: Any) -> str:
        return self.add(path, json.dumps(obj).encode())

    @property
    def base(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> "FileServer":
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def hits(self, path: str | None = None, method: str = "GET") -> int:
        with self._lock:
            return sum(1 for m, p in self.log if m == method and (path is None or p == path))

    @property
    def total_requests(self) -> int:
        with self._lock:
            return len(self.log)

    # -- serving
    def respond(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> None:
        if path in self.dynamic:
            status, headers, body = self.dynamic[path]()
            return self._send(handler, method, status, headers, body)
        if path not in self.files:
            return self._send(handler, method, 404, {}, b"not found")
        data = self.files[path]
        mode = self.behaviour.get(path)
        if mode in ("404", "500"):
            return self._send(handler, method, int(mode), {}, b"error")
        if mode == "hang":
            time.sleep(self.hang_s)
        if method == "GET" and (mode == "truncate" or (mode == "truncate_once" and path not in self._served_once)):
            self._served_once.add(path)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        if mode == "slow" and method == "GET":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            for i in range(0, len(data), self.slow_chunk):
                handler.wfile.write(data[i:i + self.slow_chunk])
                handler.wfile.flush()
                time.sleep(self.slow_delay)
            return None
        return self._send(handler, method, 200, {"Content-Type": "application/octet-stream"}, data)

    @staticmethod
    def _send(handler, method, status, headers, body) -> None:
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "HEAD":
            try:
                handler.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _handle(self, method):
                path = urlsplit(self.path).path
                with server._lock:
                    server.log.append((method, path))
                try:
                    server.respond(self, method, path)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                self._handle("GET")

            def do_HEAD(self):
                self._handle("HEAD")

        return Handler


# ------------------------------------------------------------------------------------------
# Hugging Face Hub stand-in


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith((".pt", ".pth", ".bin", ".safetensors"))


class FakeHfHub(FileServer):
    """Minimal HF-Hub-compatible endpoint (see module docstring for what it implements)."""

    def __init__(self):
        super().__init__()
        self.repos: dict[str, dict] = {}  # repo -> {"refs": {name: commit}, "commits": {commit: {path: bytes}}}
        self.corrupt: set[tuple[str, str]] = set()  # (repo, path): serve flipped bytes, same size

    def add_commit(self, repo: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> str:
        payload = json.dumps({p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())}).encode()
        commit = hashlib.sha1(repo.encode() + payload).hexdigest()
        entry = self.repos.setdefault(repo, {"refs": {}, "commits": {}})
        entry["commits"][commit] = dict(files)
        for ref in refs:
            entry["refs"][ref] = commit
        return commit

    def _commit(self, repo: str, rev: str) -> str | None:
        entry = self.repos[repo]
        if rev in entry["commits"]:
            return rev
        return entry["refs"].get(rev)

    def respond(self, handler, method, path):
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if len(parts) >= 6 and parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4])
            action, rev = parts[4], parts[5]
            if repo not in self.repos:
                return self._send(handler, method, 404, {"X-Error-Code": "RepoNotFound"},
                                  b'{"error":"Repository not found"}')
            commit = self._commit(repo, rev)
            if commit is None:
                return self._send(handler, method, 404, {"X-Error-Code": "RevisionNotFound"},
                                  b'{"error":"Invalid rev id"}')
            files = self.repos[repo]["commits"][commit]
            if action == "revision":
                body = {"id": repo, "modelId": repo, "sha": commit, "private": False,
                        "siblings": [{"rfilename": p} for p in sorted(files)]}
            elif action == "tree":
                body = []
                for p, data in sorted(files.items()):
                    item = {"type": "file", "path": p, "size": len(data), "oid": git_blob_sha1(data)}
                    if _is_lfs(p):
                        digest = hashlib.sha256(data).hexdigest()
                        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {len(data)}\n"
                        pointer = pointer.encode()
                        item.update(oid=git_blob_sha1(pointer), size=len(data),
                                    lfs={"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                         "pointerSize": len(pointer)})
                    body.append(item)
            else:
                return self._send(handler, method, 404, {}, b"not implemented")
            return self._send(handler, method, 200, {"Content-Type": "application/json"}, json.dumps(body).encode())
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = "/".join(parts[:2])
            rev, file_path = parts[3], "/".join(parts[4:])
            if repo not in self.repos:
                return self._send(handler, method, 404, {"X-Error-Code": "RepoNotFound"}, b"")
            commit = self._commit(repo, rev)
            if commit is None:
                return self._send(handler, method, 404, {"X-Error-Code": "RevisionNotFound"}, b"")
            files = self.repos[repo]["commits"][commit]
            if file_path not in files:
                return self._send(handler, method, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"")
            data = files[file_path]
            etag = hashlib.sha256(data).hexdigest() if _is_lfs(file_path) else git_blob_sha1(data)
            if (repo, file_path) in self.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            return self._send(handler, method, 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
                                                     "Content-Type": "application/octet-stream"}, data)
        return self._send(handler, method, 404, {}, b"not found")


# ------------------------------------------------------------------------------------------
# payload builders


def zenodo_record(server: FileServer, record_id: int, files: dict[str, bytes], *, bad_md5: str | None = None) -> str:
    """Serve ``files`` as Zenodo record ``record_id`` (records API form) on ``server``."""
    entries = []
    for name, data in files.items():
        content_path = f"/api/records/{record_id}/files/{name}/content"
        server.add(content_path, data)
        md5 = hashlib.md5(data).hexdigest() if name != bad_md5 else "0" * 32
        entries.append({"id": f"f-{name}", "key": name, "size": len(data), "checksum": f"md5:{md5}",
                        "links": {"self": server.url(content_path)}})
    record = {"id": record_id, "doi": f"10.5281/zenodo.{record_id}", "metadata": {"title": "test record"},
              "files": entries}
    return server.add_json(f"/api/records/{record_id}", record)


def bioimageio_model(server: FileServer, folder: str, weights: bytes, *, extra: dict[str, bytes] | None = None) -> dict:
    """Serve a minimal valid BioImage.IO 0.5 model package under ``folder`` (``/a/b/files``)."""
    files = minimal_package(weights, extra=extra)
    for name, data in files.items():
        server.add(f"{folder}/{name}", data)
    files.pop("rdf.yaml")
    return files


def minimal_package(weights: bytes, *, extra: dict[str, bytes] | None = None, name: str = "tiny test model") -> dict:
    """The files (rdf.yaml included) of a minimal valid BioImage.IO 0.5 model package."""
    import io

    import numpy as np

    def npy(arr) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    files = {
        "README.md": b"# tiny test model\n\n# Validation\nNone.\n",
        "test_input.npy": npy(np.zeros((1, 1, 8, 8), dtype="float32")),
        "test_output.npy": npy(np.ones((1, 1, 8, 8), dtype="float32")),
        "weights.pt": weights,
        **(extra or {}),
    }
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    axes = [{"type": "batch"}, {"type": "channel", "channel_names": ["c"]},
            {"type": "space", "id": "y", "size": 8}, {"type": "space", "id": "x", "size": 8}]
    rdf = {
        "type": "model", "format_version": "0.5.4", "name": name, "description": "test",
        "authors": [{"name": "Test Author"}], "cite": [{"text": "test", "doi": "10.1038/s41592-024-02580-4"}],
        "license": "MIT", "documentation": "README.md",
        "inputs": [{"id": "raw", "axes": axes,
                    "test_tensor": {"source": "test_input.npy", "sha256": sha["test_input.npy"]}}],
        "outputs": [{"id": "out", "axes": axes,
                     "test_tensor": {"source": "test_output.npy", "sha256": sha["test_output.npy"]}}],
        "weights": {"pytorch_state_dict": {"source": "weights.pt", "sha256": sha["weights.pt"],
                                           "architecture": {"callable": "Identity", "import_from": "torch.nn"},
                                           "pytorch_version": "2.0"}},
    }
    if extra:
        rdf["attachments"] = [{"source": file, "sha256": sha[file]} for file in extra]
    return {**files, "rdf.yaml": yaml.safe_dump(rdf).encode()}


def write_registry(path: Path, models: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"format_version": 1, "models": models}, sort_keys=False))
    return path


def xxh128(data: bytes) -> str:
    import xxhash

    return "xxh128:" + xxhash.xxh128(data).hexdigest()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------
# fixtures (import them into a test module to use them)

_ENV_TO_CLEAR = ("SAMZOO_OFFLINE", "SAMZOO_REGISTRY", "SAMZOO_ZENODO_URL", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                 "HF_TOKEN", "SAMZOO_DOWNLOAD_TIMEOUT", "SAMZOO_DOWNLOAD_RETRIES")


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """Isolated caches (samzoo, micro-sam, bioimageio, HF home) under tmp_path; hub env vars cleared."""
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(cache))
    monkeypatch.setenv("MICROSAM_CACHEDIR", str(tmp_path / "microsam"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("SAMZOO_DOWNLOAD_TIMEOUT", "10")
    monkeypatch.setenv("SAMZOO_DOWNLOAD_RETRIES", "1")
    return cache


@pytest.fixture
def server():
    srv = FileServer().start()
    yield srv
    srv.stop()
