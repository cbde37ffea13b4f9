"""Local folders: file:// and plain paths, and the embedded hub of local:// handles.

Writes are atomic (`write_folder`): a new version is assembled in a temp folder beside the target and
renamed into place, so a reader sees the old version or the new one, never a mix.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from zoohub.errors import PresetNotFoundError, close_matches
from zoohub.hub.files import WEIGHTS, INDEX, ADAPTER_WEIGHTS, is_pickle, refuse_pickles, set_default_modes
from zoohub.hub.handles import Handle, local_hub_root


def resolve(handle: Handle) -> Path:
    """The folder of a file:// or local:// handle, which must exist."""
    path = handle.path
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
    atomic); they are synced to disk, then renamed into place. A reader, or a crash, sees the old
    folder or the new one, never a mix; the old one is deleted only once the new one is in place.
    On any exception (KeyboardInterrupt too) the temp folder is removed and `target` is left as it was.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> _ = write_folder(target, lambda tmp: (tmp / "a.txt").write_text("new"))
        >>> (target / "a.txt").read_text()
        'new'
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(target, "tmp")
    tmp.mkdir()
    try:
        fill(tmp)
        set_default_modes(tmp)  # 0o644 under umask 022, whatever temp files the writers went through
        _sync_files(tmp)
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    """Rename `tmp` to `target`; an existing `target` is first renamed aside, and put back if that fails."""
    if not target.exists():
        os.rename(tmp, target)
        return
    old = _beside(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
