"""A loopback Hugging Face Hub for tests: the endpoints huggingface_hub calls, on 127.0.0.1.

`Hub().add(repo, {path: bytes}, gated=False)` publishes a repo; `hub.url` goes in
HF_ENDPOINT. Served as the Hub does:
- GET /api/models/{repo}[/revision/{rev}]: id, sha, gated, siblings (with sizes and
  LFS sha256 when ?blobs=true); GET /api/models/{repo}/tree/{rev}: the file list.
- HEAD and GET /{repo}/resolve/{rev}/{path}: X-Repo-Commit, ETag (git blob sha1, or
  the sha256 for LFS files: *.safetensors, *.gguf, *.bin), X-Linked-Etag and
  X-Linked-Size for LFS files, Content-Length, Accept-Ranges; `Range: bytes=N-` gets 206.
- Errors with X-Error-Code: RepoNotFound and RevisionNotFound (404), EntryNotFound
  (404), GatedRepo (401 without `Authorization: Bearer <token>`).
Faults: `drop_after[path] = n` sends n bytes of the next full GET, then closes the
connection; `corrupt[path] = True` serves bytes that differ from the advertised hash.
Every request is logged as (method, path, Range header) in `hub.log`.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS = (".safetensors", ".gguf", ".bin")


@dataclass
class Repo:
    files: dict
    commit: str
    gated: bool = False


@dataclass
class Hub:
    token: str = "hf_test_token"
    repos: dict = field(default_factory=dict)
    drop_after: dict = field(default_factory=dict)
    corrupt: dict = field(default_factory=dict)
    log: list = field(default_factory=list)

    def add(self, repo: str, files: dict, gated: bool = False) -> Repo:
        commit = hashlib.sha1(repo.encode() + b"".join(sorted(hashlib.sha1(v).digest() for v in files.values()))).hexdigest()
        self.repos[repo] = Repo(dict(files), commit, gated)
        return self.repos[repo]

    def start(self) -> "Hub":
        hub = self

        class Handler(_Handler):
            state = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self, path: str) -> list:
        """The Range headers of every GET of a file path (None: the whole file)."""
        return [rng for method, p, rng in self.log if method == "GET" and p.endswith("/" + path) and "/resolve/" in p]


def is_lfs(path: str) -> bool:
    return path.endswith(LFS)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_sha1(data)


class _Handler(BaseHTTPRequestHandler):
    state: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    # -- helpers ----------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool = False, commit: str | None = None):
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, json.dumps({"error": message}).encode(), headers, head)

    def _repo(self, repo: str, head: bool = False) -> Repo | None:
        r = self.state.repos.get(repo)
        if r is None:
            self._error(404, "RepoNotFound", "Repository not found", head)
        return r

    def _rev_ok(self, r: Repo, rev: str, head: bool = False) -> bool:
        if rev in ("main", r.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        return False

    # -- verbs -------------------------------------------------------------------------
    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch(head=False)

    def _dispatch(self, head: bool):
        url = urlparse(self.path)
        path = unquote(url.path)
        self.state.log.append(("HEAD" if head else "GET", path, self.headers.get("Range")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            return self._info(m.group(1), m.group(2) or "main", "blobs=true" in (url.query or "").lower(), head)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path)
        if m:
            return self._tree(m.group(1), m.group(2), head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(m.group(1), m.group(2), m.group(3), head)
        self._error(404, "NotFound", "Not found", head)

    def _info(self, repo: str, rev: str, blobs: bool, head: bool):
        r = self._repo(repo, head)
        if r is None or not self._rev_ok(r, rev, head):
            return
        siblings = []
        for p, data in sorted(r.files.items()):
            s = {"rfilename": p}
            if blobs:
                s.update(size=len(data), blobId=git_sha1(data))
                if is_lfs(p):
                    s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(s)
        body = {"id": repo, "modelId": repo, "sha": r.commit, "private": False,
                "gated": "manual" if r.gated else False, "disabled": False, "siblings": siblings}
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

    def _tree(self, repo: str, rev: str, head: bool):
        r = self._repo(repo, head)
        if r is None or not self._rev_ok(r, rev, head):
            return
        items = []
        for p, data in sorted(r.files.items()):
            item = {"type": "file", "path": p, "size": len(data), "oid": git_sha1(data)}
            if is_lfs(p):
                item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            items.append(item)
        self._send(200, json.dumps(items).encode(), {"Content-Type": "application/json"}, head)

    def _resolve(self, repo: str, rev: str, file: str, head: bool):
        r = self._repo(repo, head)
        if r is None or not self._rev_ok(r, rev, head):
            return
        if r.gated and self.headers.get("Authorization") != f"Bearer {self.state.token}":
            return self._error(401, "GatedRepo", f"Access to model {repo} is restricted.", head, r.commit)
        if file not in r.files:
            return self._error(404, "EntryNotFound", f"{file} does not exist on {rev}", head, r.commit)
        data = r.files[file]
        tag = etag(file, data)
        headers = {"X-Repo-Commit": r.commit, "ETag": f'"{tag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if is_lfs(file):
            headers.update({"X-Linked-Etag": f'"{tag}"', "X-Linked-Size": len(data)})
        if self.state.corrupt.get(file) and not head:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if rng and not head:
            start = int(rng.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        status = 206 if start else 200
        if head:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return
        body = data[start:]
        cut = self.state.drop_after.pop(file, None) if not start else None
        if cut is None:
            return self._send(status, body, headers)
        # Advertise the whole file, send part of it, then drop the connection.
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
