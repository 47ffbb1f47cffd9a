"""A stand-in for a personal-token download portal (the DeepCell API's shape) on 127.0.0.1.

``POST /api/getData/`` with header ``X-Api-Key: <token>`` and form field ``s3_key`` answers
``{"url": <link>, "size": "<n> MB"}`` (403 with DRF's message for a wrong token, 404 for an unknown
key), and ``GET /signed/<name>?sig=...`` serves the archive, like a presigned S3 link.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from _hub_servers import FileServer


class PortalServer(FileServer):
    def __init__(self, token: str):
        super().__init__()
        self.token = token
        self.assets: dict[str, bytes] = {}
        self.posts: list[dict] = []

    def add_asset(self, key: str, data: bytes) -> None:
        self.assets[key] = data
        self.add(f"/signed/{key.rsplit('/', 1)[-1]}", data)

    def _handler_class(self):
        base = super()._handler_class()
        server = self

        class Handler(base):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                server.posts.append({"form": form, "token": self.headers.get("X-Api-Key")})
                if self.headers.get("X-Api-Key") != server.token:
                    status, body = 403, {"detail": "Authentication credentials were not provided."}
                elif form.get("s3_key") not in server.assets:
                    status, body = 404, {"error": "Key not found"}
                else:
                    data = server.assets[form["s3_key"]]
                    name = form["s3_key"].rsplit("/", 1)[-1]
                    status, body = 200, {"url": server.url(f"/signed/{name}") + "?sig=abc",
                                         "size": f"{len(data) / 1e6:.1f} MB"}
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler
