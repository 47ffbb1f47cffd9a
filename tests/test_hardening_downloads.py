"""Issue 11, downloads: an overall deadline against trickling servers, the stated size checked,
unverified downloads marked (and the later error says how to clear them), read timeouts named as
such, and invalid environment settings refused. Real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from samzoo.errors import DownloadError, InputError, SamzooError
from samzoo.hub.download import download_file, is_trusted, is_unverified, read_record


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


def _serve(behaviour: str, payload: bytes):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            try:
                self.send_response(200)
                if behaviour == "short-with-length":
                    self.send_header("Content-Length", str(len(payload) * 2))
                self.end_headers()
                if behaviour == "trickle":
                    for byte in payload:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.05)
                elif behaviour == "stall":
                    self.wfile.write(payload[:10])
                    self.wfile.flush()
                    time.sleep(3)
                else:  # "no-length": the body simply ends (connection closed), nothing says how long
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/model.pt"


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in ("SAMZOO_DOWNLOAD_TIMEOUT", "SAMZOO_DOWNLOAD_RETRIES", "SAMZOO_DOWNLOAD_DEADLINE", "SAMZOO_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMZOO_DOWNLOAD_RETRIES", "0")
    return tmp_path


def test_trickling_server_hits_the_overall_deadline(env, monkeypatch):
    server, url = _serve("trickle", b"x" * 1000)  # 50 s at this pace, never idle for a second
    monkeypatch.setenv("SAMZOO_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("SAMZOO_DOWNLOAD_DEADLINE", "0.6")
    dest = env / "cache" / "url" / "m" / "model.pt"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="SAMZOO_DOWNLOAD_DEADLINE"):
        download_file(url, dest, progress=False)
    assert time.monotonic() - started < 5
    assert not dest.exists() and not list((dest.parent / ".samzoo").glob("*.part-*"))
    server.shutdown()


def test_short_body_against_content_length_is_not_cached(env):
    server, url = _serve("short-with-length", b"y" * 5000)
    dest = env / "cache" / "url" / "m" / "model.pt"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, progress=False)
    assert "bytes" in str(info.value) and not dest.exists()
    server.shutdown()


def test_download_without_hash_or_size_is_marked_unverified(env):
    server, url = _serve("no-length", b"z" * 3000)
    dest = env / "cache" / "url" / "m" / "model.pt"
    with pytest.warns(UserWarning, match="no size to check"):
        download_file(url, dest, progress=False)
    assert dest.read_bytes() == b"z" * 3000
    assert is_unverified(dest) and read_record(dest)["verified"] is False
    assert is_trusted(dest, None)  # nothing better to check against; marked instead
    server.shutdown()


def test_unverified_broken_checkpoint_says_how_to_clear_it(env):
    from samzoo.api import load_model

    server, url = _serve("no-length", b"not really a checkpoint, cut short" * 10)
    with pytest.warns(UserWarning), pytest.raises(SamzooError) as info:
        load_model(url)
    message = str(info.value)
    assert "samzoo cache clear" in message and "without a hash" in message
    server.shutdown()


def test_read_timeout_is_not_called_could_not_connect(env, monkeypatch):
    server, url = _serve("stall", b"w" * 100)
    monkeypatch.setenv("SAMZOO_DOWNLOAD_TIMEOUT", "0.5")
    with pytest.raises(DownloadError) as info:
        download_file(url, env / "cache" / "url" / "m" / "model.pt", progress=False)
    assert "could not connect" not in str(info.value)
    assert "timed out while reading" in str(info.value)
    server.shutdown()


@pytest.mark.parametrize("name,value", [("SAMZOO_DOWNLOAD_TIMEOUT", "abc"), ("SAMZOO_DOWNLOAD_TIMEOUT", "-1"),
                                        ("SAMZOO_DOWNLOAD_RETRIES", "1.5"), ("SAMZOO_DOWNLOAD_DEADLINE", "nan")])
def test_invalid_download_settings_are_errors(env, monkeypatch, capsys, name, value):
    from samzoo.cli import main

    monkeypatch.setenv(name, value)
    assert main(["fetch", "http://127.0.0.1:9/model.pt", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and name in err and err.startswith("samzoo: error:")
    with pytest.raises(InputError):
        download_file("http://127.0.0.1:9/model.pt", env / "x" / "m.pt", progress=False)
