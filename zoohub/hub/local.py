"""Local folders: file:// and plain paths, and the embedded hub of local:// handles.

Writes are atomic (`write_folder`): a new version is assembled in a temp folder beside the target and
renamed into place, so a reader sees the old version or the new one, never a mix.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import filecmp
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; temp folders of killed writers are then left for the user
    fcntl = None

from zoohub.errors import DiskFullError, PresetNotFoundError, close_matches
from zoohub.hub.files import WEIGHTS, INDEX, ADAPTER_WEIGHTS, is_pickle, refuse_pickles, set_default_modes
from zoohub.hub.handles import Handle, local_hub_root


def resolve(handle: Handle) -> Path:
    """The folder of a file:// or local:// handle, which must exist."""
    path = handle.path
    if not path.is_dir():
        _tidy(path.absolute())  # a version left aside by a writer killed mid-swap is put back
    if not path.is_dir():
        if handle.scheme == "local":
            root = local_hub_root()
            names = [f"{p.parent.name}/{p.name}" for p in root.glob("*/*") if p.is_dir()] if root.is_dir() else []
            hint = close_matches(handle.location, names)
            raise PresetNotFoundError(
                f"{handle} is not in the local hub ({path} does not exist);{hint or ''} upload to it with "
                f"zoohub.upload_preset({str(handle)!r}, folder)")
        raise PresetNotFoundError(f"{path} is not a folder; expected a preset folder with config.json")
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    if not names & {WEIGHTS, INDEX, ADAPTER_WEIGHTS} and not any(n.endswith(".safetensors") for n in names):
        pickles = [n for n in names if is_pickle(n)]
        if pickles:
            refuse_pickles(pickles, str(path))
    return path


def visible_files(folder: Path) -> list[str]:
    """Relative paths of the files to publish: hidden files and folders (.git, .cache) stay out."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(rel.as_posix())
    return out


def _same(target: Path, source: Path, extra: Mapping[str, bytes]) -> bool:
    if not target.is_dir():
        return False
    wanted = set(visible_files(source)) | set(extra)
    if set(visible_files(target)) != wanted:
        return False
    for name in wanted:
        if name in extra:
            if (target / name).read_bytes() != extra[name]:
                return False
        elif not filecmp.cmp(source / name, target / name, shallow=False):
            return False
    return True


def publish(source: Path, target: Path, extra: Mapping[str, bytes] | None = None) -> bool:
    """Make `target` a copy of `source`'s visible files plus `extra` {name: bytes}; False when it already was."""
    extra = dict(extra or {})
    target = target.absolute()
    if _same(target, source, extra):
        return False

    def fill(tmp: Path) -> None:
        for name in visible_files(source):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, tmp / name)
        for name, data in extra.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)

    write_folder(target, fill)
    return True


def write_folder(target: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Write the folder `target` atomically; the one writer of preset, checkpoint and hub folders.

    `fill(tmp)` writes the files into a temp folder beside `target` (same filesystem, so renames are
    atomic); they are synced to disk, then swapped into place (`_swap`). A reader, or a crash (kill -9
    included), sees the old folder or the new one, never a mix; the old one is deleted only once the
    new one is in place. On any exception (KeyboardInterrupt too) the temp folder is removed and
    `target` is left as it was; a full disk or file size limit raises DiskFullError. What a killed
    writer left beside `target` is removed by the next write.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> _ = write_folder(target, lambda tmp: (tmp / "a.txt").write_text("new"))
        >>> (target / "a.txt").read_text()
        'new'
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    _tidy(target)
    tmp, claim = _claimed_tmp(target)
    try:
        fill(tmp)
        set_default_modes(tmp)  # 0o644 under umask 022, whatever temp files the writers went through
        _sync_files(tmp)
        _swap(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if why := disk_full(e):
            raise DiskFullError(f"cannot write {target}: {why}; the previous version (if any) is "
                                "untouched and the partial copy was removed. Free some space (or raise "
                                "the limit) and write again") from None
        raise
    finally:
        if claim is not None:
            os.close(claim)
    return target


def _beside(target: Path, kind: str) -> Path:
    # Hidden, so visible_files and listings skip it; unique, so concurrent writers never collide.
    return target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}"


def _sync_files(folder: Path) -> None:
    """Data on disk before a rename makes it visible."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _swap(tmp: Path, target: Path) -> None:
    """Put `tmp` at `target`. An existing `target` is exchanged with `tmp` in one step where the system
    can (Linux renameat2), so a crash at any moment leaves one complete version there. Elsewhere it is
    renamed aside first (put back if the second rename fails); a crash between the two renames leaves
    it aside, and the next write or read of `target` puts it back (`_tidy`)."""
    if not target.exists():
        os.rename(tmp, target)
        _sync_dir(target.parent)
        return
    if _exchange(tmp, target):
        _sync_dir(target.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # now the old version
        return
    old = _beside(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _sync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _sync_dir(folder: Path) -> None:
    """The rename itself on disk (for a power cut; a killed process needs no sync)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- crash safety: exchange, claims on temp folders, tidying after a killed writer --------------

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the kernel or filesystem cannot (then nothing moved)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


# A temp folder is locked right after mkdir: one younger than this may be a live writer's that is
# not locked yet, and is left alone.
_FRESH_S = 10.0


def _claimed_tmp(target: Path) -> tuple[Path, int | None]:
    """A new temp folder beside `target`, held by a lock (flock) for as long as this writer lives, so
    that a temp folder nobody holds belongs to a writer that died: `_tidy` removes those."""
    tmp = _beside(target, "tmp")
    tmp.mkdir()
    if fcntl is None:
        return tmp, None
    claim = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a filesystem without locks: `_abandoned` cannot lock either, so nothing is removed
        os.close(claim)
        return tmp, None
    return tmp, claim


def _tidy(target: Path) -> None:
    """Undo what a killed writer left beside `target`: a version stranded aside mid-swap is put back
    (only where `_exchange` is unavailable), temp folders of dead writers are removed."""
    prefix = f".{target.name}."
    try:
        entries = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        kind = re.fullmatch(r"(tmp|old)-[0-9a-f]{8}", entry.name[len(prefix):])
        if kind is None or not entry.is_dir() or entry.is_symlink():
            continue
        if kind.group(1) == "old" and not target.exists():
            with contextlib.suppress(OSError):  # a writer that just put a new version there wins
                os.rename(entry, target)
        elif kind.group(1) == "old" or _abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _abandoned(folder: Path) -> bool:
    """Whether no live writer holds this temp folder's lock (unknown without flock: kept)."""
    if fcntl is None:
        return False
    try:
        if time.time() - folder.stat().st_ctime < _FRESH_S:
            return False
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's own lock


_DISK_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
              errno.EFBIG: "the file is larger than the file size limit (ulimit -f) or the filesystem allows"}


def disk_full(error: BaseException) -> str | None:
    """Why writing failed when `error` is a full disk, quota or file size limit, else None. Reads an
    OSError, or a library's wrapped io error such as safetensors' "... (os error 28)"."""
    code = error.errno if isinstance(error, OSError) else None
    if code not in _DISK_FULL:
        found = re.search(r"\(os error (\d+)\)", str(error))
        code = int(found.group(1)) if found else None
    return _DISK_FULL.get(code)
