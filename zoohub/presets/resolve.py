"""Turn any handle (registry name, hf://, https://, file://, local://, local path) into a local folder."""
from __future__ import annotations

import os
import re
from pathlib import Path

from zoohub.errors import HubError, PresetNotFoundError, not_found
from zoohub.hub import fetch, parse_handle, path_handle
from zoohub.hub.handles import REPO_ID


def resolve_preset(handle: str | os.PathLike, *, revision: str | None = None, gguf_file: str | None = None) -> Path:
    """A local folder holding the preset's files (downloaded, checked and cached if remote).

    Args:
        handle: a registry name ("bert_base_en_uncased"), "hf://owner/repo[@revision]",
            "https://host/folder/", "file:///path", "local://owner/name" or a local folder path.
        revision: a branch, tag, commit or refs/pr/N; overrides the registry's pinned revision
            and an "@revision" in the handle.
        gguf_file: for a hub repo of GGUF files, the one to fetch (instead of a transformers checkpoint).

    Example:
        >>> from zoohub.presets.resolve import resolve_preset
        >>> resolve_preset("starter_bert_tiny_en").name          # bundled: copied into the local hub, no network
        'starter-bert-tiny'
        >>> folder = resolve_preset("hf://google-bert/bert-base-uncased@main")   # downloads  # doctest: +SKIP
    """
    text = os.fspath(handle)
    parsed = parse_handle(text, revision=revision)
    if parsed is not None:
        return fetch(parsed, gguf_file=gguf_file)
    if Path(text).expanduser().is_dir():
        return fetch(path_handle(text))
    from zoohub.presets import registry

    names = registry.list_presets()
    if text in names:
        row = registry.get_preset(text)
        handle = parse_handle(row.handle, revision=revision or row.revision)
        if row.bundled:
            _seed_bundled(row.bundled, handle)
        try:
            return fetch(handle, gguf_file=gguf_file)
        except HubError as e:
            _name_the_download_command(e, text, revision)
            raise
    message = f"preset {text!r} is neither a registered name nor a local folder"
    if REPO_ID.match(text):
        message += f"; for the Hugging Face repo use 'hf://{text}'"
        raise PresetNotFoundError(not_found(message, text, names, "zoohub.list_presets() lists all"))
    raise PresetNotFoundError(not_found(
        message, text, names, "zoohub.list_presets() lists all; remote handles start with hf://, https:// or local://"))


# The hub's errors say to run `python -m zoohub.hub download HANDLE`, which takes handles only (the hub
# knows no registry). A user who gave a registry name is told the command that takes that name.
_HUB_DOWNLOAD = re.compile(r"python -m zoohub\.hub download '[^']*'")


def _name_the_download_command(error: HubError, name: str, revision: str | None) -> None:
    if error.args and isinstance(error.args[0], str):
        command = f"zoohub download {name}" + (f" --revision {revision}" if revision else "")
        error.args = (_HUB_DOWNLOAD.sub(command, error.args[0]),) + error.args[1:]


def _seed_bundled(name: str, handle) -> None:
    """Copy a preset shipped inside the package into the local hub when it is asked for and the hub's
    copy is missing or from another zoohub version (publish does nothing when the files are the same)."""
    if handle.scheme != "local":
        return
    from zoohub.hub import local

    source = Path(__file__).resolve().parents[1] / "data" / name
    if source.is_dir():
        local.publish(source, handle.path)
