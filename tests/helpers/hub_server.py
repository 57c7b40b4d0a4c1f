"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only, in memory, 127.0.0.1).

It serves exactly what `huggingface_hub` (2.x) calls for `create_repo`, `create_branch`,
`create_commit`/`upload_folder` (preupload answers `uploadMode: "regular"`, so files travel base64
inside the NDJSON commit), `model_info`/`repo_info`, `list_repo_files`/`list_repo_tree`,
`snapshot_download` and `hf_hub_download` (HEAD + GET on `/{repo}/resolve/{rev}/{path}` with
`X-Repo-Commit` and `ETag`), plus `/api/validate-yaml` (model-card metadata) and `/api/whoami-v2`.

Every request needs `Authorization: Bearer <token>` with a token the server knows, like a private
repo on the Hub; anything else gets 401. Tests can also plant files that a real Hub would refuse
(`HubServer.plant`), to check that clients refuse them.

    with HubServer(tokens={"hf_good": "alice"}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
_SHA_RE = re.compile(r"[0-9a-f]{40}")
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (what the Hub reports as a regular file's ETag / oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        if _SHA_RE.fullmatch(rev) and rev in self.commits:
            return rev
        return None

    def new_commit(self, branch: str, files: dict[str, bytes], summary: str) -> str:
        parent = self.branches.get(branch, "")
        h = hashlib.sha1(f"{parent}\n{summary}\n{len(self.commits)}\n".encode())
        for path in sorted(files):
            h.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        sha = h.hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class HubServer:
    """The server: `url`, `repos` (in memory), `requests` (method, path, had-valid-token) log."""

    def __init__(self, tokens: dict[str, str], host: str = "127.0.0.1"):
        self.tokens = dict(tokens)  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(_Handler):
            hub = server

        self.httpd = ThreadingHTTPServer((host, 0), Handler)  # port 0: a free port
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------ test helpers
    def plant(self, repo_id: str, files: dict[str, bytes], branch: str = "main", *, replace: bool = True) -> str:
        """Commit `files` to `repo_id` directly (no validation, so `../x` or `x.bin` go in too)."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo())
            base = {} if replace else dict(repo.commits.get(repo.branches.get(branch, ""), {}))
            base.update(files)
            return repo.new_commit(branch, base, "planted by a test")

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.resolve(rev)])


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()
    timeout = 30  # seconds a connection may stay silent before its handler thread gives up

    def log_message(self, format, *args) -> None:  # quiet test output
        pass

    # ------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _user(self) -> str:
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        user = self.hub.tokens.get(token) if token else None
        self.hub.requests.append((self.command, self.path, user is not None))
        if user is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return user

    def _dispatch(self) -> None:
        try:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            query = parse_qs(url.query)
            user = self._user()
            self._route(user, parts, query)
        except _HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message, **e.extra}, e.status, headers)

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _dispatch

    # ------------------------------------------------------------ routes
    def _repo(self, org: str, name: str) -> tuple[str, Repo]:
        repo_id = f"{org}/{name}"
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo_id, repo

    def _rev(self, repo: Repo, rev: str) -> str:
        sha = repo.resolve(rev)
        if sha is None:
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha

    def _route(self, user: str, parts: list[str], query: dict) -> None:
        m = self.command
        if parts[:2] == ["api", "whoami-v2"] and m == "GET":
            return self._json({"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
        if parts[:2] == ["api", "validate-yaml"] and m == "POST":
            return self._validate_yaml(json.loads(self._body() or b"{}"))
        if parts[:3] == ["api", "repos", "create"] and m == "POST":
            return self._create_repo(user, json.loads(self._body() or b"{}"))
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            org, name, rest = parts[2], parts[3], parts[4:]
            if not rest and m == "GET":
                return self._info(org, name, "main")
            if rest[:1] == ["revision"] and len(rest) >= 2 and m == "GET":
                return self._info(org, name, "/".join(rest[1:]))
            if rest[:1] == ["tree"] and len(rest) >= 2 and m == "GET":
                return self._tree(org, name, rest[1], "/".join(rest[2:]))
            if rest[:1] == ["preupload"] and len(rest) == 2 and m == "POST":
                return self._preupload(org, name, rest[1], json.loads(self._body() or b"{}"))
            if rest[:1] == ["commit"] and len(rest) == 2 and m == "POST":
                return self._commit(org, name, rest[1], self._body())
            if rest[:1] == ["branch"] and len(rest) == 2 and m == "POST":
                return self._branch(org, name, rest[1], json.loads(self._body() or b"{}"))
        if len(parts) >= 5 and parts[2] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(parts[0], parts[1], parts[3], "/".join(parts[4:]))
        raise _HubError(404, f"no route for {m} /{'/'.join(parts)}")

    def _create_repo(self, user: str, payload: dict) -> None:
        org, name = payload.get("organization") or user, payload.get("name", "")
        if payload.get("type") not in (None, "model"):
            raise _HubError(400, "this test server only hosts model repos")
        if not (_REPO_PART.fullmatch(org) and _REPO_PART.fullmatch(name)):
            raise _HubError(400, f"invalid repo name {org}/{name}")
        repo_id = f"{org}/{name}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                raise _HubError(409, "You already created this model repo", extra={"url": f"{self.hub.url}/{repo_id}"})
            repo = Repo(private=payload.get("private") is True or payload.get("visibility") == "private")
            repo.new_commit("main", {".gitattributes": _GITATTRIBUTES}, "initial commit")
            self.hub.repos[repo_id] = repo
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _info(self, org: str, name: str, rev: str) -> None:
        repo_id, repo = self._repo(org, name)
        sha = self._rev(repo, rev)
        files = repo.commits[sha]
        siblings = [{"rfilename": p, "size": len(files[p]), "blobId": git_blob_sha1(files[p])} for p in sorted(files)]
        self._json({"id": repo_id, "modelId": repo_id, "author": org, "sha": sha, "private": repo.private,
                    "disabled": False, "gated": False, "tags": [], "siblings": siblings})

    def _tree(self, org: str, name: str, rev: str, prefix: str) -> None:
        _, repo = self._repo(org, name)
        files = repo.commits[self._rev(repo, rev)]
        prefix = prefix.strip("/")
        entries = []
        for p in sorted(files):
            if prefix and not p.startswith(prefix + "/"):
                continue
            entries.append({"type": "file", "path": p, "size": len(files[p]), "oid": git_blob_sha1(files[p])})
        self._json(entries)

    def _preupload(self, org: str, name: str, rev: str, payload: dict) -> None:
        _, repo = self._repo(org, name)
        sha = repo.resolve(rev)
        current = repo.commits.get(sha, {}) if sha else {}
        out = []
        for f in payload.get("files", []):
            path = f["path"]
            oid = git_blob_sha1(current[path]) if path in current else None
            out.append({"path": path, "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": out, "commitOid": sha})

    def _commit(self, org: str, name: str, rev: str, body: bytes) -> None:
        repo_id, repo = self._repo(org, name)
        with self.hub.lock:
            if rev not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
            files = dict(repo.commits[repo.branches[rev]])
            summary = ""
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value.get("summary", "")
                    parent = value.get("parentCommit")
                    if parent and parent != repo.branches[rev]:
                        raise _HubError(412, "parent commit is not the head of the branch")
                elif key == "file":
                    path = value["path"]
                    if path.startswith("/") or ".." in path.split("/") or "\\" in path:
                        raise _HubError(400, f"invalid path {path!r}")
                    if value.get("encoding") != "base64":
                        raise _HubError(400, "file content must be base64")
                    files[path] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:  # lfsFile, xet: never asked for, since preupload answers "regular"
                    raise _HubError(400, f"this test server does not take {key!r} operations")
            sha = repo.new_commit(rev, files, summary)
        self._json({"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}",
                    "commitMessage": summary, "hookOutput": ""})

    def _branch(self, org: str, name: str, branch: str, payload: dict) -> None:
        _, repo = self._repo(org, name)
        with self.hub.lock:
            if branch in repo.branches:
                raise _HubError(409, f"Branch {branch} already exists")
            start = self._rev(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start
        self._json({"success": True})

    def _resolve(self, org: str, name: str, rev: str, path: str) -> None:
        _, repo = self._repo(org, name)
        sha = self._rev(repo, rev)
        files = repo.commits[sha]
        if path not in files:
            raise _HubError(404, "Entry not found", "EntryNotFound")
        data = files[path]
        self._send(200, data, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(data)}"'},
                   content_type="application/octet-stream")

    def _validate_yaml(self, payload: dict) -> None:
        """A subset of the Hub's model-card checks: the front matter parses, known keys have the right shape."""
        content = payload.get("content", "")
        errors = []
        meta = {}
        if content.startswith("---\n"):
            end = content.find("\n---", 4)
            try:
                meta = yaml.safe_load(content[4:end]) if end > 0 else None
            except yaml.YAMLError as e:
                errors.append(f"invalid YAML: {e}")
            if end < 0 or not isinstance(meta, dict):
                errors.append("the metadata block must be a YAML mapping between two '---' lines")
                meta = {}
        for key in ("library_name", "pipeline_tag", "license"):
            if key in meta and not isinstance(meta[key], str):
                errors.append(f"'{key}' must be a string")
        for key in ("tags", "datasets", "base_model"):
            value = meta.get(key)
            if value is not None and not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                errors.append(f"'{key}' must be a string or a list of strings")
        for i, model in enumerate(meta.get("model-index") or []):
            for j, result in enumerate(model.get("results") or []):
                where = f"model-index[{i}].results[{j}]"
                if not isinstance((result.get("task") or {}).get("type"), str):
                    errors.append(f"{where}.task.type must be a string")
                dataset = result.get("dataset") or {}
                if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                    errors.append(f"{where}.dataset needs string 'type' and 'name'")
                for k, metric in enumerate(result.get("metrics") or []):
                    if not isinstance(metric.get("type"), str) or not isinstance(metric.get("value"), (int, float)):
                        errors.append(f"{where}.metrics[{k}] needs a string 'type' and a numeric 'value'")
        if errors:
            return self._json({"errors": [{"message": e} for e in errors], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})
