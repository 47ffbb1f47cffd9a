"""A small Hugging Face Hub stand-in on 127.0.0.1, for driving huggingface_hub's real client in tests.

Implemented routes (model repositories only), as huggingface_hub 2.x calls them:

* ``POST /api/repos/create``                          create_repo (409 when it exists)
* ``GET  /api/models/{repo}[/revision/{rev}]``         model_info / repo_info (sha, private, siblings)
* ``POST /api/validate-yaml``                         README header check done by create_commit
* ``POST /api/models/{repo}/preupload/{rev}``          upload modes: always ``regular`` (see below)
* ``POST /api/models/{repo}/commit/{rev}``             NDJSON commit: header, file (base64), deletedFile,
                                                       deletedFolder; ``lfsFile`` is refused (400)
* ``POST /api/models/{repo}/tag/{rev}``                create_tag (409 when the tag exists)
* ``GET  /api/models/{repo}/refs``                     list_repo_refs
* ``POST /api/models/{repo}/paths-info/{rev}``         get_paths_info (git blob ids)
* ``GET  /api/models/{repo}/tree/{rev}``               list_repo_tree / list_repo_files
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``            hf_hub_download (X-Repo-Commit, ETag, size)

What it checks: bearer tokens (unknown -> 401 "Invalid credentials in Authorization header";
a read token writing -> 403; no token on a private repository -> 401 RepoNotFound, as the Hub
answers), that revisions exist, that the README header is a YAML mapping, and commit contents.
What it does not do: LFS or Xet storage (every file is stored as a regular git file, whatever
its size), pull requests, gated repositories, pagination, other repository types.
``fail(method, path_regex, status, times)`` injects server errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HfEndpoint:
    def __init__(self, tokens: dict[str, str] | None = None):
        # token -> "write" | "read"
        self.tokens = tokens if tokens is not None else {"hf_write": "write", "hf_read": "read"}
        self.repos: dict[str, dict] = {}
        self.commits: dict[str, dict] = {}  # oid -> {"files": {path: bytes}, "parent": oid, "message": str}
        self.requests: list[tuple[str, str]] = []
        self.faults: list[dict] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                endpoint._handle(self)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HfEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path_regex: str, status: int = 500, times: int = 1) -> None:
        self.faults.append({"method": method, "path": re.compile(path_regex), "status": status, "times": times})

    def count(self, method: str, path_regex: str) -> int:
        rx = re.compile(path_regex)
        return sum(1 for m, p in self.requests if m == method and rx.search(p))

    # ------------------------------------------------------------------ helpers
    def _reply(self, h, status: int, payload=None, *, body: bytes | None = None, headers: dict | None = None):
        if body is None:
            body = json.dumps(payload if payload is not None else {}).encode()
            ctype = "application/json"
        else:
            ctype = "application/octet-stream"
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _error(self, h, status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._reply(h, status, {"error": message}, headers=headers)

    def _resolve_rev(self, repo: dict, rev: str) -> str | None:
        rev = unquote(rev)
        if rev in repo["branches"]:
            return repo["branches"][rev]
        if rev in repo["tags"]:
            return repo["tags"][rev]
        matches = [oid for oid in repo["oids"] if oid.startswith(rev)] if len(rev) >= 7 else []
        return matches[0] if len(matches) == 1 else None

    def _new_commit(self, files: dict[str, bytes], parent: str | None, message: str) -> str:
        seed = json.dumps({"p": parent, "m": message, "f": {k: git_blob_id(v) for k, v in sorted(files.items())},
                           "n": len(self.commits)})
        oid = hashlib.sha1(seed.encode()).hexdigest()
        self.commits[oid] = {"files": dict(files), "parent": parent, "message": message}
        return oid

    # ------------------------------------------------------------------ dispatch
    def _handle(self, h) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        path, query = split.path, parse_qs(split.query)
        with self.lock:
            self.requests.append((h.command, path))
            for rule in self.faults:
                if rule["times"] > 0 and rule["method"] == h.command and rule["path"].search(path):
                    rule["times"] -= 1
                    self._error(h, rule["status"], "Injected failure")
                    return
            auth = h.headers.get("Authorization") or ""
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            if token is not None and token not in self.tokens:
                self._error(h, 401, "Invalid credentials in Authorization header")
                return
            role = self.tokens.get(token) if token else None
            try:
                self._route(h, path, query, body, role)
            except (ValueError, KeyError) as exc:
                self._error(h, 400, f"Bad request: {exc}")

    def _route(self, h, path: str, query: dict, body: bytes, role: str | None) -> None:
        m = h.command
        if m == "POST" and path == "/api/repos/create":
            return self._create(h, json.loads(body), role)
        if m == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(h, json.loads(body))
        api = re.match(r"^/api/models/([^/]+/[^/]+)(?:/(.*))?$", path)
        if api:
            repo_id, rest = api.group(1), api.group(2) or ""
            repo = self._readable(h, repo_id, role)
            if repo is None:
                return None
            if m == "GET" and rest == "":
                return self._info(h, repo_id, repo, repo["branches"]["main"])
            if m == "GET" and rest.startswith("revision/"):
                oid = self._resolve_rev(repo, rest[len("revision/"):])
                if oid is None:
                    return self._error(h, 404, "Revision not found", "RevisionNotFound")
                return self._info(h, repo_id, repo, oid)
            if m == "GET" and rest == "refs":
                return self._reply(h, 200, {
                    "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o} for b, o in repo["branches"].items()],
                    "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o} for t, o in repo["tags"].items()],
                    "converts": [],
                })
            if m == "GET" and rest.startswith("tree/"):
                rev = rest[len("tree/"):].split("/", 1)[0]
                oid = self._resolve_rev(repo, rev)
                if oid is None:
                    return self._error(h, 404, "Revision not found", "RevisionNotFound")
                files = self.commits[oid]["files"]
                return self._reply(h, 200, [self._entry(p, d) for p, d in sorted(files.items())])
            if m == "POST" and rest.startswith("paths-info/"):
                oid = self._resolve_rev(repo, rest[len("paths-info/"):])
                if oid is None:
                    return self._error(h, 404, "Revision not found", "RevisionNotFound")
                form = parse_qs(body.decode())
                files = self.commits[oid]["files"]
                return self._reply(h, 200, [self._entry(p, files[p]) for p in form.get("paths", []) if p in files])
            if m == "POST" and rest.startswith("preupload/"):
                oid = self._resolve_rev(repo, rest[len("preupload/"):])
                if oid is None:
                    return self._error(h, 404, "Revision not found", "RevisionNotFound")
                files = self.commits[oid]["files"]
                wanted = json.loads(body)["files"]
                return self._reply(h, 200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                     "oid": git_blob_id(files[f["path"]]) if f["path"] in files else None}
                    for f in wanted
                ]})
            if m == "POST" and rest.startswith("commit/"):
                if not self._may_write(h, role, repo_id):
                    return None
                return self._commit(h, repo_id, repo, unquote(rest[len("commit/"):]), body)
            if m == "POST" and rest.startswith("tag/"):
                if not self._may_write(h, role, repo_id):
                    return None
                oid = self._resolve_rev(repo, rest[len("tag/"):])
                if oid is None:
                    return self._error(h, 404, "Revision not found", "RevisionNotFound")
                tag = json.loads(body)["tag"]
                if tag in repo["tags"] or tag in repo["branches"]:
                    return self._error(h, 409, f"Tag {tag} already exists")
                repo["tags"][tag] = oid
                return self._reply(h, 200, {})
            return self._error(h, 404, f"Not implemented by this test endpoint: {m} {path}")
        res = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if res and m in ("GET", "HEAD"):
            repo_id, rev, file = res.group(1), res.group(2), unquote(res.group(3))
            repo = self._readable(h, repo_id, role)
            if repo is None:
                return None
            oid = self._resolve_rev(repo, rev)
            if oid is None:
                return self._error(h, 404, "Revision not found", "RevisionNotFound")
            files = self.commits[oid]["files"]
            if file not in files:
                return self._error(h, 404, "Entry not found", "EntryNotFound")
            data = files[file]
            return self._reply(h, 200, body=data, headers={"X-Repo-Commit": oid, "ETag": f'"{git_blob_id(data)}"'})
        return self._error(h, 404, f"Not implemented by this test endpoint: {m} {path}")

    # ------------------------------------------------------------------ routes
    def _readable(self, h, repo_id: str, role: str | None) -> dict | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 404 if role else 401, "Repository not found", "RepoNotFound")
            return None
        if repo["private"] and role is None:
            self._error(h, 401, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _may_write(self, h, role: str | None, repo_id: str) -> bool:
        if role is None:
            self._error(h, 401, "You must be authenticated to write")
            return False
        if role != "write":
            self._error(h, 403, f"You don't have the rights to write to {repo_id}")
            return False
        return True

    def _create(self, h, payload: dict, role: str | None) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if not self._may_write(h, role, repo_id):
            return
        if payload.get("type", "model") != "model":
            return self._error(h, 400, "this test endpoint only hosts model repositories")
        if repo_id in self.repos:
            return self._reply(h, 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        oid = self._new_commit({".gitattributes": b"*.zip filter=lfs diff=lfs merge=lfs -text\n"}, None, "initial commit")
        self.repos[repo_id] = {"private": private, "branches": {"main": oid}, "tags": {}, "oids": [oid]}
        return self._reply(h, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, h, payload: dict) -> None:
        content = payload.get("content", "")
        if content.startswith("---\n"):
            end = content.find("\n---", 4)
            if end < 0:
                return self._reply(h, 400, {"errors": [{"message": "unterminated YAML header"}]})
            try:
                meta = yaml.safe_load(content[4:end])
            except yaml.YAMLError as exc:
                return self._reply(h, 400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
            if not isinstance(meta, dict):
                return self._reply(h, 400, {"errors": [{"message": "the YAML header must be a mapping"}]})
        return self._reply(h, 200, {"errors": [], "warnings": []})

    def _info(self, h, repo_id: str, repo: dict, oid: str) -> None:
        files = self.commits[oid]["files"]
        card = None
        readme = files.get("README.md", b"").decode()
        if readme.startswith("---\n") and "\n---" in readme[4:]:
            card = yaml.safe_load(readme[4:readme.find("\n---", 4)])
        return self._reply(h, 200, {
            "id": repo_id, "modelId": repo_id, "sha": oid, "private": repo["private"],
            "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [], "cardData": card,
            "library_name": (card or {}).get("library_name"), "pipeline_tag": (card or {}).get("pipeline_tag"),
        })

    @staticmethod
    def _entry(path: str, data: bytes) -> dict:
        return {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}

    def _commit(self, h, repo_id: str, repo: dict, branch: str, body: bytes) -> None:
        if branch not in repo["branches"]:
            return self._error(h, 404, "Revision not found", "RevisionNotFound")
        parent = repo["branches"][branch]
        files = dict(self.commits[parent]["files"])
        header = None
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
                if value.get("parentCommit") and value["parentCommit"] != parent:
                    return self._error(h, 412, "parent commit is not the head of the branch")
            elif key == "file":
                if value.get("encoding") != "base64":
                    return self._error(h, 400, "file content must be base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(h, 404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            elif key == "lfsFile":
                return self._error(h, 400, "this test endpoint does not implement LFS uploads")
            else:
                return self._error(h, 400, f"unknown commit operation {key!r}")
        if header is None or not header.get("summary"):
            return self._error(h, 400, "commit header with a summary is required")
        oid = self._new_commit(files, parent, header["summary"])
        repo["branches"][branch] = oid
        repo["oids"].append(oid)
        return self._reply(h, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                                    "pullRequestUrl": None})
