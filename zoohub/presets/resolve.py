"""Turn any handle (registry name, hf://, https://, file://, local://, local path) into a local folder."""
from __future__ import annotations

import os
from pathlib import Path

from zoohub.errors import PresetNotFoundError, close_matches
from zoohub.hub import fetch, parse_handle, path_handle
from zoohub.hub.handles import REPO_ID


def resolve_preset(handle: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local folder holding the preset's files (downloaded, checked and cached if remote).

    Args:
        handle: a registry name ("bert_base_en_uncased"), "hf://owner/repo[@revision]",
            "https://host/folder/", "file:///path", "local://owner/name" or a local folder path.
        revision: a branch, tag, commit or refs/pr/N; overrides the registry's pinned revision
            and an "@revision" in the handle.

    Example:
        >>> from zoohub.presets.resolve import resolve_preset
        >>> folder = resolve_preset("hf://google-bert/bert-base-uncased@main")  # doctest: +SKIP
    """
    text = os.fspath(handle)
    parsed = parse_handle(text, revision=revision)
    if parsed is not None:
        return fetch(parsed)
    if Path(text).expanduser().is_dir():
        return fetch(path_handle(text))
    from zoohub.presets import registry

    names = registry.list_presets()
    if text in names:
        row = registry.get_preset(text)
        handle = parse_handle(row.handle, revision=revision or row.revision)
        if row.bundled:
            _seed_bundled(row.bundled, handle)
        return fetch(handle)
    hint = close_matches(text, names)
    if REPO_ID.match(text):
        raise PresetNotFoundError(
            f"preset {text!r} is neither a registered name nor a local folder; for the Hugging Face repo "
            f"use 'hf://{text}'.{hint or ''} (zoohub.list_presets() lists all)")
    raise PresetNotFoundError(
        f"preset {text!r} is neither a registered name nor a local folder;{hint or ''} "
        "(zoohub.list_presets() lists all; remote handles start with hf://, https:// or local://)")


def _seed_bundled(name: str, handle) -> None:
    """Copy a preset shipped inside the package into the local hub the first time it is asked for."""
    if handle.scheme != "local" or handle.path.is_dir():
        return
    from zoohub.hub import local

    source = Path(__file__).resolve().parents[1] / "data" / name
    if source.is_dir():
        local.publish(source, handle.path)
