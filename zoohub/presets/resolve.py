"""Turn any handle (registry name, hf://, https://, file://, local path) into a local folder.

Until the hub client lands only local folders resolve.
"""
from __future__ import annotations

import os
from pathlib import Path

from zoohub.errors import PresetNotFoundError


def resolve_preset(handle: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local folder holding the preset's files (downloaded and cached if remote)."""
    text = os.fspath(handle)
    if text.startswith("file://"):
        text = text[len("file://"):]
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    raise PresetNotFoundError(f"preset {text!r} is not a local folder; remote handles need the hub client")
