"""Presets on a Hugging Face Hub (or any endpoint speaking its API), through `huggingface_hub`.

Files land in huggingface_hub's own cache (shared with transformers). Every call passes the endpoint,
cache folder and token read from the environment *now*. After a download each file's content is
checked against the hub's oid (sha256 for LFS files, git sha1 for the others) and against zoohub.json.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
    RemoteEntryNotFoundError, RepositoryNotFoundError,
)
from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFoundError

from zoohub.errors import (
    AuthError, DiskFullError, HubError, HubUnreachableError, IntegrityError, MissingFileError, OfflineError,
    RepoNotFoundError, RevisionNotFoundError,
)
from zoohub.hub import confine, env, integrity
from zoohub.hub.files import is_gguf_repo, select_files, select_gguf
from zoohub.hub.handles import COMMIT
from zoohub.hub.local import disk_full
from zoohub.hub.static import does_not_resolve

logger = logging.getLogger("zoohub.hub")
_HEX64 = 64


def repo_cache(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def fetch_command(repo_id: str, revision: str) -> str:
    return f"python -m zoohub.hub download 'hf://{repo_id}@{revision}'"


@contextlib.contextmanager
def translate_errors(repo_id: str, revision: str, endpoint: str, token: str | None,
                     filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and httpx errors into zoohub's, with messages that say what to do."""
    where = f"hf://{repo_id}@{revision}"
    try:
        yield
    except GatedRepoError:
        raise AuthError(
            f"{where} is a gated repo: accept its terms on {endpoint}/{repo_id} while logged in, then set "
            "HF_TOKEN to a read token of that account (" + ("the current token has no access yet"
                                                          if token else "no token is set") + ")") from None
    except RepositoryNotFoundError:
        why = "HF_TOKEN has no access to it" if token else "no HF_TOKEN is set"
        raise RepoNotFoundError(
            f"repo {repo_id!r} not found on {endpoint} (or it is private and {why}); check the name, "
            "or set HF_TOKEN to a token with read access") from None
    except HfRevisionNotFoundError:
        raise RevisionNotFoundError(
            f"revision {revision!r} not found in hf://{repo_id}; use an existing branch, tag, full "
            f"40-character commit hash or refs/pr/N (see {endpoint}/{repo_id}/tree/main)") from None
    except RemoteEntryNotFoundError:
        raise MissingFileError(f"{filename or 'a file'} not found in {where}; the repo changed "
                               "while loading, or the preset is incomplete") from None
    except OfflineModeIsEnabled:
        raise OfflineError(f"{where} is not cached and offline mode is on; {fetch_command(repo_id, revision)} "
                           "while online fetches it") from None
    except LocalEntryNotFoundError:
        raise HubUnreachableError(
            f"cannot reach {endpoint} to fetch {filename} of {where}, and it is not cached; check the "
            f"connection and HF_ENDPOINT, then run {fetch_command(repo_id, revision)}") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        server = env.redact(str(getattr(e, "server_message", "") or ""), token)
        if status in (401, 403):
            raise AuthError(
                f"{endpoint} refused access to {where} ({status}{': ' + server if server else ''}); set "
                "HF_TOKEN to a valid token with read access (write access to upload)") from None
        if status is not None and status >= 500:
            raise HubUnreachableError(f"{endpoint} answered {status} for {where}; try again later") from None
        raise HubError(f"{endpoint} answered {status} for {where}: {server or 'no details'}") from None
    except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.NetworkError) as e:
        if does_not_resolve(e):
            host = urlparse(endpoint).hostname
            raise HubUnreachableError(
                f"cannot reach {endpoint}: the host name {host} does not resolve (DNS lookup failed), so "
                f"{where} cannot be fetched; check HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use cached files "
                "only") from None
        raise HubUnreachableError(
            f"cannot reach {endpoint} ({type(e).__name__}) to fetch {where}; check the connection and "
            "HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use cached files only") from None
    except OSError as e:
        if "Consistency check failed" in str(e):  # huggingface_hub's size check
            raise IntegrityError(f"{filename} from {where} arrived with the wrong size ({e}); load again "
                                 "to re-download") from None
        if why := disk_full(e):  # huggingface_hub keeps its .incomplete file to resume from
            raise DiskFullError(f"cannot write {filename or 'a file'} of {where} into {env.hf_cache_dir()}: "
                                f"{why}. Free some space there, or set HF_HUB_CACHE to a disk with room, and "
                                "load again") from None
        raise


def _delete_cached(path: Path) -> None:
    """Remove a snapshot entry and the blob it points to."""
    real = Path(os.path.realpath(path))
    integrity.forget(path)
    for p in (path, real):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _expected_from_blob_name(path: Path) -> dict:
    """huggingface_hub names blobs by etag: sha256 for LFS files, git sha1 for the others."""
    name = Path(os.path.realpath(path)).name
    if all(c in "0123456789abcdef" for c in name):
        if len(name) == _HEX64:
            return {"sha256": name}
        if len(name) == 40:
            return {"git_sha1": name}
    return {}


def _verified(path: Path, name: str, where: str, **expected) -> Path:
    try:
        integrity.check(path, name, where, **expected)
    except IntegrityError:
        _delete_cached(path)
        raise
    return path


