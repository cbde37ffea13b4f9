"""Every file a preset names stays inside the preset folder, and is a regular file.

A preset names files in its data: shard-index entries, sentence-transformers module paths,
zoohub.json's manifest keys, besides the fixed names (config.json, tokenizer.json, ...). Each is
checked here before anything is opened: absolute paths and `..` segments are refused, symlinks must
lead to a place inside the folder, and the file must be a regular file (never a device, FIFO or
socket, whose mere opening can block or have side effects).

The one exception is the huggingface_hub cache, where `models--owner--name/snapshots/<commit>/file`
is a symlink into the same repo's `blobs/` folder.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text("{}")
    >>> read_bytes(folder, "config.json")
    b'{}'
    >>> read_bytes(folder, "../config.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    zoohub.errors.UnsafePathError: ...'../config.json', which has a '..' segment; ...
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from zoohub.errors import MissingFileError, UnsafePathError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
_FIX = "a preset's files must be regular files inside its folder; fix or re-save the preset"


def check_name(name: object, where: str | os.PathLike) -> str:
    """`name` as a relative path that cannot leave a folder, before any file system access.

    Args:
        name: a file name from a preset's data (e.g. a weight_map value).
        where: the folder, or the file that names it, for the message.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{where} names the file {name!r}; expected a relative path such as "
                              f"'model-00001-of-00002.safetensors'. {_FIX}")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise UnsafePathError(f"{where} names the file {name!r}, an absolute path; {_FIX}")
    if "\\" in name or "\0" in name:
        raise UnsafePathError(f"{where} names the file {name!r}, with a backslash or NUL character; {_FIX}")
    if ".." in name.split("/"):
        raise UnsafePathError(f"{where} names the file {name!r}, which has a '..' segment; {_FIX}")
    return name


def _kind(mode: int) -> str | None:
    return next((kind for test, kind in _KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a regular file")


def _hf_blobs(root: Path) -> Path | None:
    """The repo's blobs/ folder when `root` is a huggingface_hub snapshot (.../models--o--n/snapshots/<commit>)."""
    repo = root.parent.parent
    if root.parent.name == "snapshots" and repo.name.startswith("models--"):
        return Path(os.path.realpath(repo / "blobs"))
    return None


def _checked(folder: Path, name: str) -> tuple[Path, os.stat_result] | None:
    """(real path, stat) of `name` in `folder` after the checks; None when there is no such file."""
    check_name(name, folder)
    path = Path(folder) / name
    try:
        os.lstat(path)
    except OSError as e:  # a name too long for the file system names no file either
        if isinstance(e, (FileNotFoundError, NotADirectoryError)) or e.errno == errno.ENAMETOOLONG:
            return None
        raise
    root = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        blobs = _hf_blobs(root)
        if blobs is None or real.parent != blobs:
            raise UnsafePathError(f"{path} is a symlink to {real}, outside the preset folder {root}; {_FIX}")
    try:
        info = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return None  # a dangling link, e.g. an incomplete download
    kind = _kind(info.st_mode)
    if kind is not None:
        raise UnsafePathError(f"{path} is {kind}, not a regular file; zoohub never opens it. {_FIX}")
    return real, info


def resolve(folder: str | os.PathLike, name: str) -> Path | None:
    """The real path of the preset file `name` in `folder` after checking it (see the module doc);
    None when it does not exist.

    Raises:
        UnsafePathError: absolute path, `..`, a symlink leading outside, or not a regular file.

    Example:
        >>> resolve("/no/such/folder", "config.json") is None
        True
    """
    found = _checked(Path(folder), name)
    return None if found is None else found[0]


def is_file(folder: str | os.PathLike, name: str) -> bool:
    """Whether `folder` holds the preset file `name` (checked as `resolve` does)."""
    return _checked(Path(folder), name) is not None


def open_file(folder: str | os.PathLike, name: str) -> BinaryIO:
    """The preset file `name`, open for reading in binary; MissingFileError when absent.

    The file opened is the one checked: its type is checked again on the open descriptor, and a file
    swapped in between the check and the open is refused."""
    found = _checked(Path(folder), name)
    if found is None:
        raise MissingFileError(f"{Path(folder) / name} is missing")
    real, before = found
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)
    except OSError as e:
        raise UnsafePathError(f"{Path(folder) / name} changed while being opened ({e}); {_FIX}") from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or _kind(after.st_mode) is not None:
        os.close(fd)
        raise UnsafePathError(f"{Path(folder) / name} was replaced while being opened; {_FIX}")
    return os.fdopen(fd, "rb")


def read_bytes(folder: str | os.PathLike, name: str) -> bytes:
    """The content of the preset file `name` (checked; MissingFileError when absent)."""
    with open_file(folder, name) as f:
        return f.read()


def check_folder(folder: str | os.PathLike) -> list[str]:
    """Every visible entry under `folder` (hidden names such as .git skipped) checked as `resolve`
    does; the relative paths of its regular files. Symlinked folders are checked, not entered.

    Used before publishing a folder, so nothing outside it (or a FIFO's endless stream) is uploaded."""
    folder = Path(folder)
    out = []
    for top, dirs, files in os.walk(folder):
        base = Path(top).relative_to(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for entry in [*dirs, *sorted(f for f in files if not f.startswith("."))]:
            rel = (base / entry).as_posix()
            path = folder / rel
            if entry in dirs:
                if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder)):
                    raise UnsafePathError(f"{path} is a symlink to {os.path.realpath(path)}, outside the "
                                          f"preset folder; {_FIX}")
                continue
            if resolve(folder, rel) is not None:
                out.append(rel)
    return out
