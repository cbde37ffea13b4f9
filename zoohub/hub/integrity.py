"""Checksums of downloaded files, and a record of blobs already verified.

huggingface_hub checks sizes only; zoohub checks content. A verified blob is recorded (path, size,
mtime, digests) under $ZOOHUB_HOME/verified so later loads skip re-hashing multi-GB weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from zoohub.errors import CorruptFileError, IntegrityError, MissingFileError
from zoohub.hub import confine, env

_CHUNK = 1 << 22


@dataclass(frozen=True)
class Digests:
    sha256: str
    git_sha1: str  # git's blob id: sha1 of b"blob <size>\0" + content (the Hub's oid of regular files)


def compute(path: Path, *, git_sha1: bool = True) -> Digests:
    """sha256 and (unless told not to) git's blob id of a file, in one read."""
    size = path.stat().st_size
    hashes = [hashlib.sha256()] + ([hashlib.sha1(f"blob {size}\0".encode())] if git_sha1 else [])
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            for h in hashes:
                h.update(block)
    return Digests(hashes[0].hexdigest(), hashes[1].hexdigest() if git_sha1 else "")


def _record_path(real: Path) -> Path:
    key = hashlib.sha1(str(real).encode()).hexdigest()
    return env.zoohub_home() / "verified" / key[:2] / f"{key}.json"


def _recorded(real: Path, stat: os.stat_result, *, git_sha1: bool = True) -> Digests | None:
    """The recorded digests of `real` when it is unchanged (same size and mtime) since it was verified."""
    try:
        data = json.loads(_record_path(real).read_text())
        if (data["path"], data["size"], data["mtime_ns"]) == (str(real), stat.st_size, stat.st_mtime_ns) \
                and data["sha256"] and (data["git_sha1"] or not git_sha1):
            return Digests(data["sha256"], data["git_sha1"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def digests(path: Path, *, git_sha1: bool = True) -> Digests:
    """The file's digests, from the record when the file is unchanged since it was verified.

    git_sha1: whether git's blob id is needed (a record made without one is then not enough)."""
    real = Path(os.path.realpath(path))
    return _recorded(real, real.stat(), git_sha1=git_sha1) or compute(real, git_sha1=git_sha1)


def remember(path: Path, found: Digests) -> None:
    """Record a verified file (best effort: a read-only home only costs re-hashing)."""
    real = Path(os.path.realpath(path))
    stat = real.stat()
    record = _record_path(real)
    data = {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": found.sha256, "git_sha1": found.git_sha1}
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, record)
    except OSError:
        pass


def forget(path: Path) -> None:
    try:
        _record_path(Path(os.path.realpath(path))).unlink()
    except OSError:
        pass


def is_recorded(path: Path) -> bool:
    """Whether the file was verified and has not changed since (for tests and diagnostics)."""
    real = Path(os.path.realpath(path))
    try:
        data = json.loads(_record_path(real).read_text())
        stat = real.stat()
        return (data["size"], data["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError, KeyError):
        return False


def check(path: Path, name: str, where: str, *, sha256: str | None = None, git_sha1: str | None = None,
          size: int | None = None, source: str = "the hub") -> Digests:
    """Check a file against the expected digests; raise IntegrityError naming it on a mismatch.

    The caller deletes the bad cache entry; nothing corrupt is returned.
    """
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(
            f"{name} from {where} has {actual_size} bytes, {source} says {size}; the download was "
            "truncated or the file changed. The bad cache entry was deleted; load again to re-download")
    real = Path(os.path.realpath(path))
    recorded = _recorded(real, real.stat(), git_sha1=git_sha1 is not None)
    found = recorded or compute(real, git_sha1=git_sha1 is not None)
    for label, want, got in (("sha256", sha256, found.sha256), ("git sha1", git_sha1, found.git_sha1)):
        if want is not None and str(want).lower() != got:
            forget(path)
            raise IntegrityError(
                f"{name} from {where} is corrupt: its {label} is {got}, {source} says {want}. The bad cache "
                "entry was deleted; load again to re-download. If it happens again, the server or a proxy "
                "between you is serving wrong bytes")
    if recorded is None:
        remember(path, found)
    return found


def check_manifest(folder: Path, names: Collection[str] | None = None, where: str | None = None) -> None:
    """Check files against zoohub.json's {"files": {path: {"size", "sha256"}}}, when the folder has one.

    Sizes are always compared; a file's sha256 is computed only when it is not recorded as verified
    since its last change (see `digests`), so loading an unchanged folder again hashes nothing. Every
    path the manifest names must stay inside the folder (`confine`).

    Args:
        folder: the preset folder holding zoohub.json.
        names: the files to check (those just fetched; files the manifest does not list pass). None
            checks every listed file, which must then exist.
        where: the hub the files came from. A mismatch is then an IntegrityError and the caller deletes
            the bad cache entry; without `where` the folder is local and a mismatch means a file was
            edited after saving (CorruptFileError).
    """
    real = confine.resolve(folder, "zoohub.json")
    if real is None:
        return
    path = folder / "zoohub.json"
    try:
        files = json.loads(confine.read_bytes(folder, "zoohub.json")).get("files") or {}
        if not isinstance(files, dict):
            raise ValueError("'files' is not a mapping")
    except (ValueError, AttributeError, RecursionError) as e:
        if where is None:
            raise CorruptFileError(f"{path} is not valid JSON or its 'files' is not a mapping ({e}); "
                                   "re-save the preset") from None
        raise IntegrityError(f"zoohub.json from {where} is not valid JSON; re-upload the preset") from None
    for name in files:
        if confine.check_name(name, path).split("/")[-1] in ("", "."):
            raise CorruptFileError(f"{path} lists {name!r}, a folder, as a file; re-save the preset")
    for name in files if names is None else names:
        info, target = files.get(name), folder / name
        found = confine.resolve(folder, name) if name in files else None
        if found is None:
            if names is None:
                raise MissingFileError(f"{target} is listed in zoohub.json but missing; re-save the preset")
            continue
        if not isinstance(info, dict):
            continue
        if where is not None:
            check(target, name, where, sha256=info.get("sha256"), size=info.get("size"),
                  source="its zoohub.json manifest")
            continue
        stat = found.stat()
        if info.get("size") is not None and stat.st_size != info["size"]:
            raise CorruptFileError(f"{target} does not match zoohub.json: it has {stat.st_size} bytes, the manifest "
                                   f"says {info['size']}, so it changed after saving. {_RESAVE}")
        want = info.get("sha256")
        if want is None:
            continue
        recorded = _recorded(found, stat, git_sha1=False)
        got = recorded or compute(found, git_sha1=False)
        if got.sha256 != str(want).lower():
            forget(found)
            raise CorruptFileError(f"{target} does not match zoohub.json: its sha256 is {got.sha256}, the manifest "
                                   f"says {want}, so it changed after saving. {_RESAVE}")
        if recorded is None:
            remember(found, got)


_RESAVE = ("Restore it from where the preset came from (or re-save the preset with save_to_preset); "
           "if you edited it on purpose, re-save so that zoohub.json records the new content")