def _record_file(storage: Path, commit: str, gguf_file: str | None = None) -> Path:
    # Which files make the preset at this commit (one record per GGUF file picked from a repo of them);
    # beside refs/ and snapshots/ (huggingface_hub's cache scanner ignores other folders).
    suffix = "" if gguf_file is None else "." + gguf_file.replace("/", "--")
    return storage / ".zoohub" / f"{commit}{suffix}.json"


def fetch(repo_id: str, revision: str | None = None, gguf_file: str | None = None) -> Path:
    """Download what a model needs from hf://repo_id@revision (or its GGUF file `gguf_file`); the
    snapshot folder in the HF cache."""
    endpoint, cache_dir, token = env.hf_endpoint(), env.hf_cache_dir(), env.hf_token()
    revision = revision or "main"
    storage = repo_cache(cache_dir, repo_id)
    if env.offline():
        return from_cache(repo_id, revision, storage, "offline mode is on (HF_HUB_OFFLINE=1)", OfflineError,
                          gguf_file)
    if COMMIT.match(revision) and _record_file(storage, revision, gguf_file).is_file():
        # A commit never changes: when all its files are cached and verified, skip the network.
        with contextlib.suppress(MissingFileError, OfflineError, IntegrityError):
            return from_cache(repo_id, revision, storage, "", OfflineError, gguf_file)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        with env.hf_progress(), translate_errors(repo_id, revision, endpoint, token):
            info = api.model_info(repo_id, revision=revision, files_metadata=True,
                                  timeout=httpx2.Timeout(60.0, connect=env.connect_timeout()))
    except HubUnreachableError as e:
        try:
            folder = from_cache(repo_id, revision, storage, str(e), HubUnreachableError, gguf_file)
        except (HubUnreachableError, IntegrityError):
            raise e from None
        logger.warning("%s; using the cached copy of hf://%s@%s", e, repo_id, revision)
        return folder

    commit, where = info.sha, f"hf://{repo_id}@{revision}"
    siblings = {s.rfilename: s for s in info.siblings or []}

    def download(name: str) -> Path:
        with env.hf_progress(), translate_errors(repo_id, revision, endpoint, token, name):
            path = Path(hf_hub_download(repo_id, name, revision=commit, cache_dir=cache_dir,
                                        endpoint=endpoint, token=token))
        sibling = siblings[name]
        if sibling.lfs is not None:
            expected = {"sha256": sibling.lfs.sha256, "size": sibling.lfs.size}
        else:
            expected = {"git_sha1": sibling.blob_id, "size": sibling.size}
        return _verified(path, name, where, **expected)

    def read_json(name: str) -> dict:
        return json.loads(download(name).read_text(encoding="utf-8"))

    if is_gguf_repo(siblings, gguf_file):
        names = select_gguf(siblings, gguf_file, where)
    else:
        names = select_files(siblings.__contains__, read_json, listing=list(siblings), where=where)
    for name in names:
        download(name)
    folder = storage / "snapshots" / commit
    try:
        integrity.check_manifest(folder, names, where)
    except IntegrityError as e:
        bad = next((n for n in names if f"{n} from" in str(e)), None)
        if bad:
            _delete_cached(folder / bad)
        raise
    _remember(storage, revision, commit, names, gguf_file)
    return folder


def _remember(storage: Path, revision: str, commit: str, names: list[str], gguf_file: str | None = None) -> None:
    """Point refs/<revision> at the commit (as huggingface_hub does) and record the file list."""
    with contextlib.suppress(OSError):
        if revision != commit:
            ref = storage / "refs" / revision
            if not ref.is_file() or ref.read_text() != commit:
                _write_atomically(ref, commit)
        _write_atomically(_record_file(storage, commit, gguf_file), json.dumps(names))


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` whole: processes fetching the same repo at once, or one killed mid-write,
    never leave a half-written ref or record (a unique temp name each, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def from_cache(repo_id: str, revision: str, storage: Path, reason: str, error: type[Exception],
               gguf_file: str | None = None) -> Path:
    """The cached snapshot, complete and verified, without any network; else `error` listing what is missing."""
    where = f"hf://{repo_id}@{revision}"
    commit = revision if COMMIT.match(revision) else None
    ref = storage / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    folder = storage / "snapshots" / (commit or "?")
    names: list[str] | None = None
    if commit and _record_file(storage, commit, gguf_file).is_file():
        names = json.loads(_record_file(storage, commit, gguf_file).read_text())
        missing = [n for n in names if not (folder / n).is_file()]
    elif commit and folder.is_dir():
        try:  # fetched by another tool: take what the snapshot holds
            # the snapshot's links must lead into this repo's blobs/ (confine), like any preset file
            names = [gguf_file] if gguf_file and confine.is_file(folder, gguf_file) else select_files(
                lambda n: confine.is_file(folder, n), lambda n: json.loads(confine.read_bytes(folder, n)),
                listing=None, where=where)
            missing = []
        except MissingFileError as e:
            missing = [str(e)]
    else:
        missing = ["config.json", "model.safetensors (or model.safetensors.index.json and its shards)",
                   "tokenizer files"]
    if missing or names is None:
        raise error(
            f"{reason}, and {where} is not fully cached in {storage.parent}: missing {', '.join(missing)}. "
            f"Fetch it while online with: {fetch_command(repo_id, revision)}")
    for name in names:
        _verified(folder / name, name, where, **_expected_from_blob_name(folder / name))
    integrity.check_manifest(folder, names, where)
    return folder
