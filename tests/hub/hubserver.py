"""A loopback stand-in for the Hugging Face Hub HTTP API, enough for the real `huggingface_hub` client.

Repos with commits, branches, tags and refs/pr/N; repo creation, preupload, the LFS batch API with
PUT + verify, NDJSON commits, validate-yaml, revision info with file metadata, trees, and
resolve/ downloads whose LFS files redirect to a second loopback "CDN" server. Errors carry the
Hub's X-Error-Code headers so huggingface_hub raises its own typed errors. Switches serve wrong
bytes or drop a connection mid-file.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from servers_common import Handler, Server

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".h5", ".msgpack", ".onnx")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:  # git's oid: of the pointer for LFS files
        return git_sha1(self.pointer if self.lfs else self.data)


@dataclass
class Repo:
    private: bool = False
    gated: bool = False
    commits: dict = field(default_factory=dict)   # sha -> {path: Blob}
    parents: dict = field(default_factory=dict)   # sha -> parent sha
    refs: dict = field(default_factory=dict)      # "main", "v1.0" (tags), "refs/pr/1" -> sha
    tags: set = field(default_factory=set)


class HubState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}             # sha256 -> bytes (the CDN's store)
        self.tokens = {"hf_write_token": "me", "hf_read_token": "reader"}
        self.accepted: set[tuple[str, str]] = set()  # (repo, token) that accepted a gated repo's terms
        self.corrupt: set[str] = set()               # oids (sha256 or git sha1) served with a flipped byte
        self.drop_once: set[str] = set()             # oids whose next download is cut halfway
        self.log: list[tuple[str, str, dict]] = []   # (method, path, headers) of every request
        self.pace_s = 0.0                            # seconds between 16 KB steps of a body (a slow link)
        self.yaml_checked: list[str] = []
        self._counter = itertools.count()

    def commit(self, repo_id: str, files: dict, branch: str = "main", message: str = "") -> str:
        repo = self.repos[repo_id]
        parent = repo.refs.get(branch)
        sha = hashlib.sha1(f"{repo_id}{parent}{message}{next(self._counter)}".encode()).hexdigest()
        repo.commits[sha], repo.parents[sha], repo.refs[branch] = files, parent, sha
        return sha

    def resolve(self, repo: Repo, rev: str) -> str | None:
        if rev in repo.refs:
            return repo.refs[rev]
        return rev if re.fullmatch(r"[0-9a-f]{40}", rev) and rev in repo.commits else None


class HubHandler(Handler):
    state: HubState
    cdn_url: str

    # -- plumbing ------------------------------------------------------------------------------
    def _route(self) -> None:
        parts = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.segments = [unquote(s) for s in parts.path.strip("/").split("/")]
        auth = self.headers.get("Authorization", "")
        self.token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        with self.state.lock:
            self.state.log.append((self.command, parts.path, dict(self.headers)))

    def error(self, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
        headers = {"X-Error-Message": message, "Content-Type": "application/json", **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self.reply(status, json.dumps({"error": message}).encode(), headers)

    def json(self, value, status: int = 200) -> None:
        self.reply(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def bad_token(self) -> bool:
        if self.token is not None and self.token not in self.state.tokens:
            self.error(401, None, "Invalid credentials in Authorization header")
            return True
        return False

    def repo_for_read(self, repo_id: str, files: bool) -> Repo | None:
        """The repo, or None after answering the error the Hub would."""
        if self.bad_token():
            return None
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and self.token is None):
            status = 401 if self.token is None else 404
            self.error(status, "RepoNotFound", "Repository not found")
            return None
        if files and repo.gated and (repo_id, self.token) not in self.state.accepted:
            status = 401 if self.token is None else 403
            self.error(status, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access "
                       "to it and be authenticated to access it. Please log in.")
            return None
        return repo

    def repo_for_write(self, repo_id: str) -> Repo | None:
        if self.bad_token():
            return None
        if self.state.tokens.get(self.token) != "me":
            self.error(403 if self.token else 401, None, "You don't have the rights to write to this repo")
            return None
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self.error(404, "RepoNotFound", "Repository not found")
        return repo

    def revision(self, repo: Repo, rev: str) -> str | None:
        sha = self.state.resolve(repo, rev)
        if sha is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    # -- reads ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._route()
        s = self.segments
        if s[:2] == ["api", "models"] and len(s) in (4, 6) and (len(s) == 4 or s[4] == "revision"):
            return self.info(f"{s[2]}/{s[3]}", s[5] if len(s) == 6 else "main")
        if s[:2] == ["api", "models"] and len(s) >= 6 and s[4] == "tree":
            return self.tree(f"{s[2]}/{s[3]}", s[5], "/".join(s[6:]))
        if len(s) >= 5 and s[2] == "resolve":
            return self.resolve_file(f"{s[0]}/{s[1]}", s[3], "/".join(s[4:]))
        self.error(404, None, "Not found")

    def info(self, repo_id: str, rev: str) -> None:
        repo = self.repo_for_read(repo_id, files=False)
        sha = repo and self.revision(repo, rev)
        if not sha:
            return
        siblings = []
        for path, blob in sorted(repo.commits[sha].items()):
            entry = {"rfilename": path}
            if self.query.get("blobs"):
                entry.update(size=len(blob.data), blobId=blob.oid)
                if blob.lfs:
                    entry["lfs"] = {"sha256": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
            siblings.append(entry)
        self.json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                   "gated": "auto" if repo.gated else False, "siblings": siblings, "tags": []})

    def tree(self, repo_id: str, rev: str, prefix: str) -> None:
        repo = self.repo_for_read(repo_id, files=False)
        sha = repo and self.revision(repo, rev)
        if not sha:
            return
        entries, folders = [], set()
        for path, blob in sorted(repo.commits[sha].items()):
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            parents = path.split("/")[:-1]
            folders.update("/".join(parents[: i + 1]) for i in range(len(parents)))
            entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
            entries.append(entry)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)]
        self.json(entries)

    def resolve_file(self, repo_id: str, rev: str, path: str) -> None:
        repo = self.repo_for_read(repo_id, files=True)
        sha = repo and self.revision(repo, rev)
        if not sha:
            return
        blob = repo.commits[sha].get(path)
        if blob is None:
            return self.error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.oid}"'}
        if blob.lfs:  # like the Hub: metadata here, bytes from the CDN (auth must not follow)
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data)),
                            "Location": f"{self.cdn_url}/blobs/{blob.sha256}?name={path}"})
            return self.reply(302, b"", headers)
        self.serve(blob.data, blob.oid, headers)

    def serve(self, data: bytes, oid: str, headers: dict) -> None:
        state = self.state
        if oid in state.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if self.command == "GET" and oid in state.drop_once:
            state.drop_once.discard(oid)
            return self.drop_after(200, data, headers)
        self.send_range(data, headers.pop("ETag", f'"{oid}"'), headers)

    # -- writes --------------------------------------------------------------------------------
    def do_POST(self) -> None:
        self._route()
        body = self.read_body()
        s = self.segments
        if s == ["api", "repos", "create"]:
            return self.create_repo(json.loads(body))
        if s == ["api", "validate-yaml"]:
            return self.validate_yaml(json.loads(body))
        if len(s) == 6 and s[:2] == ["api", "models"] and s[4] in ("preupload", "commit", "tag"):
            repo_id = f"{s[2]}/{s[3]}"
            return getattr(self, s[4])(repo_id, s[5], body)
        if len(s) == 6 and s[1].endswith(".git") and s[2:] == ["info", "lfs", "objects", "batch"]:
            return self.lfs_batch(f"{s[0]}/{s[1][:-4]}", json.loads(body))
        if s[0] == "lfs-verify":
            oid = json.loads(body)["oid"]
            return self.json({}) if oid in self.state.lfs else self.error(404, None, "object not found")
        self.error(404, None, "Not found")

    def do_PUT(self) -> None:
        self._route()
        body = self.read_body()
        if self.segments[0] == "lfs-upload":
            if hashlib.sha256(body).hexdigest() != self.segments[1]:
                return self.error(400, None, "content does not match the announced oid")
            self.state.lfs[self.segments[1]] = body
            return self.reply(200, b"", {"ETag": '"ok"'})
        self.error(404, None, "Not found")

    def create_repo(self, payload: dict) -> None:
        if self.bad_token() or self.state.tokens.get(self.token) != "me":
            return self.error(401, None, "Invalid username or password.")
        repo_id = f"{payload.get('organization') or 'me'}/{payload['name']}"
        url = f"{self.server_url()}/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self.json({"error": "You already created this model repo", "url": url}, 409)
            private = payload.get("private") or payload.get("visibility") == "private"
            self.state.repos[repo_id] = Repo(private=bool(private))
            self.state.commit(repo_id, {".gitattributes": Blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", False)},
                              message="initial commit")
        self.json({"url": url, "name": repo_id})

    def server_url(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        self.state.yaml_checked.append(content)
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
            if not isinstance(data, dict):
                raise ValueError("metadata must be a mapping")
        except Exception as e:
            return self.json({"errors": [{"message": str(e)}], "warnings": []}, 400)
        self.json({"errors": [], "warnings": []})

    def preupload(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self.repo_for_write(repo_id)
        sha = repo and self.revision(repo, rev)
        if not sha:
            return
        files = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 << 20 or b"\0" in sample
            current = repo.commits[sha].get(f["path"])
            oid = None if current is None else (current.sha256 if current.lfs else git_sha1(current.data))
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self.json({"files": files, "commitOid": sha})

    def lfs_batch(self, repo_id: str, payload: dict) -> None:
        if self.repo_for_write(repo_id) is None:
            return
        base, objects = self.server_url(), []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {"upload": {"href": f"{base}/lfs-upload/{obj['oid']}"},
                                    "verify": {"href": f"{base}/lfs-verify/{obj['oid']}"}}
            objects.append(entry)
        self.reply(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   {"Content-Type": "application/vnd.git-lfs+json"})

    def commit(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self.repo_for_write(repo_id)
        sha = repo and self.revision(repo, rev)
        if not sha:
            return
        files, message = dict(repo.commits[sha]), ""
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    return self.error(422, None, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = Blob(self.state.lfs[value["oid"]], True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
        with self.state.lock:
            branch, pr_url = rev, None
            if self.query.get("create_pr"):
                number = 1 + sum(r.startswith("refs/pr/") for r in repo.refs)
                branch = f"refs/pr/{number}"
                repo.refs[branch] = sha
                pr_url = f"{self.server_url()}/{repo_id}/discussions/{number}"
            new = self.state.commit(repo_id, files, branch, message)
        self.json({"commitUrl": f"{self.server_url()}/{repo_id}/commit/{new}", "commitOid": new,
                   "pullRequestUrl": pr_url})

    def tag(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self.repo_for_write(repo_id)
        sha = repo and self.revision(repo, rev)
        if not sha:
            return
        tag = json.loads(body)["tag"]
        if tag in repo.refs:
            return self.error(409, None, f"Tag {tag} already exists")
        repo.refs[tag] = sha
        repo.tags.add(tag)
        self.json({"name": tag})


class CdnHandler(Handler):
    """The storage host LFS downloads are redirected to: no auth, Range support."""

    state: HubState

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        with self.state.lock:
            self.state.log.append((self.command, "cdn:" + path, dict(self.headers)))
        oid = path.rsplit("/", 1)[-1]
        data = self.state.lfs.get(oid)
        if data is None:
            return self.reply(404, b"")
        if "Authorization" in self.headers:  # the real CDN would reject a leaked Hub token
            return self.reply(400, b"Authorization must not be forwarded to the CDN")
        HubHandler.serve(self, data, oid, {"ETag": f'"{oid}"', "Content-Type": "application/octet-stream"})


class HubServers:
    """The hub API server and its CDN, sharing one state."""

    def __init__(self) -> None:
        self.state = HubState()
        self.cdn = Server(CdnHandler, state=self.state)
        self.hub = Server(HubHandler, state=self.state, cdn_url=self.cdn.url)
        self.url = self.hub.url

    def close(self) -> None:
        self.hub.close()
        self.cdn.close()

    def requests(self, needle: str) -> list[tuple[str, str, dict]]:
        return [entry for entry in self.state.log if needle in entry[1]]
