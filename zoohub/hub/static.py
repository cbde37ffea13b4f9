"""Presets in a folder on a static web host (https:// or http://), through `requests`.

Our own cache under $ZOOHUB_HOME/static: each file is downloaded to `<name>.incomplete`, resumed with
`Range`/`If-Range` after a dropped connection, retried with backoff on 5xx, checked (size, and sha256
against zoohub.json when the folder has one), then renamed into place. Later loads revalidate with
`If-None-Match`; offline, the cached folder is used as is.

One process at a time works on a cache entry (a flock under static/.locks), so processes loading
the same preset at once download each file once. A cached version is "complete" only between
fetches that finished; while files are replaced it is not, so a crash never leaves a mix that a
later load takes as complete. A host name that does not resolve fails at once; a failed first
fetch leaves no cache entry, and a full disk leaves no partial file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlparse

import requests

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent processes then each download on their own
    fcntl = None

from zoohub.errors import (
    AuthError, DiskFullError, HubError, HubUnreachableError, IntegrityError, OfflineError,
)
from zoohub.hub import env, integrity
from zoohub.hub.local import disk_full
from zoohub.hub.files import select_files

logger = logging.getLogger("zoohub.hub")
STATE = ".zoohub-static.json"
MAX_ATTEMPTS = 5
BACKOFF_S = 0.25  # doubled after each failed attempt
_CHUNK = 1 << 16  # small enough that a dropped connection loses little


def cache_folder(base_url: str) -> Path:
    parsed = urlparse(base_url)
    path = re.sub(r"[^A-Za-z0-9._-]+", "-", parsed.path.strip("/")) or "root"
    host = re.sub(r"[^A-Za-z0-9._-]+", "-", parsed.netloc)
    return env.zoohub_home() / "static" / host / f"{path}-{hashlib.sha1(base_url.encode()).hexdigest()[:8]}"


def fetch_command(base_url: str) -> str:
    return f"python -m zoohub.hub download '{base_url}'"


class _Unreachable(Exception):
    pass


class StaticFolder:
    """One folder URL and its cache.

        >>> folder = StaticFolder("https://models.example.org/bert-tiny")   # no request yet
        >>> folder.base, folder.folder.name
        ('https://models.example.org/bert-tiny/', 'bert-tiny-636c8a9a')
        >>> path = folder.fetch()          # downloads into folder.folder  # doctest: +SKIP
    """

    def __init__(self, base_url: str) -> None:
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        self.folder = cache_folder(self.base)
        self.session = requests.Session()
        self.state = self._read_state()

    # -- state ---------------------------------------------------------------------------------
    def _read_state(self) -> dict:
        try:
            return json.loads((self.folder / STATE).read_text())
        except (OSError, ValueError):
            return {"files": {}, "complete": None}

    def _write_state(self) -> None:
        if not self.folder.is_dir():  # nothing was downloaded: no cache entry to describe
            return
        tmp = self.folder / f"{STATE}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
            os.replace(tmp, self.folder / STATE)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if why := disk_full(e):
                raise DiskFullError(f"cannot write {self.folder / STATE}: {why}. Free some space "
                                    "there, or set ZOOHUB_HOME to a disk with room, and load again") from None
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """Hold the cache entry's lock (flock; released by the kernel if the process dies): one process
        at a time reads and writes an entry. Yields whether another process held it first."""
        lock_file = lock_path(self.folder)
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a+b") as handle:
            waited = False
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    logger.info("waiting for another process downloading %s", self.base)
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    waited = True
            try:
                yield waited
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    # -- one file ------------------------------------------------------------------------------
    def get(self, name: str) -> Path | None:
        """Download (or revalidate) one file; None when the host says 404."""
        url = self.base + quote(name)
        dest = self.folder / name
        part = dest.with_name(dest.name + ".incomplete")
        known = self.state["files"].get(name) or {}
        validator = self.state.setdefault("partial", {}).get(name)
        last = "no answer"  # why the latest attempt failed, for the final message
        timeouts = 0

        def stalled(error: Exception) -> bool:
            """Note why the attempt failed; True when the host has now timed out twice (it is stalled)."""
            nonlocal last, timeouts
            last = _reason(error)
            timeouts += isinstance(error, requests.Timeout) or "timed out" in str(error).lower()
            return timeouts >= 2

        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                self._sleep(attempt - 1)
            headers = {"Accept-Encoding": "identity"}
            if dest.is_file() and known.get("etag"):
                headers["If-None-Match"] = known["etag"]
            resume = part.stat().st_size if part.is_file() and validator else 0
            if resume:
                headers["Range"] = f"bytes={resume}-"
                headers["If-Range"] = validator
            try:
                response = self.session.get(url, headers=headers, stream=True,
                                            timeout=(env.connect_timeout(), env.read_timeout()))
            except (requests.ConnectionError, requests.Timeout) as e:
                host = urlparse(self.base).hostname
                if does_not_resolve(e):  # retrying cannot make a name resolve
                    raise _Unreachable(f"the host name {host} does not resolve (DNS lookup failed)") from None
                refused = "NewConnectionError" in repr(e) or isinstance(e, requests.ConnectTimeout)
                if refused and attempt >= 1:  # a host that refuses twice is down: fail in well under a second
                    raise _Unreachable(f"cannot reach {urlparse(self.base).netloc} ({type(e).__name__})") from None
                if stalled(e):
                    break
                continue
            with response:
                status = response.status_code
                if status == 304:
                    return dest
                if status == 404:
                    return None
                if status in (401, 403):
                    raise AuthError(f"{url} answered {status}; this static host needs credentials zoohub "
                                    "does not send. Download the folder yourself and load it by path")
                if status >= 500 or status == 429:
                    logger.info("%s answered %s; retrying", url, status)
                    last = f"it answered {status} {response.reason or ''}".rstrip()
                    continue
                if status not in (200, 206):
                    raise HubError(f"{url} answered {status}; expected the file or 404")
                total = self._total(response, resume if status == 206 else 0)
                if status == 200:
                    resume = 0
                tag = response.headers.get("ETag") or response.headers.get("Last-Modified")
                self.state["partial"][name] = tag
                try:
                    self._stream(response, part, resume, total, name)
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.Timeout) as e:
                    logger.info("connection lost while downloading %s (%s); resuming", url, e)
                    validator = tag
                    if stalled(e):
                        break
                    continue
                except OSError as e:
                    self._discard_partial(name, part)
                    if why := disk_full(e):
                        raise DiskFullError(
                            f"cannot write {dest} (downloading {url}): {why}; the partial file was "
                            f"removed. Free some space there, or set ZOOHUB_HOME to a disk with room, and load "
                            "again") from None
                    raise
            size = part.stat().st_size
            if total is not None and size != total:
                validator = tag
                last = f"the body ended after {size} of {total} bytes"
                continue
            if self.state.get("complete"):
                # The cached version is about to change file by file: until this fetch completes, it is
                # not a complete version, so a crash or a failure here can never leave a mix taken as one.
                self.state["complete"] = None
                self._write_state()
            os.replace(part, dest)
            integrity.forget(dest)
            self.state["partial"].pop(name, None)
            self.state["files"][name] = {"etag": response.headers.get("ETag"), "size": size}
            return dest
        raise HubError(f"gave up on {url} after {attempt + 1} attempts ({last}); try again later")

    def _discard_partial(self, name: str, part: Path) -> None:
        part.unlink(missing_ok=True)
        self.state.setdefault("partial", {}).pop(name, None)

    def head(self, name: str) -> bool:
        """Whether the host has the file, without downloading it (for files that are never fetched)."""
        try:
            response = self.session.head(self.base + quote(name),
                                         timeout=(env.connect_timeout(), env.read_timeout()))
        except requests.RequestException:
            return False
        return response.status_code == 200

    @staticmethod
    def _sleep(attempt: int) -> None:
        time.sleep(BACKOFF_S * 2 ** attempt)

    @staticmethod
    def _total(response: requests.Response, resume: int) -> int | None:
        if "Content-Range" in response.headers:
            return int(response.headers["Content-Range"].rsplit("/", 1)[-1])
        length = response.headers.get("Content-Length")
        return resume + int(length) if length is not None else None

    @staticmethod
    def _stream(response: requests.Response, part: Path, resume: int, total: int | None, name: str) -> None:
        from tqdm.auto import tqdm

        part.parent.mkdir(parents=True, exist_ok=True)  # created with the first byte: a failure before leaves nothing
        show = not env.quiet() and (total or 0) > 8 << 20
        with open(part, "ab" if resume else "wb") as f, tqdm(
                total=total, initial=resume, unit="B", unit_scale=True, desc=name, disable=not show) as bar:
            for chunk in response.iter_content(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))

    # -- the folder ----------------------------------------------------------------------------
    def fetch(self) -> Path:
        """The cache folder, complete and verified: downloaded or revalidated first when online."""
        started = time.time()
        with self._locked() as waited:
            self.state = self._read_state()  # as the previous holder of the lock left it
            if env.offline():
                return self.from_cache("offline mode is on (HF_HUB_OFFLINE=1 or ZOOHUB_OFFLINE=1)", OfflineError)
            if waited and self.state.get("complete") and self.state.get("fetched_at", 0) >= started:
                # Another process fetched it while this one waited: as fresh as fetching again.
                with contextlib.suppress(OfflineError, IntegrityError):
                    return self.from_cache("", OfflineError)
            return self._fetch_and_record()

    def _fetch_and_record(self) -> Path:
        try:
            names = self._fetch_online()
        except _Unreachable as e:
            self._write_state()
            self._drop_if_empty()
            folder = self.from_cache(str(e), HubUnreachableError)
            logger.warning("%s; using the cached copy of %s", e, self.base)
            return folder
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk may refuse this too; the error above says why
                self._write_state()
            self._drop_if_empty()
            raise
        self.state["fetched_at"] = time.time()
        self._prune(names)
        return self.folder

    def _drop_if_empty(self) -> None:
        """Remove a cache entry that holds no downloaded byte (a failed first fetch leaves nothing)."""
        if self.folder.is_dir() and all(p.name.startswith(STATE) for p in self.folder.rglob("*") if p.is_file()):
            shutil.rmtree(self.folder, ignore_errors=True)

    def _fetch_online(self) -> list[str]:
        where = self.base
        manifest_path = self.get("zoohub.json")
        manifest = None
        if manifest_path is not None:
            try:
                manifest = json.loads(manifest_path.read_text()).get("files") or {}
            except ValueError:
                raise IntegrityError(f"zoohub.json at {where} is not valid JSON; re-upload the preset") from None
        present: dict[str, bool] = {}

        def exists(name: str) -> bool:
            if name == "zoohub.json":
                return manifest_path is not None
            if manifest is not None:
                return name in manifest
            if name not in present:
                present[name] = self.get(name) is not None
            return present[name]

        def read_json(name: str) -> dict:
            path = self.folder / name if present.get(name) else self.get(name)
            return json.loads(path.read_text())

        names = select_files(exists, read_json, listing=list(manifest) if manifest is not None else None,
                             where=where, probe=self.head)
        for name in names:
            if manifest is not None and name != "zoohub.json" and self.get(name) is None:
                raise HubError(f"{where}zoohub.json lists {name} but the host answers 404; re-upload the preset")
        self._verify(names)
        self.state["complete"] = names
        return names

    def _verify(self, names: list[str]) -> None:
        try:
            integrity.check_manifest(self.folder, names, self.base)
        except IntegrityError as e:
            for name in names:
                if f"{name} from" in str(e):
                    (self.folder / name).unlink(missing_ok=True)
                    self.state["files"].pop(name, None)
            raise
        # Without a manifest there is nothing to hash against: sizes were checked while streaming.

    def _prune(self, names: list[str]) -> None:
        """Drop files the host no longer serves, so the folder holds exactly the preset."""
        keep = set(names)
        for name in list(self.state["files"]):
            if name not in keep:
                (self.folder / name).unlink(missing_ok=True)
                self.state["files"].pop(name)
        self._write_state()

    def from_cache(self, reason: str, error: type[Exception]) -> Path:
        names = self.state.get("complete")
        if not names:
            missing = ["config.json", "model.safetensors (or its shards)", "tokenizer files"]
        else:
            missing = [n for n in names if not (self.folder / n).is_file()]
        if missing:
            raise error(f"{reason}, and {self.base} is not fully cached in {self.folder}: missing "
                        f"{', '.join(missing)}. Fetch it while online with: {fetch_command(self.base)}")
        self._verify(names)
        return self.folder


def lock_path(folder: Path) -> Path:
    """The lock file of a cache entry: under static/.locks, so a failed first fetch leaves no entry."""
    return folder.parents[1] / ".locks" / folder.parent.name / f"{folder.name}.lock"


def does_not_resolve(error: BaseException) -> bool:
    """Whether a connection error (requests', httpx's) is a failed DNS lookup: a socket.gaierror or
    urllib3's NameResolutionError somewhere in its chain."""
    seen = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return True
        stack += [getattr(e, "reason", None), e.__cause__, e.__context__,
                  *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]
    return False


def _reason(error: Exception) -> str:
    """A short reason for a failed attempt: "the connection was reset", "no data for 60 s"..."""
    text = str(error)
    if "timed out" in text.lower():
        return f"no data within the {env.read_timeout():g} s read timeout"
    if "reset" in text.lower():
        return "the connection was reset"
    if "IncompleteRead" in text or "prematurely" in text or isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "the connection closed before the end of the body"
    return type(error).__name__


def fetch(base_url: str) -> Path:
    """The cached copy of the preset folder at `base_url`, downloaded or revalidated first when online."""
    return StaticFolder(base_url).fetch()
